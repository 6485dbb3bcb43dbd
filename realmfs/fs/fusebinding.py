"""The FUSE library the daemon runs on, chosen once per process, and how RealmfsOps meets it.

libfuse 3 through mfusepy is the default: 1 MiB write requests (set in init, where libfuse 3
takes ``max_write``; the kernel's ``max_pages`` follows from it), and a setattr on an open file
(ftruncate, and the times, mode or owner the kernel may set through a handle) arrives with
its file handle, which matters because the mount asks for no paths on handle-based calls
(``nullpath_ok``): mfusepy would drop the handle and pass no path either. ``REALMFS_FUSE=2``
selects fusepy on libfuse 2, the fallback that CI runs every mount test on as well.

RealmfsOps maps every exception to an errno in its ``__call__`` (fusepy's dispatcher).
mfusepy 3 ignores ``__call__`` and calls methods by name, so ``_Dispatched`` routes each
callback through it: with either library no exception reaches the library's own handler
(whose answer is EINVAL).

Invariants: nothing else in realmfs imports ``fuse`` or ``mfusepy``; importing this module
either gives a working binding or raises MountFailed naming what to install.
"""

from __future__ import annotations

import functools
import os
import sys

from ..errors import MountFailed

ENV = "REALMFS_FUSE"
MAX_WRITE_LIBFUSE3 = 1 << 20    # bytes per write request (libfuse 3's and the kernel's ceiling)
_FUSE_CAP_AUTO_INVAL_DATA = 1 << 12     # libfuse 3's fuse_common.h
_FUSE_CAP_WRITEBACK_CACHE = 1 << 16
# An experiment for scripts/bench.py (target realmfs-writeback), not a user option: the
# kernel's writeback cache breaks what docs/mount.md promises for hard links and .realm
# sizes (docs/performance.md).
WRITEBACK_ENV = "REALMFS_EXPERIMENT_WRITEBACK_CACHE"


def _wanted_major() -> int:
    wanted = os.environ.get(ENV, "3").strip() or "3"
    if wanted not in ("2", "3"):
        raise MountFailed(f"{ENV}={wanted} is not a FUSE version realmfs runs on: use 3 (the default) or 2")
    return int(wanted)


def _import_library(major: int):
    name, package, apt = (("mfusepy", "mfusepy", "libfuse3-3") if major == 3
                          else ("fuse", "fusepy", "libfuse2"))
    if major == 3:
        # mfusepy takes libfuse 2 when both are installed unless told which to load
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    try:
        library = __import__(name)
    except ImportError:
        raise MountFailed(f"the Python package {package} is not installed for {sys.executable}: "
                          f"install it (pip install {package}) and mount again") from None
    except OSError as error:      # raised when the package finds no libfuse
        raise MountFailed(f"libfuse {major} is missing ({error}): install it "
                          f"(apt-get install {apt}) and mount again") from None
    if major == 3 and getattr(library, "fuse_version_major", None) != 3:
        raise MountFailed(f"mfusepy found libfuse {library.fuse_version_major}, not libfuse 3: install "
                          f"it (apt-get install {apt}), or set {ENV}=2 to run on libfuse 2")
    return library


MAJOR = _wanted_major()
_library = _import_library(MAJOR)
Operations = _library.Operations
fuse_get_context = _library.fuse_get_context


class FuseOSError(OSError):
    """An errno for the application (both libraries answer any OSError with its errno)."""

    def __init__(self, code: int):
        super().__init__(code, os.strerror(code))


class _Dispatched:
    """The operations object as mfusepy sees it: each callback goes through ``ops(name, ...)``."""

    def __init__(self, ops):
        self._ops = ops

    def __getattr__(self, name):
        value = getattr(self._ops, name)
        if name.startswith("_") or not callable(value) or getattr(value, "libfuse_ignore", False):
            return value
        # kept, so that this lookup runs once per callback, not once per request (it was
        # 5% of the daemon's time under mmap writes); ``ops(name, ...)`` still looks the
        # method up at each call
        dispatch = functools.partial(self._ops, name)
        setattr(self, name, dispatch)
        return dispatch


def _decode(fuse, path):
    return None if path is None else path.decode(fuse.encoding, fuse.errors)


def _handle(fuse, fip):
    if not fip:
        return None
    return fip.contents if fuse.raw_fi else fip.contents.fh


def _unchanged_id(value: int, ctype) -> int:
    """chown's -1 (leave unchanged) arrives as the unsigned type's largest value."""
    return -1 if ctype(value + 1).value == 0 else value


if MAJOR == 3:
    class FUSE(_library.FUSE):
        """mfusepy's FUSE with callbacks through ``__call__``, and the file handle of a
        setattr (ftruncate; times, mode or owner the kernel sets on an open file) passed on."""

        def __init__(self, operations, mountpoint, **kwargs):
            kwargs.pop("big_writes", None)        # libfuse 2 only; libfuse 3 always allows big writes
            kwargs.pop("max_write", None)         # libfuse 3 takes it in init (see ``init_conn``)
            super().__init__(_Dispatched(operations), mountpoint, **kwargs)

        def truncate_fuse_3(self, path, length, fip):
            return self.operations.truncate(_decode(self, path), length, _handle(self, fip))

        def chmod_fuse_3(self, path, mode, fip):
            return self.operations.chmod(_decode(self, path), mode, _handle(self, fip))

        def chown_fuse_3(self, path, uid, gid, fip):
            return self.operations.chown(_decode(self, path), _unchanged_id(uid, _library.c_uid_t),
                                         _unchanged_id(gid, _library.c_gid_t), _handle(self, fip))

        def utimens_fuse_3(self, path, buf, fip):
            times = None
            if buf:
                times = (_library.time_of_timespec(buf.contents.actime, use_ns=self.use_ns),
                         _library.time_of_timespec(buf.contents.modtime, use_ns=self.use_ns))
            return self.operations.utimens(_decode(self, path), times, _handle(self, fip))
else:
    FUSE = _library.FUSE


def init_conn(conn) -> None:
    """Connection settings the daemon wants, at init (``conn`` is None on libfuse 2, where
    ``max_write`` is a mount option).

    ``auto_inval_data`` is cleared: with it the kernel drops a file's cached pages whenever it
    sees a new mtime, and every write through the mount changes the backing file's mtime, so
    warm reads would be cold again after each attribute timeout. The daemon is the backing
    directory's only writer, so the kernel's cache stays right without it."""
    if conn is None:
        return
    conn.max_write = MAX_WRITE_LIBFUSE3
    conn.want &= ~_FUSE_CAP_AUTO_INVAL_DATA
    if os.environ.get(WRITEBACK_ENV) == "1":
        conn.want |= _FUSE_CAP_WRITEBACK_CACHE
