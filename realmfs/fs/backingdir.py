"""Mount paths resolved under one open directory of BACKING, never as BACKING + path.

Joining BACKING and a mount path fails with ENAMETOOLONG for any path near PATH_MAX at
the mountpoint (the kernel limits each string it is given, not the depth of a tree), and
it follows a symlink wherever one appears on the way. So every operation of the daemon
works on (directory fd, last name): ``parent`` opens the directories of a path one at a
time, each relative to the previous one, with O_PATH | O_DIRECTORY | O_NOFOLLOW. No
string handed to the kernel is longer than one name (NAME_MAX), and no symlink is
followed between BACKING and the last name; the caller uses the ``*at`` form of each
call (``dir_fd=``) and does not follow a symlink in the last name either.

Invariants
* ``fd`` (BACKING itself) stays open from mount to unmount.
* ``parent`` gives (``fd``, ".") for "/", and closes every fd it opened, also on error.
* ``proc_path`` names an entry by a short path through /proc/self/fd, for the few
  helpers that take paths (the converting rename of transcode.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from contextlib import contextmanager
from typing import Iterator

_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class BackingDir:
    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @contextmanager
    def parent(self, path: str) -> Iterator[tuple[int, str]]:
        """(fd of the directory holding the last name of ``path``, that name)."""
        *dirs, name = path.strip("/").split("/")
        fd = self.fd
        try:
            for directory in dirs:
                next_fd = os.open(directory, _WALK_FLAGS, dir_fd=fd)
                if fd != self.fd:
                    os.close(fd)
                fd = next_fd
            yield fd, name or "."
        finally:
            if fd != self.fd:
                os.close(fd)

    def open_dir(self, path: str) -> int:
        """A readable fd of the directory ``path`` (for readdir and fsyncdir)."""
        with self.parent(path) as (fd, name):
            return os.open(name, _LIST_FLAGS, dir_fd=fd)


def proc_path(dir_fd: int, name: str) -> str:
    """A short path naming ``name`` in the directory open as ``dir_fd``."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def open_quietly(name: str, flags: int, dir_fd: int, mode: int = 0o777) -> int:
    """os.open with O_NOATIME where the kernel permits it (the daemon owns the file or is
    root): reading a header to learn a size is not an access the user made."""
    try:
        return os.open(name, flags | os.O_NOATIME, mode, dir_fd=dir_fd)
    except PermissionError:         # O_NOATIME on another user's file: EPERM
        return os.open(name, flags, mode, dir_fd=dir_fd)


# utimensat(2) itself: os.utime cannot pass UTIME_NOW / UTIME_OMIT, which keep exactly
# what the kernel would (the time of the call, or the old value untouched).
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
_AT_SYMLINK_NOFOLLOW = 0x100
_NS = 1_000_000_000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]
_libc.futimens.argtypes = [ctypes.c_int, ctypes.POINTER(_Timespec)]


def _timespec(ns: int) -> _Timespec:
    if ns in (UTIME_NOW, UTIME_OMIT):       # fusepy's use_ns: tv_sec 0, tv_nsec special
        return _Timespec(0, ns)
    return _Timespec(*divmod(ns, _NS))


def set_times(dir_fd: int, name: str | None, atime_ns: int | None, mtime_ns: int | None) -> None:
    """utimensat(dir_fd, name, ..., AT_SYMLINK_NOFOLLOW); with ``name`` None, of the file
    ``dir_fd`` itself (futimens). None for both times means now."""
    times = None if atime_ns is None else (_Timespec * 2)(_timespec(atime_ns), _timespec(mtime_ns))
    # glibc's utimensat refuses a NULL name (EINVAL), unlike the system call: futimens
    done = (_libc.futimens(dir_fd, times) if name is None
            else _libc.utimensat(dir_fd, os.fsencode(name), times, _AT_SYMLINK_NOFOLLOW))
    if done != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
