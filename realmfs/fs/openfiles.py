"""The open-file table: one file object per backing inode, however many handles.

Every FUSE handle (``fh``) maps to an ``OpenFile`` keyed by the backing file's
``(st_dev, st_ino)``. All handles of an inode share one backing fd (O_RDWR, or
O_RDONLY on a read-only mount), one EncryptedFile (or PlainFile for a plain-pattern
file, see plainfile.py) and so one lock and one IV cache: two handles can never hold
different ideas of a page's counter.

Invariants
* Keyed by inode, not by path: rename and unlink of an open file keep working,
  and a hard link opened by either name is the same OpenFile.
* ``refcount`` == number of live handles; the fd is closed exactly when it drops
  to zero (or at ``close_all``, which fsyncs first).
* Thread-safe: the table has its own lock; data operations lock the EncryptedFile.
* An inode held closed (``hold_closed``: a rename re-encrypting it into the other
  layout) gets no new handle: an open of it waits until it is released and then
  opens its path again, so it sees the renamed-away name as gone, not stale data.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import threading
from dataclasses import dataclass, field

from .backingdir import open_quietly
from ..format.pagecipher import PageCipher
from ..storage.pagefile import EncryptedFile
from ..storage.plainfile import PlainFile, open_file

log = logging.getLogger(__name__)


@dataclass
class OpenFile:
    key: tuple[int, int]
    fd: int
    file: EncryptedFile | PlainFile
    name: str
    kind: str           # config.KIND_*: the layout the file was opened with
    refcount: int = 0
    handles: set = field(default_factory=set)


@dataclass
class Handle:
    open_file: OpenFile
    nlink: int          # hard links of the file when it was opened (from the open's fstat)
    path: str = ""      # the mount path it was opened by, kept through renames (``renamed``)
    hidden: bool = False    # that name was renamed to .fuse_hidden* (unlinked while open)

    @property
    def file(self) -> EncryptedFile | PlainFile:
        return self.open_file.file


class OpenFiles:
    def __init__(self, cipher: PageCipher, read_only: bool = False):
        self.cipher = cipher
        self.read_only = read_only
        self.lock = threading.Lock()
        self._by_inode: dict[tuple[int, int], OpenFile] = {}
        self._handles: dict[int, Handle] = {}
        self._numbers = itertools.count(1)
        self._held: set[tuple[int, int]] = set()      # inodes held closed (hold_closed)
        self._released = threading.Condition(self.lock)

    def __len__(self) -> int:
        return len(self._by_inode)

    def lookup_inode(self, dev: int, ino: int) -> OpenFile | None:
        with self.lock:
            return self._by_inode.get((dev, ino))

    def hold_closed(self, dev: int, ino: int) -> bool:
        """Keep the inode from being opened until ``release_held``; False if it is open now."""
        with self.lock:
            if (dev, ino) in self._by_inode:
                return False
            self._held.add((dev, ino))
            return True

    def release_held(self, dev: int, ino: int) -> None:
        with self.lock:
            self._held.discard((dev, ino))
            self._released.notify_all()

    def open(self, backing_path: str, name: str, kind: str, flags: int,
             create_mode: int | None = None, dir_fd: int | None = None) -> int:
        """Open (or create, when ``create_mode`` is given) as a file of ``kind`` (config.KIND_*)
        and return a new handle number; ``backing_path`` is relative to ``dir_fd`` when that
        is given."""
        while True:
            number = self._open_once(backing_path, name, kind, flags, create_mode, dir_fd)
            if number is not None:
                return number

    def _open_once(self, backing_path, name, kind, flags, create_mode, dir_fd) -> int | None:
        """One attempt; None if the inode was held closed (the caller opens the path again)."""
        osflags = (os.O_RDONLY if self.read_only else os.O_RDWR) | os.O_CLOEXEC | os.O_NOFOLLOW
        if create_mode is not None:
            osflags |= os.O_CREAT | (flags & os.O_EXCL)
        # O_NOATIME while the header is read: an open is not a read (ext4 leaves atime)
        fd = open_quietly(backing_path, osflags, dir_fd, 0o777 if create_mode is None else create_mode)
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            with self.lock:
                if key in self._held:
                    while key in self._held:
                        self._released.wait()
                    return None
                entry = self._by_inode.get(key)
                if entry is None:
                    ef = open_file(fd, self.cipher, kind, name=name, read_only=self.read_only,
                                   key_checked=True)
                    # from here on reads are the user's: atime as ext4 (relatime) moves it
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NOATIME)
                    entry = OpenFile(key, fd, ef, name, kind)
                    self._by_inode[key] = entry
                    fd = -1          # owned by the entry now
                number = next(self._numbers)
                entry.refcount += 1
                entry.handles.add(number)
                self._handles[number] = Handle(entry, st.st_nlink, name)
        finally:
            if fd >= 0:
                os.close(fd)
        return number

    def renamed(self, old: str, new: str, hidden: bool) -> None:
        """Follow a rename in the handles' paths (``hidden``: ``new`` is a .fuse_hidden name)."""
        with self.lock:
            for handle in self._handles.values():
                if handle.path == old:
                    handle.path, handle.hidden = new, handle.hidden or hidden
                elif handle.path.startswith(old + "/"):
                    handle.path = new + handle.path[len(old):]

    def get(self, number: int) -> Handle:
        handle = self._handles.get(number)
        if handle is None:
            raise OSError(9, "bad file handle")   # EBADF
        return handle

    def release(self, number: int) -> None:
        with self.lock:
            handle = self._handles.pop(number, None)
            if handle is None:
                return
            entry = handle.open_file
            entry.refcount -= 1
            entry.handles.discard(number)
            if entry.refcount > 0:
                return
            del self._by_inode[entry.key]
        self._close(entry, sync=False)

    @staticmethod
    def _close(entry: OpenFile, sync: bool) -> None:
        try:
            if sync and not entry.file.read_only:
                entry.file.fsync()
            entry.file.close()
        finally:
            os.close(entry.fd)

    def close_all(self) -> int:
        """Fsync and close every open file (unmount); returns how many were open."""
        with self.lock:
            entries = list(self._by_inode.values())
            self._by_inode.clear()
            self._handles.clear()
        for entry in entries:
            try:
                self._close(entry, sync=True)
            except Exception:   # noqa: BLE001 - keep sealing the others
                log.exception("could not fsync/close %s at unmount", entry.name)
        return len(entries)

