"""Serve one Python FUSE mount in this process until stdin closes; the harness's child.

    mountd.py --probe KIND           exit 0 if KIND can be mounted here, else print why
    mountd.py KIND BACKING MOUNTPOINT

KIND is ``realmfs`` (``realmfs.api.mounted`` with a fresh key; extra FUSE
options from BENCH_REALMFS_OPTS, e.g. "max_read=131072", to try tuning levers) or
``loopback`` (a pass-through on the daemon's binding without crypto, with realmfs's FUSE options:
the floor of realmfs's request path; BENCH_LOOPBACK_OPTS replaces the options,
e.g. "big_writes,kernel_cache" for fusepy's multi-threaded loop).

Protocol: prints "ready PID" on stdout once the mount is usable, PID being the
FUSE daemon's (realmfs runs its own detached daemon process); unmounts and exits
when stdin reaches EOF (the harness closes it), so the mount is not left behind
by a harness that dies: its end of the pipe closes with it.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from realmfs.fs import fusermount  # noqa: E402
from targets import is_mounted  # noqa: E402  (this script runs from benchlib/)


def serve_realmfs(backing: str, mountpoint: str) -> None:
    from realmfs.keys import config
    from realmfs.api import mounted
    from realmfs.keys.key import Key

    key = Key.generate()
    if config.load(backing) is None:
        config.create(backing, key)  # what 'realmfs init' does: the normal, checked setup
    options = [o for o in os.environ.get("BENCH_REALMFS_OPTS", "").split(",") if o]
    # The daemon's log goes next to the backing dir, inside the bench's temporary directory.
    log_file = os.path.join(os.path.dirname(backing), "realmfs-daemon.log")
    with mounted(backing, mountpoint, key, options=options, log_file=log_file) as m:
        print(f"ready {m.pid}", flush=True)
        sys.stdin.buffer.read()  # until the harness closes our stdin


def loopback_options(backing: str, override: str | None) -> dict:
    """The pass-through's FUSE options: realmfs's own (one request at a time, the same write
    size and timeouts, on the same binding; kernel_cache standing in for its per-open keep_cache), so
    that the column is the floor of realmfs's request path; BENCH_LOOPBACK_OPTS replaces them."""
    if override is not None:
        options = {}
        for item in override.split(","):
            name, _, value = item.partition("=")
            if name:
                options[name] = value or True
        return options
    from realmfs.fs.mountchecks import fuse_options
    options = fuse_options(backing)
    for own in ("foreground", "fsname", "subtype"):
        options.pop(own, None)
    options["kernel_cache"] = True
    return options


def serve_loopback(backing: str, mountpoint: str) -> None:
    from realmfs.fs.fusebinding import FUSE     # the daemon's binding: REALMFS_FUSE=2 for libfuse 2

    options = loopback_options(backing, os.environ.get("BENCH_LOOPBACK_OPTS"))

    def announce_then_wait():
        while not is_mounted(mountpoint):
            time.sleep(0.02)
        print(f"ready {os.getpid()}", flush=True)
        sys.stdin.buffer.read()
        fusermount.unmount(mountpoint)

    threading.Thread(target=announce_then_wait, daemon=True).start()
    from realmfs.fs import reqstats   # REALMFS_REQUEST_STATS: the same per-request histogram as realmfs's
    FUSE(reqstats.wrap(_loopback_class()(backing)), mountpoint, foreground=True, **options)  # until unmounted


def _loopback_class():
    from realmfs.fs.fusebinding import FuseOSError, Operations, init_conn

    class Loopback(Operations):
        """Every call forwarded to the same path under the backing directory."""

        def __init__(self, root: str):
            self.root = os.path.realpath(root)

        def _p(self, path: str) -> str:
            return self.root + path

        def __call__(self, op, path=None, *args):
            method = getattr(self, op, None)
            if method is None:
                raise FuseOSError(errno.ENOSYS)
            try:
                return method(self._p(path) if isinstance(path, str) else path, *args)
            except OSError as error:
                raise FuseOSError(error.errno or errno.EIO)

        def init_with_config(self, conn, config):
            init_conn(conn)         # 1 MiB writes on libfuse 3, as realmfs asks

        def getattr(self, path, fh=None):
            st = os.lstat(path)
            return {key: getattr(st, key) for key in (
                "st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size",
                "st_uid", "st_blocks")}

        def readdir(self, path, fh):
            return [".", ".."] + os.listdir(path)

        def statfs(self, path):
            st = os.statvfs(path)
            return {key: getattr(st, key) for key in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
                "f_flag", "f_frsize", "f_namemax")}

        def access(self, path, mode):
            if not os.access(path, mode):
                raise FuseOSError(errno.EACCES)

        # setattr may come with a file handle (libfuse 3); the path is always there too
        chmod = lambda self, path, mode, fh=None: os.chmod(path, mode)
        chown = lambda self, path, uid, gid, fh=None: os.chown(path, uid, gid)
        mkdir = lambda self, path, mode: os.mkdir(path, mode)
        rmdir = lambda self, path: os.rmdir(path)
        unlink = lambda self, path: os.unlink(path)
        utimens = lambda self, path, times=None, fh=None: os.utime(path, times)
        readlink = lambda self, path: os.readlink(path)
        def open(self, path, flags):
            # the kernel sends explicit offsets, and with the writeback cache it reads
            # through any handle: no O_APPEND (pwrite would ignore the offset), no O_WRONLY
            flags &= ~os.O_APPEND
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = flags & ~os.O_ACCMODE | os.O_RDWR
            return os.open(path, flags)

        # O_RDWR, not O_WRONLY: the kernel reads through this fh too (mmap page faults).
        create = lambda self, path, mode, fi=None: os.open(path, os.O_RDWR | os.O_CREAT, mode)
        read = lambda self, path, size, offset, fh: os.pread(fh, size, offset)
        write = lambda self, path, data, offset, fh: os.pwrite(fh, data, offset)
        flush = lambda self, path, fh: None
        release = lambda self, path, fh: os.close(fh)
        fsync = lambda self, path, datasync, fh: os.fdatasync(fh) if datasync else os.fsync(fh)

        def rename(self, old, new):
            os.rename(old, self._p(new))

        def link(self, target, source):  # fusepy: target is the new name (already rewritten)
            os.link(self._p(source), target)

        def symlink(self, target, source):
            os.symlink(source, target)

        def truncate(self, path, length, fh=None):
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(path, length)

    return Loopback


def main(argv: list[str]) -> int:
    if argv[:1] == ["--probe"]:
        kind = argv[1]
        try:
            if kind == "realmfs":
                import realmfs.api  # noqa: F401
                from realmfs.keys.key import Key  # noqa: F401
            else:
                import realmfs.fs.fusebinding  # noqa: F401
        except Exception as error:  # a half-written module may fail in any way
            print(f"not available: {type(error).__name__}: {error}")
            return 1
        return 0
    kind, backing, mountpoint = argv
    if kind == "realmfs":
        serve_realmfs(backing, mountpoint)
    else:
        serve_loopback(backing, mountpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
