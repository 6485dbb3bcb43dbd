"""Shared helpers of the tests/pagefile tier: temp backing files, raw entry access and a
fault-injecting ``os`` that lets the first k backing mutations through and then 'crashes'."""

from __future__ import annotations

import os
import shutil

from realmfs import pagefile, pagetruncate
from realmfs.layout import ENTRY_SIZE, HEADER_BASE, PAGE_SIZE, REALM_BASE, entry_offset, page_offset, pages_for
from realmfs.pagecipher import Entry, PageCipher
from realmfs.pagefile import EncryptedFile

LAYOUTS = [True, False]
LAYOUT_IDS = ["realm", "header"]


def base_of(realm: bool) -> int:
    return REALM_BASE if realm else HEADER_BASE


class Backing:
    """One backing file on disk and the EncryptedFile currently open on it."""

    def __init__(self, path, realm: bool, key: bytes | None = None, **kwargs):
        self.path = str(path)
        self.realm = realm
        self.key = key or os.urandom(64)
        self.cipher = PageCipher(self.key)
        self.kwargs = kwargs
        self.fd = None
        self.f: EncryptedFile | None = None
        self.open()

    def open(self, **kwargs) -> EncryptedFile:
        self.close()
        options = {**self.kwargs, **kwargs}
        flags = os.O_RDONLY if options.get("read_only") else os.O_RDWR | os.O_CREAT
        self.fd = os.open(self.path, flags, 0o600)
        try:
            self.f = EncryptedFile(self.fd, self.cipher, realm_layout=self.realm, name=self.path, **options)
        except BaseException:
            os.close(self.fd)
            self.fd = None
            raise
        return self.f

    reopen = open

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

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


class FaultyOs:
    """Stands in for ``os`` inside realmfs.pagefile and realmfs.pagetruncate: the first
    ``allow`` backing mutations (pwrite, pwritev, ftruncate) go through, the next one raises Crash
    (and so does every later one). ``allow=None`` only counts."""

    MUTATIONS = ("pwrite", "pwritev", "ftruncate")

    def __init__(self, allow: int | None):
        self.allow = allow
        self.done = 0

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.MUTATIONS:
            return real

        def mutation(*args):
            if self.allow is not None and self.done >= self.allow:
                raise Crash(f"crash before backing {name} #{self.done + 1}")
            self.done += 1
            return real(*args)
        return mutation


# every module of EncryptedFile that touches the backing file
BACKING_MODULES = (pagefile, pagetruncate)


def _backing_os(monkeypatch, replacement) -> None:
    for module in BACKING_MODULES:
        monkeypatch.setattr(module, "os", replacement)


def count_mutations(monkeypatch, operation) -> int:
    faulty = FaultyOs(None)
    _backing_os(monkeypatch, faulty)
    try:
        operation()
    finally:
        _backing_os(monkeypatch, os)
    return faulty.done


def crash_after(monkeypatch, allow: int, operation) -> bool:
    """Run ``operation`` letting ``allow`` mutations through; True if it crashed."""
    faulty = FaultyOs(allow)
    _backing_os(monkeypatch, faulty)
    try:
        operation()
    except Crash:
        return True
    finally:
        _backing_os(monkeypatch, os)
    return False


def pattern(length: int, seed: int) -> bytes:
    """Distinct, non-zero, position-dependent bytes (no page of it is all zero)."""
    unit = bytes(((i * 131 + seed * 29 + 7) % 251) + 1 for i in range(251 * 4))
    return (unit * (length // len(unit) + 1))[:length]


def model_pages(model: bytes | bytearray, size: int) -> list[bytes]:
    padded = bytes(model[:size]) + bytes(max(0, size - len(model)))
    return [padded[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] for p in range(pages_for(size))]
