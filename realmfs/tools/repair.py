"""``realmfs verify --repair``: fix what verify found, after a backup that can be restored.

* torn pages (slot 2 verifies) are rewritten through EncryptedFile: the read serves
  the old slot and notes the lost counter, the write continues above it, so no IV
  is used twice;
* a header with one bad slot is rewritten from the good one (sequence + 1);
* with ``zero_damaged`` only: pages that authenticate nowhere, and pages cut off
  (the file is first grown back to a whole-page shape), are replaced by zeros.

Invariants: nothing is written before the backup of every byte range that may change
(the metadata page and data page of each page changed; for header-layout files also
the header page and the last page, which opening may tidy) and the original size are
on disk, fsynced, in a directory beside the target -- never inside a backing directory,
where a mount would show it. ``restore_backup`` puts all of it back. A backing
directory is locked (as a mount would) for the whole repair, so it never runs mounted.
"""

from __future__ import annotations

import json
import os
import struct
import time

from ..format import fileheader
from ..storage.backinglock import BackingLock, refuse_if_overlapping
from ..durable import write_atomically
from ..errors import AlreadyExists, BadPath, Damaged
from ..keys.key import Key
from ..format.layout import (
    HEADER_SIZE,
    PAGE_SIZE,
    ZERO_PAGE,
    block_of,
    data_to_body_size,
    layout_base,
    meta_offset,
    page_offset,
)
from ..format.pagecipher import PageCipher
from ..storage.pagefile import open_backing
from .verify import FileReport, Kind, VerifyReport

_RANGE = struct.Struct("<QI")


class Backup:
    """Byte ranges of one file saved before they are changed, and the original size."""

    def __init__(self, directory: str, name: str, path: str):
        self.directory, self.name, self.path = directory, name, path
        self.ranges: dict[int, int] = {}

    def want(self, offset: int, length: int) -> None:
        self.ranges[offset] = max(length, self.ranges.get(offset, 0))

    def save(self) -> None:
        manifest = os.path.join(self.directory, "manifest.json")
        entries = _read_json(manifest) if os.path.exists(manifest) else {}
        blob = os.path.join(self.directory, f"{len(entries)}.ranges")
        with open(self.path, "rb") as src, open(blob, "wb") as out:
            size = os.fstat(src.fileno()).st_size
            for offset, length in sorted(self.ranges.items()):
                data = os.pread(src.fileno(), length, offset)
                out.write(_RANGE.pack(offset, len(data)) + data)
            out.flush()
            os.fsync(out.fileno())
        entries[self.name] = {"path": os.path.abspath(self.path), "size": size, "ranges": os.path.basename(blob)}
        write_atomically(manifest, json.dumps(entries, indent=2).encode())


def _read_json(path: str):
    with open(path, "rb") as f:
        return json.loads(f.read())


def restore_backup(directory: str, target: str) -> list[str]:
    """Put back every range a repair of ``target`` saved in ``directory``; returns the files
    restored. Like the repair, it refuses a mounted backing directory: a daemon's cached IV
    tables would write the repaired state back over the restored one."""
    manifest = os.path.join(directory, "manifest.json")
    if not os.path.exists(manifest):
        raise BadPath(f"{directory} is not a realmfs repair backup (no manifest.json)")
    if not os.path.isdir(target):
        return _restore(directory, manifest)
    with BackingLock(target, "(realmfs verify --restore running)"):
        return _restore(directory, manifest)


def _restore(directory: str, manifest: str) -> list[str]:
    try:
        return _restore_ranges(directory, _read_json(manifest))
    except (ValueError, KeyError, TypeError, AttributeError, struct.error) as error:
        raise Damaged(f"{directory}: the repair backup is unreadable ({error!r}); "
                      "nothing after the damaged entry was restored") from None


def _restore_ranges(directory: str, entries: dict) -> list[str]:
    restored = []
    for name, entry in entries.items():
        with open(os.path.join(directory, entry["ranges"]), "rb") as blob:
            data = blob.read()
        fd = os.open(entry["path"], os.O_WRONLY)
        try:
            os.ftruncate(fd, entry["size"])
            pos = 0
            while pos < len(data):
                offset, length = _RANGE.unpack_from(data, pos)
                pos += _RANGE.size
                os.pwrite(fd, data[pos:pos + length], offset)
                pos += length
            os.fsync(fd)
        finally:
            os.close(fd)
        restored.append(name)
    return restored


