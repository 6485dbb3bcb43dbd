"""PlainFile: a plain-pattern file (Realm Core's auxiliary files), bytes passed through.

Realm Core never encrypts the files it keeps beside a database (the ``.lock`` file it
mmaps and locks, the ``.management`` directory's FIFOs, ...; see config.kind_of and
docs/threat-model.md), so realmfs leaves them as they are: the backing file and the
file at the mountpoint are the same bytes. PlainFile has EncryptedFile's interface
(read/write/truncate/size/flush/fsync/close, ``lock``, ``read_only``, ``name``) so the
open-file table, the FUSE operations and the rename re-encoding use either alike.

``open_file`` is the one place a file kind becomes an object.

Invariants: byte i of the file is byte i of the backing file, always; nothing is
buffered (every write reaches the backing fd before it returns); ``close`` closes the
descriptor only if the object's BackingFile owns it (``open_path``), as with EncryptedFile.
"""

from __future__ import annotations

import os
import threading

from .backingfile import BackingFile
from ..keys.config import KIND_PLAIN, KIND_REALM
from ..errors import ReadOnly
from ..format.pagecipher import PageCipher
from .pagefile import EncryptedFile


class PlainFile:
    """The EncryptedFile interface over a backing file (or a borrowed fd), without encryption."""

    def __init__(self, backing: BackingFile | int, *, name: str = "?", read_only: bool = False):
        self.backing = BackingFile(backing, name) if type(backing) is int else backing
        self.name = name
        self.read_only = read_only
        self.lock = threading.RLock()

    @property
    def fd(self) -> int:
        return self.backing.fd

    @property
    def size(self) -> int:
        return self.backing.size()

    def read(self, offset: int, length: int) -> bytes:
        return self.backing.pread(length, offset)

    def write(self, offset: int, data) -> int:
        self._check_writable()
        view = memoryview(data)
        with self.lock:
            done = 0
            while done < len(view):        # pwrite may write less (signals, big buffers)
                done += os.pwrite(self.fd, view[done:], offset + done)
        return len(view)

    def truncate(self, length: int) -> None:
        self._check_writable()
        self.backing.truncate(length)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnly(f"{self.name} is open read-only")

    def flush(self) -> None:
        pass

    def fsync(self, datasync: bool = False) -> None:
        self.backing.fsync(datasync)

    def close(self) -> None:
        self.backing.close()


def open_file(fd: BackingFile | int, cipher: PageCipher, kind: str, *, name: str, read_only: bool = False,
              key_checked: bool = False):
    """The file object for a backing file of ``kind`` (config.KIND_*); a bare fd stays the
    caller's to close, a BackingFile is closed by the object's ``close``."""
    if kind == KIND_PLAIN:
        return PlainFile(fd, name=name, read_only=read_only)
    return EncryptedFile(fd, cipher, realm_layout=kind == KIND_REALM, name=name,
                         read_only=read_only, key_checked=key_checked)


def open_path(path: str, cipher: PageCipher, kind: str, *, read_only: bool = False,
              key_checked: bool = False, create: bool = False):
    """Open ``path`` as a file of ``kind``; the object's ``close`` closes the descriptor."""
    backing = BackingFile.open(path, read_only=read_only, create=create)
    try:
        return open_file(backing, cipher, kind, name=path, read_only=read_only, key_checked=key_checked)
    except BaseException:
        backing.close()
        raise
