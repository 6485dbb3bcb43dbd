"""PlainFile: a plain-pattern file (Realm Core's auxiliary files), bytes passed through.

Realm Core never encrypts the files it keeps beside a database (the ``.lock`` file it
mmaps and locks, the ``.management`` directory's FIFOs, ...; see config.kind_of and
docs/threat-model.md), so realmfs leaves them as they are: the backing file and the
file at the mountpoint are the same bytes. PlainFile has EncryptedFile's interface
(read/write/truncate/size/flush/fsync/close, ``lock``, ``read_only``, ``name``) so the
open-file table, the FUSE operations and the rename re-encoding use either alike.

``open_file`` is the one place a file kind becomes an object.

Invariants: byte i of the file is byte i of the backing file, always; nothing is
buffered (every write reaches the backing fd before it returns); the object never
closes ``fd`` (its owner does, as with EncryptedFile).
"""

from __future__ import annotations

import os
import threading

from .config import KIND_PLAIN, KIND_REALM
from .errors import ReadOnly
from .pagecipher import PageCipher
from .pagefile import EncryptedFile


class PlainFile:
    """The EncryptedFile interface over a backing fd, without encryption."""

    def __init__(self, fd: int, *, name: str = "?", read_only: bool = False):
        self.fd = fd
        self.name = name
        self.read_only = read_only
        self.lock = threading.RLock()
        self.backing_writes = 0            # pwrite calls, as EncryptedFile counts them

    @property
    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def write(self, offset: int, data) -> int:
        self._check_writable()
        view = memoryview(data)
        with self.lock:
            done = 0
            while done < len(view):        # pwrite may write less (signals, big buffers)
                done += os.pwrite(self.fd, view[done:], offset + done)
                self.backing_writes += 1
        return len(view)

    def truncate(self, length: int) -> None:
        self._check_writable()
        os.ftruncate(self.fd, length)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnly(f"{self.name} is open read-only")

    def flush(self) -> None:
        pass

    def fsync(self, datasync: bool = False) -> None:
        (os.fdatasync if datasync else os.fsync)(self.fd)

    def close(self) -> None:
        pass


def open_file(fd: int, cipher: PageCipher, kind: str, *, name: str, read_only: bool = False,
              key_checked: bool = False):
    """The file object for a backing fd of ``kind`` (config.KIND_*); the caller owns ``fd``."""
    if kind == KIND_PLAIN:
        return PlainFile(fd, name=name, read_only=read_only)
    return EncryptedFile(fd, cipher, realm_layout=kind == KIND_REALM, name=name,
                         read_only=read_only, key_checked=key_checked)


def open_path(path: str, cipher: PageCipher, kind: str, *, read_only: bool = False,
              key_checked: bool = False, create: bool = False):
    """Open ``path`` as a file of ``kind``; the object's ``fd`` must be closed by the caller."""
    flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        return open_file(fd, cipher, kind, name=path, read_only=read_only, key_checked=key_checked)
    except BaseException:
        os.close(fd)
        raise
