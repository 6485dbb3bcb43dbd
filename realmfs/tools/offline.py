"""Encrypt and decrypt without FUSE, file by file through EncryptedFile; key slot edits.

* ``encrypt(src, dst, key)``: a plain file becomes one encrypted file, a plain tree
  becomes a new backing directory with a config. ``.realm`` files (the config's
  pattern) get Realm Core's layout, byte-compatible; plain-pattern files (Realm Core's
  auxiliary files, which Realm Core never encrypts) are copied as they are; others get
  the realmfs header layout.
* ``decrypt(src, dst, key)``: one encrypted file (either layout, Realm Core's own
  files included) or a whole backing directory back to plain files (its plain-pattern
  files copied as they are). A damaged page
  stops the run naming file and page, unless ``skip_damaged`` (zeros, listed).
* ``set_passphrase`` / ``add_recovery_key``: edit the key slots (``realmfs passwd``);
  the master key and the data stay as they are. Rekeying is in rekey.py.

Invariants
* Nothing is ever overwritten: output goes to ``DST + TOOL_TEMP_SUFFIX`` and is
  renamed to DST only after it was fsynced and read back (decrypted again, or read
  again, and compared by SHA-256 with what was written).
* Every file and directory written keeps its source's permission bits, times and (as
  root) owner, stat'ed before anything reads it: the mount shows the backing file's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field

from ..keys import config as configmod
from ..storage import backingscan
from ..keys import keyslots
from . import verify
from ..storage.backinglock import is_locked
from ..keys.config import TOOL_TEMP_SUFFIX
from ..format.detect import first_page, has_realm_iv_table, has_realmfs_header, looks_like_plain_realm, \
    looks_like_realm_ciphertext
from ..durable import fsync_dir, keep_metadata
from ..errors import (
    AlreadyEncrypted,
    AlreadyExists,
    BadPath,
    Damaged,
    IntegrityError,
    NotEncrypted,
    NotRecognized,
    RealmfsError,
    RekeyInProgress,
    WrongKey,
)
from ..keys.key import Key, write_key_file
from ..format.layout import HEADER_SIZE, PAGE_SIZE
from ..format.pagecipher import PageCipher
from ..storage.pagefile import open_backing
from .progress import disabled
from ..storage.transcode import CHUNK, check_read_back, write_copy

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- small helpers
def _require_new(dst: str) -> None:
    if os.path.lexists(dst):
        raise AlreadyExists(f"{dst} already exists; refusing to overwrite it, choose a new name")
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise BadPath(f"cannot create {dst}: directory {parent} does not exist")


def _require_source(src: str, dst: str) -> None:
    if not os.path.lexists(src):
        raise BadPath(f"{src} does not exist")
    if not (os.path.isfile(src) or os.path.isdir(src)):
        raise BadPath(f"{src} is not a regular file or directory")
    inside = os.path.abspath(dst).startswith(os.path.abspath(src).rstrip(os.sep) + os.sep)
    if os.path.isdir(src) and inside:
        raise BadPath(f"{dst} is inside {src}; choose a destination outside the source")


def temp_for(dst: str) -> str:
    """The temporary name of ``dst``; a leftover of an interrupted run is ours to remove."""
    temp = dst.rstrip(os.sep) + TOOL_TEMP_SUFFIX
    if os.path.isdir(temp) and not os.path.islink(temp):
        shutil.rmtree(temp)
    elif os.path.lexists(temp):
        os.unlink(temp)
    return temp


def _publish(temp: str, dst: str) -> None:
    """Rename a finished temporary into place without ever replacing an existing DST."""
    if os.path.lexists(dst):
        # the caller removes the temporary (_publishing): say so, not where it was
        raise AlreadyExists(f"{dst} appeared while writing it; nothing was published, "
                            "run again with a new name")
    os.rename(temp, dst)
    fsync_dir(os.path.dirname(os.path.abspath(dst)))


def directory_stats(root: str) -> dict:
    """{relative path: stat} of every directory under ``root`` (not ``root`` itself), each
    taken before the directory is listed: listing a directory moves its atime."""
    stats = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(os.path.join(root, rel)) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    child = os.path.join(rel, entry.name)
                    stats[child] = entry.stat(follow_symlinks=False)
                    pending.append(child)
    return stats


@contextlib.contextmanager
def _publishing(dst: str, tree: dict | None = None):
    """Build DST under its temporary name (yielded); when the block ends, fsync and rename
    it to DST; on any error remove it, so a failed run leaves nothing behind.

    With ``tree`` (``directory_stats`` of the source) the temporary is a directory (0700)
    that already holds every directory of the source, empty ones too; at the end each gets
    the owner, mode and times of its source (the top one stays 0700) and is fsynced.
    """
    temp = temp_for(dst)
    try:
        if tree is not None:
            os.mkdir(temp, 0o700)
            for rel in sorted(tree):        # parents sort before their children
                os.mkdir(os.path.join(temp, rel), 0o700)
        yield temp
        if tree is not None:
            # deepest first: filling a directory moved its mtime, setting a child's does not
            for rel in sorted(tree, reverse=True):
                keep_metadata(os.path.join(temp, rel), tree[rel])
            for rel in [""] + sorted(tree):     # by name: listing them would move atimes again
                fsync_dir(os.path.join(temp, rel))
        _publish(temp, dst)
    except BaseException:
        _remove(temp)
        raise


def _count(progress, paths: list, name: str | None = None) -> None:
    """Tell ``progress`` how many files and bytes are ahead (and the one file's name)."""
    progress.files, progress.total = len(paths), sum(os.path.getsize(p) for p in paths)
    if name is not None:
        progress.file(name)


def _source_files(src: str):
    """(path, relative path) of the files of a plain tree; symlinks and specials skipped."""
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            if root == src and name in configmod.RESERVED_NAMES:
                continue
            if name.endswith(TOOL_TEMP_SUFFIX) or name.startswith(configmod.FUSE_HIDDEN_PREFIX):
                log.warning("skipping %s: a name realmfs reserves for temporary files", path)
                continue
            if os.path.islink(path) or not os.path.isfile(path):
                log.warning("skipping %s: not a regular file", path)
                continue
            yield path, rel


def _warn_if_mounted(backing: str) -> None:
    if is_locked(backing):
        log.warning("%s is mounted: files being written now may be read half-way; unmount it "
                    "for a consistent result", backing)


# ---------------------------------------------------------------------- encrypt
@dataclass
class EncryptResult:
    dst: str
    files: list = field(default_factory=list)    # relative names written
    padded: list = field(default_factory=list)   # .realm files whose size was not whole pages
    bytes: int = 0


def _check_plain(path: str, realm_layout: bool) -> None:
    """Refuse a source file that is already ciphertext (realmfs header or Realm IV table)."""
    first = first_page(path)
    if has_realmfs_header(first):
        raise AlreadyEncrypted(f"{path} is already encrypted (it has a realmfs header); "
                               "decrypt it first or copy it as is")
    if realm_layout and not looks_like_plain_realm(first) and looks_like_realm_ciphertext(path):
        raise AlreadyEncrypted(f"{path} looks like an encrypted Realm file already "
                               "(an IV table, no plain Realm header); refusing to encrypt it twice")


def _encrypt_file(src, dst: str, cipher: PageCipher, realm_layout: bool, progress,
                  source: os.stat_result | None) -> bool:
    """Write ``src`` (a path, or a binary stream such as standard input) encrypted to the
    new file ``dst``, fsync it, read it back and give it the owner, mode and times of
    ``source`` (src's stat taken before any read of it: reads move atime; None for a
    stream: the new file keeps mode 0600).

    Returns True if a ``.realm`` file's size had to be padded to whole pages.
    """
    written = hashlib.sha256()
    size = 0
    ef = open_backing(dst, cipher, realm_layout=realm_layout, create=True)
    try:
        with (open(src, "rb") if isinstance(src, str) else contextlib.nullcontext(src)) as plain:
            while True:
                chunk = plain.read(CHUNK)
                if not chunk:
                    break
                ef.write(size, chunk)
                written.update(chunk)
                size += len(chunk)
                progress.advance(len(chunk))
        padded = realm_layout and size % PAGE_SIZE != 0
        if padded:   # Realm's layout stores whole pages: the tail reads back as zeros
            written.update(bytes(PAGE_SIZE - size % PAGE_SIZE))
        ef.fsync()
    finally:
        ef.close()
    what = src if isinstance(src, str) else "the input"
    check_read_back(dst, cipher, realm_layout, written.hexdigest(),
                    f"read-back of {dst} does not match {what}; nothing was published")
    if source is not None:
        keep_metadata(dst, source)   # the mount shows the backing file's owner, mode and times
    return padded


class _Peeked:
    """A binary stream whose first bytes were read already (to check them) and are served
    again; counts the bytes it hands out."""

    def __init__(self, first: bytes, rest):
        self.first, self.rest, self.count = first, rest, 0

    def read(self, n: int) -> bytes:
        if self.first:
            chunk, self.first = self.first[:n], self.first[n:]
        else:
            chunk = self.rest.read(n)
        self.count += len(chunk)
        return chunk


def encrypt_stream(stream, dst: str, key: Key, *, realm_pattern: str = configmod.DEFAULT_REALM_PATTERN,
                   realm_layout: bool | None = None, progress=None) -> EncryptResult:
    """Encrypt a binary stream (``realmfs encrypt - DST``: standard input) into the new file
    ``dst``, under a temporary name until it was fsynced and read back, like a file."""
    progress = progress or disabled()
    _require_new(dst)
    layout = configmod.Config(realm_pattern=realm_pattern).is_realm_file(dst) if realm_layout is None \
        else realm_layout
    first = stream.read(HEADER_SIZE)
    if has_realmfs_header(first):
        raise AlreadyEncrypted("the input is already encrypted (it has a realmfs header)")
    result = EncryptResult(dst)
    progress.files = 1
    progress.file("(standard input)")
    source = _Peeked(first, stream)
    with _publishing(dst) as temp:
        if _encrypt_file(source, temp, PageCipher(key.raw), layout, progress, None):
            result.padded.append("(standard input)")
    result.files.append(os.path.basename(dst))
    result.bytes = source.count
    return result


def encrypt(src: str, dst: str, key: Key, *, realm_pattern: str = configmod.DEFAULT_REALM_PATTERN,
            realm_layout: bool | None = None, keyslot_list: list | None = None,
            progress=None) -> EncryptResult:
    """Encrypt a plain file or tree ``src`` into the new ``dst`` (see the module docstring).

    For a single file the layout follows DST's name (``realm_pattern``) unless
    ``realm_layout`` says otherwise; a tree gets a config with ``realm_pattern`` and
    ``keyslot_list``.
    """
    progress = progress or disabled()
    _require_source(src, dst)
    _require_new(dst)
    cipher = PageCipher(key.raw)
    result = EncryptResult(dst)
    pattern = configmod.Config(realm_pattern=realm_pattern)
    if os.path.isfile(src):
        layout = pattern.is_realm_file(dst) if realm_layout is None else realm_layout
        source = os.stat(src)
        _check_plain(src, layout)
        _count(progress, [src], os.path.basename(src))
        with _publishing(dst) as temp:
            if _encrypt_file(src, temp, cipher, layout, progress, source):
                result.padded.append(os.path.basename(src))
        result.files.append(os.path.basename(dst))
        result.bytes = os.path.getsize(src)
        return result
    if configmod.load(src) is not None:
        raise AlreadyEncrypted(f"{src} is a realmfs backing directory (it has {configmod.CONFIG_NAME}); "
                               "mount it, or decrypt it with 'realmfs decrypt'")
    tree = directory_stats(src)      # first: walking the source moves its directories' atimes
    sources = list(_source_files(src))
    before = {path: os.stat(path) for path, _ in sources}
    as_is = {rel for _, rel in sources if realm_layout is None and pattern.kind_of(rel) == configmod.KIND_PLAIN}
    for path, rel in sources:
        if rel not in as_is:
            _check_plain(path, pattern.is_realm_file(rel) if realm_layout is None else realm_layout)
    with _publishing(dst, tree) as temp:
        config = configmod.create(temp, key, realm_pattern, keyslots=keyslot_list)
        _count(progress, [p for p, _ in sources])
        for path, rel in sources:
            progress.file(rel)
            layout = config.is_realm_file(rel) if realm_layout is None else realm_layout
            if rel in as_is:
                _copy_as_is(path, os.path.join(temp, rel), progress, before[path])
            elif _encrypt_file(path, os.path.join(temp, rel), cipher, layout, progress, before[path]):
                result.padded.append(rel)
            result.files.append(rel)
            result.bytes += os.path.getsize(path)
    return result


def _copy_as_is(path: str, out: str, progress, source: os.stat_result) -> None:
    """Copy a plain-pattern file byte for byte into the new file ``out`` (fsynced, read
    back and compared), with the owner, mode and times of ``source``."""
    digest = write_copy(path, None, configmod.KIND_PLAIN, out, None, configmod.KIND_PLAIN, progress)
    again = hashlib.sha256()
    with open(out, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            again.update(chunk)
    if again.hexdigest() != digest:
        raise Damaged(f"read-back of {out} does not match {path}; nothing was published")
    keep_metadata(out, source)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


# ---------------------------------------------------------------------- decrypt
@dataclass
class DecryptResult:
    dst: str
    files: list = field(default_factory=list)
    zeroed: list = field(default_factory=list)    # verify.Problem of every page written as zeros
    bytes: int = 0


def _first_damage(path: str, name: str, cipher: PageCipher, realm_layout: bool):
    report = verify.scan_file(path, cipher, realm_layout=realm_layout, name=name)
    return report, [p for p in report.problems if p.severity >= verify.Severity.DAMAGE]


def _decrypt_file(path: str, name: str, out: str, cipher: PageCipher, realm_layout: bool,
                  key_checked: bool, skip_damaged: bool, progress, source: os.stat_result) -> list:
    """Decrypt one backing file into the new file ``out``, with the owner, mode and times
    of ``source`` (path's stat taken before any read of it); returns the pages zeroed."""
    bad = _decrypt_pages(path, name, out, cipher, realm_layout, key_checked, skip_damaged, progress)
    keep_metadata(out, source)
    return bad


def _decrypt_pages(path: str, name: str, out: str, cipher: PageCipher, realm_layout: bool,
                   key_checked: bool, skip_damaged: bool, progress) -> list:
    try:
        _copy_plain(path, cipher, realm_layout, out, progress, read_only=True, key_checked=key_checked)
        return []
    except (IntegrityError, Damaged) as error:
        if isinstance(error, NotEncrypted):
            raise
        report, bad = _first_damage(path, name, cipher, realm_layout)
        if not bad:
            raise
        salvageable = realm_layout or report.header is not None
        if not skip_damaged or not salvageable:
            hint = "; run with --skip-damaged to write zeros for it" if salvageable else ""
            first = next((p for p in bad if p.page is not None), bad[0])
            reason = f"{first.kind.value}{hint} ('realmfs verify' lists every bad page)"
            if first.page is None:
                raise Damaged(f"{name}: {reason}") from error
            raise IntegrityError(name, first.page, reason) from error
    _copy_plain(path, cipher, realm_layout, out, progress, salvage=True, key_checked=True)
    return bad


def _copy_plain(path: str, cipher: PageCipher, realm_layout: bool, out: str, progress, **open_options) -> None:
    """Open ``path`` (``open_options`` as open_backing's) and write its plaintext to ``out``, fsynced."""
    ef = open_backing(path, cipher, realm_layout=realm_layout, **open_options)
    try:
        _write_plain(ef, out, progress)
    finally:
        ef.close()


def _write_plain(ef, out: str, progress) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            _stream_plain(ef, f, progress)
            f.flush()
            os.fsync(fd)
    finally:
        os.close(fd)


def _stream_plain(ef, stream, progress) -> None:
    for offset in range(0, ef.size, CHUNK):
        chunk = ef.read(offset, CHUNK)
        stream.write(chunk)
        progress.advance(len(chunk))


def _unrecognized(src: str, layout: bool, error: RealmfsError) -> NotRecognized | None:
    """A lone file that failed to open as ``layout``: NotRecognized if it is no ciphertext
    of that kind at all, else None (the original error stands)."""
    if layout and not isinstance(error, NotEncrypted) and not has_realm_iv_table(src):
        return NotRecognized(f"{src} is not an encrypted file: no realmfs header and no Realm IV table")
    headerless = not has_realmfs_header(first_page(src))
    if not layout and headerless:     # --layout header forced on a file without one
        return NotRecognized(f"{src} has no realmfs header: not a file realmfs encrypted")
    return None


def _lone_file_layout(src: str, realm_layout: bool | None) -> bool:
    first = first_page(src)
    if looks_like_plain_realm(first):
        raise NotEncrypted(f"{src} is an unencrypted Realm file already; nothing to decrypt")
    if realm_layout is not None:
        return realm_layout
    return not has_realmfs_header(first)


def decrypt(src: str, dst: str, key: Key, *, skip_damaged: bool = False,
            realm_layout: bool | None = None, progress=None) -> DecryptResult:
    """Decrypt one encrypted file or a backing directory into the new ``dst``."""
    progress = progress or disabled()
    _require_source(src, dst)
    _require_new(dst)
    cipher = PageCipher(key.raw)
    result = DecryptResult(dst)
    if os.path.isfile(src):
        source = os.stat(src)       # before any read of it moves its atime
        layout = _lone_file_layout(src, realm_layout)
        _count(progress, [src], os.path.basename(src))
        with _publishing(dst) as temp:
            try:
                result.zeroed = _decrypt_file(src, src, temp, cipher, layout, False, skip_damaged, progress,
                                              source)
            except (WrongKey, Damaged) as error:
                unrecognized = _unrecognized(src, layout, error)
                if unrecognized is not None:
                    raise unrecognized from None
                raise
        result.files.append(os.path.basename(src))
        result.bytes = os.path.getsize(dst)
        return result
    # owner, mode and times first: the checks below list directories and read every file
    tree = directory_stats(src)
    files = [(p, os.path.relpath(p, src)) for p in backingscan.backing_files(src)]
    as_is = [(p, os.path.relpath(p, src)) for p in backingscan.backing_files(src, plain=True)]
    before = {path: os.stat(path) for path, _ in files + as_is}
    config = backingscan.open_backing_dir(src, key)
    _warn_if_mounted(src)
    key_checked = bool(config.key_check)
    with _publishing(dst, tree) as temp:
        _count(progress, [p for p, _ in files + as_is])
        for path, rel in files:
            progress.file(rel)
            result.zeroed += _decrypt_file(path, rel, os.path.join(temp, rel), cipher,
                                           config.is_realm_file(rel), key_checked, skip_damaged, progress,
                                           before[path])
            result.files.append(rel)
            result.bytes += os.path.getsize(os.path.join(temp, rel))
        for path, rel in as_is:
            progress.file(rel)
            _copy_as_is(path, os.path.join(temp, rel), progress, before[path])
            result.files.append(rel)
            result.bytes += os.path.getsize(path)
    return result


def decrypt_to_stream(src: str, stream, key: Key, *, skip_damaged: bool = False,
                      realm_layout: bool | None = None, progress=None) -> DecryptResult:
    """One encrypted file's plaintext written to a binary stream (``realmfs decrypt SRC -``:
    standard output). The key is checked before the first byte goes out; a damaged page
    stops the output there (IntegrityError naming it) unless ``skip_damaged``, which checks
    the whole file first and writes zeros for the damaged pages."""
    progress = progress or disabled()
    if not os.path.isfile(src):
        raise BadPath(f"{src} is not a file: only one file can be decrypted to standard output"
                      if os.path.exists(src) else f"{src} does not exist")
    cipher = PageCipher(key.raw)
    layout = _lone_file_layout(src, realm_layout)
    result = DecryptResult("-", files=[os.path.basename(src)])
    try:
        ef = open_backing(src, cipher, realm_layout=layout, read_only=True)   # the key check
    except (WrongKey, Damaged) as error:
        raise _unrecognized(src, layout, error) or error from None
    try:
        if skip_damaged:
            report, bad = _first_damage(src, src, cipher, layout)
            if bad and (layout or report.header is not None):
                ef.close()
                ef = open_backing(src, cipher, realm_layout=layout, read_only=True, salvage=True,
                                  key_checked=True)
                result.zeroed = bad
        _count(progress, [src], os.path.basename(src))
        try:
            _stream_plain(ef, stream, progress)
        except IntegrityError as error:
            raise IntegrityError(src, error.page, f"{error.reason}; the output stops before this page "
                                 "(--skip-damaged writes zeros for damaged pages)") from None
        stream.flush()
        result.bytes = ef.size
    finally:
        ef.close()
    return result


# ---------------------------------------------------------------------- key slots
def _slot_editable_config(backing: str, master: Key) -> configmod.Config:
    """The config of ``backing``, proven under ``master`` and not in the middle of a rekey."""
    config = configmod.load(backing)
    if config is None:
        raise BadPath(f"{backing} has no realmfs config; run 'realmfs init' first")
    configmod.unlock(config, master)
    if config.rekey is not None:
        raise RekeyInProgress(f"a rekey of {backing} is unfinished; run 'realmfs rekey {backing}' first")
    return config


def set_passphrase(backing: str, unlocked: keyslots.Unlocked, secret: bytes, kdf: dict | None = None) -> str:
    """Replace the passphrase slot that unlocked (or the only one; or add one).

    Only the slot changes: the master key and every data byte stay as they are.
    Returns a description of what changed.
    """
    config = _slot_editable_config(backing, unlocked.master)
    slot = keyslots.make_slot(keyslots.PASSPHRASE, secret, unlocked.master, kdf)
    passphrase_slots = [i for i, s in enumerate(config.keyslots) if s.get("type") == keyslots.PASSPHRASE]
    if unlocked.index is not None and unlocked.index in passphrase_slots:
        index = unlocked.index
    elif len(passphrase_slots) == 1:
        index = passphrase_slots[0]
    elif not passphrase_slots:
        index = len(config.keyslots)
        config.keyslots.append(None)
    else:
        raise BadPath(f"{backing} has {len(passphrase_slots)} passphrase slots: unlock with the "
                      "passphrase you want to change")
    changed = "added" if config.keyslots[index] is None else "replaced"
    config.keyslots[index] = slot
    configmod.save(backing, config, unlocked.master)
    return f"passphrase slot {index} {changed}"


def add_recovery_key(backing: str, unlocked: keyslots.Unlocked, path: str) -> str:
    """Write a new random recovery key to ``path`` (0600) and add a keyfile slot for it."""
    config = _slot_editable_config(backing, unlocked.master)
    recovery = Key.generate()
    write_key_file(path, recovery)
    config.keyslots.append(keyslots.make_slot(keyslots.KEYFILE, recovery.raw, unlocked.master))
    configmod.save(backing, config, unlocked.master)
    return f"recovery key written to {path} (slot {len(config.keyslots) - 1})"
