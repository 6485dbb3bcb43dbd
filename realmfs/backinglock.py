"""The exclusive lock on a backing directory: one live realmfs daemon per BACKING.

``BACKING/.realmfs.lock`` is held with ``flock(LOCK_EX | LOCK_NB)`` by the daemon
for its whole life and carries JSON naming the owner (pid, mountpoint, backing,
start time) so that a refused mount and ``realmfs status`` can say who holds it.

Invariants
* The flock, not the file, is the lock: it dies with the process (even kill -9),
  so a file whose flock is free is stale whatever pid it names; taking it over
  logs one warning naming the dead owner.
* The fd is O_CLOEXEC: no child (fusermount, a shell) ever inherits the lock.
* After the flock is won, the path must still name the locked inode (a releasing
  owner unlinks the file); otherwise we retry, so two contenders never both win.
* Nothing here creates the file before the caller decided to mount: a refused
  mount (wrong key, bad path) leaves BACKING byte-for-byte unchanged.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time

from .config import LOCK_NAME
from .errors import BackingLocked, BadPath

log = logging.getLogger(__name__)


def lock_path(backing: str) -> str:
    return os.path.join(backing, LOCK_NAME)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes (its flocks are already released)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def read_owner(backing: str) -> dict | None:
    """The JSON a lock file holds, or None (no file, empty or unreadable)."""
    try:
        with open(lock_path(backing), "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    try:
        owner = json.loads(data)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def is_locked(backing: str) -> dict | None:
    """Owner info if a live process holds the lock of ``backing``, else None. Never creates."""
    try:
        fd = os.open(lock_path(backing), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return read_owner(backing) or {"pid": 0}
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _describe(owner: dict | None, backing: str) -> str:
    if not owner:
        return f"{backing} is already mounted by another realmfs"
    where = f" at {owner['mountpoint']}" if owner.get("mountpoint") else ""
    return f"{backing} is already mounted by realmfs pid {owner.get('pid', '?')}{where}"


class BackingLock:
    """Held lock on one backing directory; ``release()`` unlinks the file and closes."""

    def __init__(self, backing: str, mountpoint: str, pid: int | None = None):
        self.backing = backing
        self.path = lock_path(backing)
        self.fd = -1
        self.owner = {"pid": pid or os.getpid(), "mountpoint": mountpoint,
                      "backing": backing, "started": time.time()}

    def acquire(self) -> "BackingLock":
        for _attempt in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                raise BadPath(f"backing directory {self.backing} does not exist") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise BackingLocked(_describe(read_owner(self.backing), self.backing)
                                        + "; unmount it first ('realmfs status' lists mounts)") from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:       # the previous owner unlinked it while we waited: try again
                os.close(fd)
                continue
            self.fd = fd
            break
        else:
            raise BackingLocked(f"could not lock {self.path}: it keeps changing")
        previous = read_owner(self.backing)
        if previous and previous.get("pid") and previous.get("pid") != self.owner["pid"]:
            log.warning("taking over a stale lock on %s left by realmfs pid %s (no longer running; "
                        "it was mounted at %s and may not have unmounted cleanly)",
                        self.backing, previous.get("pid"), previous.get("mountpoint", "?"))
        self._write()
        return self

    def _write(self) -> None:
        data = json.dumps(self.owner).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.unlink(self.path)   # unlink while still holding: see the retry in acquire()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "BackingLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