def default_backup_dir(target: str) -> str:
    """Beside the target, never inside a backing directory (a mount would show it)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{os.path.abspath(target).rstrip(os.sep)}.realmfs-repair-{stamp}"


_ZEROABLE = {Kind.AUTH_FAILED, Kind.INTERRUPTED, Kind.TRUNCATED, Kind.ERASED_COUNTER}


def _repair_plan(f: FileReport, zero_damaged: bool) -> tuple[list, list, bool]:
    torn = [p.page for p in f.problems if p.kind is Kind.TORN]
    zero = [p.page for p in f.problems if zero_damaged and p.kind in _ZEROABLE and p.page is not None]
    header = any(p.kind is Kind.HEADER_SLOT for p in f.problems)
    return torn, zero, header


def repairable(f: FileReport, zero_damaged: bool) -> bool:
    if any(p.kind in (Kind.HEADER, Kind.NOT_ENCRYPTED, Kind.NOT_RECOGNIZED) for p in f.problems):
        return False
    torn, zero, header = _repair_plan(f, zero_damaged)
    return bool(torn or zero or header)


def repair(report: VerifyReport, key: Key, *, zero_damaged: bool = False,
           backup_dir: str | None = None) -> tuple[str | None, list]:
    """Fix what the report found (see the module docstring); returns (backup dir, changes).

    Every page changed is first saved to the backup directory. Pages are rewritten
    through EncryptedFile, so torn pages get a fresh counter above the lost one.
    """
    todo = [f for f in report.files if repairable(f, zero_damaged)]
    if not todo:
        return None, []
    if not os.path.isdir(report.target):    # a lone file: not inside a mounted directory either
        refuse_if_overlapping(os.path.dirname(os.path.abspath(report.target)), below=False)
        return _repair_files(report, todo, key, zero_damaged, backup_dir)
    with BackingLock(report.target, "(realmfs verify --repair running)"):   # refuses while mounted
        return _repair_files(report, todo, key, zero_damaged, backup_dir)


def _repair_files(report: VerifyReport, todo: list, key: Key, zero_damaged: bool,
                  backup_dir: str | None) -> tuple[str, list]:
    cipher = PageCipher(key.raw)
    directory = backup_dir or default_backup_dir(report.target)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.exists(os.path.join(directory, "manifest.json")):
        # a second repair would overwrite the first one's saved bytes: keep every backup whole
        raise AlreadyExists(f"{directory} already holds a repair backup; choose another --backup-dir")
    changes = []
    for f in todo:
        torn, zero, header = _repair_plan(f, zero_damaged)
        base = layout_base(f.realm_layout)
        backup = Backup(directory, f.name, f.path)
        if not f.realm_layout:
            backup.want(0, HEADER_SIZE)
            last = max(f.pages - 1, 0)     # opening tidies the last page: keep it too
            backup.want(meta_offset(block_of(last), base), PAGE_SIZE)
            backup.want(page_offset(last, base), PAGE_SIZE)
        for page in torn + zero:
            backup.want(meta_offset(block_of(page), base), PAGE_SIZE)
            backup.want(page_offset(page, base), PAGE_SIZE)
        backup.save()
        _repair_file(f, cipher, torn, zero, header)
        changes += [f"{f.name}: header restored from its good slot"] if header else []
        changes += [f"{f.name}: page {p}: torn write rolled back to the old slot" for p in torn]
        changes += [f"{f.name}: page {p}: replaced by zeros" for p in zero]
    return directory, changes


def _repair_file(f: FileReport, cipher: PageCipher, torn: list, zero: list, header: bool) -> None:
    if header:
        page = fileheader.pack_page(f.header._replace(sequence=f.header.sequence + 1), cipher.mac_message)
        fd = os.open(f.path, os.O_WRONLY)
        try:
            os.pwrite(fd, page, 0)
        finally:
            os.close(fd)
    if zero:
        # a cut file is first grown back to a whole-page shape, so that the missing
        # pages exist and can be overwritten
        if f.realm_layout:
            wanted = data_to_body_size(f.pages * PAGE_SIZE)
        else:
            wanted = HEADER_SIZE + data_to_body_size(f.size)
        if os.path.getsize(f.path) < wanted or os.path.getsize(f.path) % PAGE_SIZE:
            os.truncate(f.path, max(wanted, -(-os.path.getsize(f.path) // PAGE_SIZE) * PAGE_SIZE))
    ef = open_backing(f.path, cipher, realm_layout=f.realm_layout, key_checked=True)
    try:
        for page in torn:
            # reading serves slot 2 and notes slot 1's counter; the write continues above it
            ef.write(page * PAGE_SIZE, ef.read(page * PAGE_SIZE, PAGE_SIZE))
        for page in zero:
            ef.write(page * PAGE_SIZE, ZERO_PAGE)
        if ef.size != f.size and not f.realm_layout:
            ef.truncate(f.size)        # a whole zero page written over a partial last page
        ef.fsync()
    finally:
        ef.close()
