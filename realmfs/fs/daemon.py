"""The daemon: ``serve()`` mounts BACKING and serves it in this process until unmounted.

``serve()`` runs for ``realmfs mount -f`` and, spawned by the launcher, as
``python -m realmfs mount -f --detach --key-stdin --status-fd N``. Every refusal
happens before BACKING is touched (paths, key, plain Realm files: mountchecks), then
the backing lock, then FUSE runs in a second thread so that the main thread can take
signals. SIGTERM/SIGINT/SIGHUP unmount the way ``fusermount -u`` does (the kernel
writes dirty mmap pages back while we still serve them); if that is refused as busy,
the mount is detached lazily and served until the last user lets go. Either way FUSE
calls destroy(), which fsyncs and closes every open file and syncfs()es BACKING: the
seal.

The status pipe (``--status-fd``): a first JSON line with the daemon's pid (so that a
starter can stop it on a timeout), then one final line, ``{"ok": true, "pid": ...}`` or
``{"ok": false, "code": ..., "message": ...}``, and the pipe is closed.

Invariants: BACKING is never written before the key and paths are accepted; the
daemon holds the backing lock for exactly as long as it may touch BACKING; a started
daemon either reports ready with the mount answering (in /proc/self/mounts and
answering stat), or exits with its error on the status pipe. The FUSE binding is
imported only when serving: the rest of the CLI works without libfuse.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

from ..keys import config as configmod
from ..storage import backingscan, transcode
from ..storage.backinglock import BackingLock
from .mountchecks import check_backing, check_paths, fuse_options
from .mounttable import realmfs_mounts
from .unmounting import detach
from ..errors import MountFailed, RealmfsError
from ..keys.key import Key
from ..format.pagecipher import PageCipher

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
TIMEOUTS = ("entry_timeout", "negative_timeout", "attr_timeout")    # in the order linkattrs.py needs


def decrypt_plain_named(backing: str, config: configmod.Config, key: Key) -> int:
    """Files with a plain-pattern name that an older realmfs encrypted (header layout):
    decrypted in place before serving, so the mount shows their bytes and the backing
    directory holds them as Realm Core would. Returns how many."""
    found = backingscan.plain_named_ciphertext(backing, config, key)
    cipher = PageCipher(key.raw)
    for path in found:
        transcode.convert_in_place(path, cipher, configmod.KIND_HEADER, configmod.KIND_PLAIN, os.lstat(path))
        log.warning("%s has a plain-pattern name (Realm Core keeps it unencrypted) but was encrypted "
                    "by an older realmfs: decrypted it in place", path)
    return len(found)


class _Status:
    """The daemon's half of the status pipe: one JSON line, then closed."""

    def __init__(self, fd: int | None):
        self.fd = fd
        if fd is not None:     # first line: who we are, so a starter can stop us on a timeout
            try:
                os.write(fd, (json.dumps({"pid": os.getpid()}) + "\n").encode())
            except OSError:
                self.fd = None

    def send(self, **message) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (json.dumps(message) + "\n").encode())
            os.close(self.fd)
        except OSError:
            pass
        self.fd = None


def serve(backing: str, mountpoint: str, key: Key, *, read_only: bool = False,
          extra_options: list[str] | None = None, status_fd: int | None = None) -> int:
    """Mount and serve in this process until unmounted; returns an exit code."""
    status = _Status(status_fd)
    try:
        return _serve(backing, mountpoint, key, read_only, extra_options, status)
    except RealmfsError as error:
        status.send(ok=False, code=error.exit_code, message=str(error))
        raise
    except BaseException as error:
        status.send(ok=False, code=MountFailed.exit_code, message=f"daemon failed: {error}")
        raise


def _import_fuse():
    """The FUSE class of the chosen binding (fusebinding.py), or MountFailed saying what to
    install (imported only here: the CLI must work -- status, init, the offline tools --
    without libfuse)."""
    from . import fusebinding
    return fusebinding.FUSE


def _serve(backing, mountpoint, key, read_only, extra_options, status) -> int:
    FUSE = _import_fuse()
    from . import reqstats
    from .fuseops import RealmfsOps

    if not os.path.exists("/dev/fuse"):
        raise MountFailed("/dev/fuse is missing: load the fuse module (modprobe fuse) or run with --device /dev/fuse")
    backing, mountpoint = check_paths(backing, mountpoint)
    config = check_backing(backing, key, mountpoint)
    options = fuse_options(backing, read_only, extra_options)
    # The kernel already applied the caller's umask to create/mkdir modes; ours must not
    # narrow them again (a 0664 file would become 0644).
    os.umask(0)
    _raise_fd_limit()
    lock = BackingLock(backing, mountpoint).acquire()
    try:
        ops = RealmfsOps(backing, PageCipher(key.raw), config.kind_of,
                         configmod.RESERVED_NAMES, read_only=read_only,
                         timeouts=tuple(float(options[name]) for name in TIMEOUTS))
        if not read_only:
            ops.sweep_hidden()
            decrypt_plain_named(backing, config, key)
        served = reqstats.wrap(ops)     # ops itself unless REALMFS_REQUEST_STATS asks for timing
        failure: list[BaseException] = []

        def run_fuse():
            # signals belong to the main thread, which unmounts cleanly on them
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
            try:
                FUSE(served, mountpoint, raw_fi=True, **options)
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                failure.append(error)

        stopping = threading.Event()
        mounted = threading.Event()

        def unmount_soon():
            threading.Thread(target=_unmount_self, args=(mountpoint,), daemon=True).start()

        def on_signal(signum, _frame):
            if stopping.is_set():
                return
            stopping.set()
            log.info("received %s: unmounting %s", signal.Signals(signum).name, mountpoint)
            if mounted.is_set():
                unmount_soon()          # else: done as soon as the mount is up

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, on_signal)

        thread = threading.Thread(target=run_fuse, name="fuse")
        thread.start()
        ready = _wait_until_mounted(mountpoint, thread)
        if not ready:
            if thread.is_alive():       # mounted too slowly to be trusted: take it down again
                _unmount_self(mountpoint)
                thread.join(30)
            raise MountFailed(f"FUSE could not mount {mountpoint}")
        mounted.set()
        status.send(ok=True, pid=os.getpid())
        log.info("mounted %s on %s (pid %d)", backing, mountpoint, os.getpid())
        if stopping.is_set():
            unmount_soon()
        while thread.is_alive():
            thread.join(0.5)
        if failure and not ops.destroyed:
            raise MountFailed(f"FUSE stopped with an error: {failure[0]}")
        log.info("unmounted %s from %s", backing, mountpoint)
        return 0
    finally:
        lock.release()


def _raise_fd_limit() -> None:
    """One backing fd per open file: allow as many as the hard limit (often 1024 soft)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _wait_until_mounted(mountpoint: str, thread: threading.Thread) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not thread.is_alive():
            return False
        if any(e.mountpoint == mountpoint for e in realmfs_mounts()):
            try:
                os.stat(mountpoint)        # answered by our own FUSE thread
                return True
            except OSError:
                pass
        time.sleep(0.02)
    return False


def _unmount_self(mountpoint: str) -> None:
    """Unmount as ``fusermount -u`` would; if busy, detach lazily and keep serving."""
    if detach(mountpoint, lazy=False) != 0:
        log.warning("%s is busy: detached lazily; open files are served until closed", mountpoint)
        detach(mountpoint, lazy=True)
