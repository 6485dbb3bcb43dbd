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
* Backing directories never overlap while held: two holders of one directory and
  one below it would both write its files, and two daemons count IVs apart, so one
  (key, IV) would encrypt two plaintexts. ``overlapping_holder`` finds a holder of
  the directory itself, of any directory above it, or of any below it (by resolved
  paths); ``acquire`` checks again after winning its own flock, so of two holders
  that race, at least one sees the other and gives up.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import time

from ..keys.config import LOCK_NAME
from ..errors import BackingLocked, BadPath

log = logging.getLogger(__name__)


def lock_path(backing: str) -> str:
    return os.path.join(backing, LOCK_NAME)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not: it has exited and its flocks are released.
    Through psutil (already ours, for the busy-process check); engine/lockfile.py answers
    the same with the standard library alone (tests/unit/test_pid_alive_both.py pins both)."""
    import psutil       # here, not at import: most commands never ask

    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True     # /proc hides it (hidepid): psutil found it, so it exists


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


def unescape_mount_field(field: str) -> str:
    """A path field of /proc/self/mounts with its octal escapes (\\040 for a space) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_points() -> set[str]:
    try:
        with open("/proc/self/mounts") as f:
            return {unescape_mount_field(line.split()[1]) for line in f if len(line.split()) > 1}
    except OSError:
        return set()


def _list_dir(path: str) -> list[os.DirEntry] | None:
    """The entries of ``path`` without moving its atime (rekey keeps directory times;
    O_NOATIME needs owner or root, else a plain open); None if it cannot be listed."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, flags | os.O_NOATIME)
        except PermissionError:
            fd = os.open(path, flags)
    except OSError:
        return None
    try:
        with os.scandir(fd) as entries:
            return list(entries)
    except OSError:
        return None
    finally:
        os.close(fd)


def _held_below(backing: str):
    """(directory, owner) for held locks strictly below ``backing``. Symlinks are not
    followed (the daemon never follows one inside BACKING: the kernel resolves them at the
    mountpoint), and other mounts are not entered (another FUSE mount may not answer)."""
    mounts = _mount_points()
    pending = [backing]
    while pending:
        directory = pending.pop()
        entries = _list_dir(directory)
        for entry in entries or ():
            path = os.path.join(directory, entry.name)
            if entry.name == LOCK_NAME and directory != backing:
                owner = is_locked(directory)
                if owner is not None:
                    yield directory, owner
            elif entry.is_dir(follow_symlinks=False) and path not in mounts:
                pending.append(path)


def overlapping_holder(backing: str, *, include_self: bool = True,
                       below: bool = True) -> tuple[str, dict] | None:
    """A live holder (mount, rekey, verify --repair) of ``backing`` itself, of a directory
    above it or (``below``) of one below it, as (that directory, its owner info); else None."""
    backing = os.path.realpath(backing)
    above, parent = [], os.path.dirname(backing)
    while parent != (above[-1] if above else backing):
        above.append(parent)
        parent = os.path.dirname(parent)
    for directory in ([backing] if include_self else []) + above:
        owner = is_locked(directory)
        if owner is not None:
            return directory, owner
    return next(_held_below(backing), None) if below else None


def describe_holder(backing: str, directory: str, owner: dict | None) -> str:
    """One line naming who holds ``directory`` as seen from ``backing``, and what to do."""
    owner = owner or {}
    where = f" at {owner['mountpoint']}" if owner.get("mountpoint") else ""
    who = f"realmfs pid {owner.get('pid', '?')}{where}" if owner.get("pid") else "another realmfs"
    backing = os.path.realpath(backing)
    if directory == backing:
        what = f"{backing} is already mounted by {who}"
    else:
        relation = "inside" if directory.startswith(backing + os.sep) else "a parent of"
        what = (f"{directory}, {relation} {backing}, is mounted by {who}; backing directories "
                "must not overlap (both would write the same files and reuse IVs)")
    return what + "; unmount it first ('realmfs status' lists mounts)"


def refuse_if_overlapping(backing: str, *, include_self: bool = True, below: bool = True) -> None:
    """BackingLocked naming the other holder if ``backing`` overlaps a held directory."""
    found = overlapping_holder(backing, include_self=include_self, below=below)
    if found is not None:
        raise BackingLocked(describe_holder(backing, *found))


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
                    raise BackingLocked(describe_holder(self.backing, os.path.realpath(self.backing),
                                                        read_owner(self.backing))) from None
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
        try:
            self._write()
            # after our flock (and our name in the file): see the invariant on overlaps
            refuse_if_overlapping(self.backing, include_self=False)
        except BaseException:
            self._drop()
            raise
        if previous and previous.get("pid") and previous.get("pid") != self.owner["pid"]:
            log.warning("taking over a stale lock on %s left by realmfs pid %s (no longer running; "
                        "it was mounted at %s and may not have unmounted cleanly)",
                        self.backing, previous.get("pid"), previous.get("mountpoint", "?"))
        return self

    def _write(self) -> None:
        data = json.dumps(self.owner).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def release(self) -> None:
        if self.fd < 0:
            return
        self._drop()

    def _drop(self) -> None:
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
