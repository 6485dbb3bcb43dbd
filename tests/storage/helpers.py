"""Shared helpers of the tests/storage tier: temp backing files, raw entry access and a
watched BackingFile that records every backing call and can 'crash' before the k-th mutation."""

from __future__ import annotations

import os
import shutil

from realmfs.storage.backingfile import BackingFile
from realmfs.format.layout import ENTRY_SIZE, HEADER_BASE, PAGE_SIZE, REALM_BASE, entry_offset, page_offset, pages_for
from realmfs.format.pagecipher import Entry, PageCipher
from realmfs.storage.pagefile import EncryptedFile

LAYOUTS = [True, False]
LAYOUT_IDS = ["realm", "header"]


def base_of(realm: bool) -> int:
    return REALM_BASE if realm else HEADER_BASE


class Backing:
    """One backing file on disk and the EncryptedFile currently open on it, whose backing
    I/O goes through ``watch`` (the same WatchedBacking across reopens)."""

    def __init__(self, path, realm: bool, key: bytes | None = None, **kwargs):
        self.path = str(path)
        self.realm = realm
        self.key = key or os.urandom(64)
        self.cipher = PageCipher(self.key)
        self.kwargs = kwargs
        self.watch = WatchedBacking()
        self.f: EncryptedFile | None = None
        self.open()

    def open(self, **kwargs) -> EncryptedFile:
        self.close()
        options = {**self.kwargs, **kwargs}
        read_only = bool(options.get("read_only"))
        self.watch.inner = BackingFile.open(self.path, read_only=read_only, create=not read_only)
        try:
            self.f = EncryptedFile(self.watch, self.cipher, realm_layout=self.realm, name=self.path, **options)
        except BaseException:
            self.watch.close()
            raise
        return self.f

    reopen = open

    @property
    def fd(self) -> int | None:
        """The open backing descriptor, None when closed."""
        inner = self.watch.inner
        return inner.fd if inner is not None and inner.fd >= 0 else None

    def close(self) -> None:
        if self.f is not None:
            self.f.close()          # closes the backing file too
            self.f = None

    def raw(self) -> bytes:
        with open(self.path, "rb") as handle:
            return handle.read()

    def entry(self, page: int) -> Entry:
        at = entry_offset(page, base_of(self.realm))
        raw = self.raw()[at:at + ENTRY_SIZE]
        return Entry.unpack(raw + bytes(ENTRY_SIZE - len(raw)))

    def entries(self, pages: int) -> list[Entry]:
        raw = self.raw()
        out = []
        for page in range(pages):
            at = entry_offset(page, base_of(self.realm))
            chunk = raw[at:at + ENTRY_SIZE]
            out.append(Entry.unpack(chunk + bytes(ENTRY_SIZE - len(chunk))))
        return out

    def poke(self, offset: int, data: bytes) -> None:
        with open(self.path, "r+b") as handle:
            handle.seek(offset)
            handle.write(data)

    def flip(self, offset: int, bit: int = 0) -> None:
        raw = self.raw()
        self.poke(offset, bytes([raw[offset] ^ (1 << bit)]))

    def page_at(self, page: int) -> int:
        return page_offset(page, base_of(self.realm))

    def entry_at(self, page: int) -> int:
        return entry_offset(page, base_of(self.realm))

    def copy_to(self, path) -> None:
        shutil.copyfile(self.path, path)


class Crash(Exception):
    """The simulated power cut."""


class WatchedBacking:
    """A BackingFile stacked under EncryptedFile: records every call as (name, offset,
    length) in ``calls`` and counts the mutations (pwrite, truncate). With ``allow`` set,
    the first ``allow`` mutations go through and the next one raises Crash (and so does
    every later one). ``inner`` is the BackingFile of the current open."""

    def __init__(self):
        self.inner: BackingFile | None = None
        self.calls: list[tuple[str, int, int]] = []
        self.mutations = 0
        self.allow: int | None = None

    @property
    def fd(self) -> int:
        return self.inner.fd

    def take(self) -> list[str]:
        """The names of the calls since the last take."""
        calls, self.calls = self.calls, []
        return [name for name, _, _ in calls]

    def _mutation(self, name: str, offset: int, length: int) -> None:
        if self.allow is not None and self.mutations >= self.allow:
            raise Crash(f"crash before backing {name} #{self.mutations + 1}")
        self.mutations += 1
        self.calls.append((name, offset, length))

    def pread(self, length: int, offset: int) -> bytes:
        self.calls.append(("pread", offset, length))
        return self.inner.pread(length, offset)

    def preadv(self, buffers, offset: int) -> int:
        self.calls.append(("preadv", offset, sum(len(b) for b in buffers)))
        return self.inner.preadv(buffers, offset)

    def pwrite(self, data, offset: int) -> None:
        self._mutation("pwrite", offset, sum(map(len, data)) if type(data) is list else len(data))
        self.inner.pwrite(data, offset)

    def truncate(self, length: int) -> None:
        self._mutation("truncate", length, 0)
        self.inner.truncate(length)

    def size(self) -> int:
        self.calls.append(("size", 0, 0))
        return self.inner.size()

    def fsync(self, datasync: bool = False) -> None:
        self.calls.append(("fsync", 0, 0))
        self.inner.fsync(datasync)

    def advise(self, offset: int, length: int) -> None:
        self.calls.append(("advise", offset, length))
        self.inner.advise(offset, length)

    def close(self) -> None:
        self.inner.close()


def count_mutations(backing: Backing, operation) -> int:
    """How many backing mutations ``operation`` makes on ``backing``'s file."""
    before = backing.watch.mutations
    operation()
    return backing.watch.mutations - before


def crash_after(backing: Backing, allow: int, operation) -> bool:
    """Run ``operation`` letting ``allow`` mutations of ``backing``'s file through; True if it crashed."""
    watch = backing.watch
    watch.allow, watch.mutations = allow, 0
    try:
        operation()
    except Crash:
        return True
    finally:
        watch.allow = None
    return False


def pattern(length: int, seed: int) -> bytes:
    """Distinct, non-zero, position-dependent bytes (no page of it is all zero)."""
    unit = bytes(((i * 131 + seed * 29 + 7) % 251) + 1 for i in range(251 * 4))
    return (unit * (length // len(unit) + 1))[:length]


def model_pages(model: bytes | bytearray, size: int) -> list[bytes]:
    padded = bytes(model[:size]) + bytes(max(0, size - len(model)))
    return [padded[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] for p in range(pages_for(size))]
