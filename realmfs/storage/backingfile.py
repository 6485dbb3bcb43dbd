"""BackingFile: every I/O an EncryptedFile does on its backing file, behind one small interface.

EncryptedFile (pagefile.py, with its IvTable and PageStore) reads, writes, sizes, cuts,
syncs and advises its backing file only through a BackingFile, never through ``os``. Tests stack wrappers
with the same methods on it (tests/storage/helpers.py: one that records every call and
can fail the n-th mutation, the simulated power cut) instead of patching ``os``.

Invariants
* ``pwrite`` writes all of ``data`` or raises (ENOSPC on a short write): a write that
  half happened never passes for one that happened.
* ``pread`` and ``preadv`` are ``functools.partial`` objects over ``os``: the per-page read
  path pays no Python frame for the seam.
* ``close`` closes the descriptor only if this object opened it (``open``); a borrowed
  descriptor (the FUSE open-file table keeps its own) is its owner's to close.
"""

from __future__ import annotations

import errno
import functools
import os


class BackingFile:
    """One backing file descriptor: pread/preadv/pwrite/size/truncate/fsync/advise/close."""

    __slots__ = ("fd", "name", "_owned", "pread", "preadv")

    def __init__(self, fd: int, name: str = "?", *, owned: bool = False):
        self.fd = fd
        self.name = name
        self._owned = owned
        self.pread = functools.partial(os.pread, fd)      # (length, offset) -> bytes
        self.preadv = functools.partial(os.preadv, fd)    # (buffers, offset) -> bytes read

    @classmethod
    def open(cls, path: str, *, read_only: bool = False, create: bool = False) -> "BackingFile":
        """Open ``path`` (O_RDWR, or O_RDONLY; O_CREAT with ``create``); ``close`` closes it."""
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | (os.O_CREAT if create else 0)
        return cls(os.open(path, flags | os.O_CLOEXEC, 0o600), path, owned=True)

    def pwrite(self, data, offset: int) -> None:
        """Write ``data`` (a buffer, or a list of buffers written back to back by one
        pwritev) at ``offset``, whole."""
        if type(data) is list:
            written, expected = os.pwritev(self.fd, data, offset), sum(len(part) for part in data)
        else:
            written, expected = os.pwrite(self.fd, data, offset), len(data)
        if written != expected:
            raise OSError(errno.ENOSPC, f"short write to the backing file of {self.name}")

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncate(self, length: int) -> None:
        os.ftruncate(self.fd, length)

    def fsync(self, datasync: bool = False) -> None:
        (os.fdatasync if datasync else os.fsync)(self.fd)

    def advise(self, offset: int, length: int) -> None:
        """Ask the kernel to start reading ``length`` bytes from ``offset`` (WILLNEED)."""
        os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_WILLNEED)

    def close(self) -> None:
        if self._owned and self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
