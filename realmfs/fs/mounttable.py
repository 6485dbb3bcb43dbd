"""Who is mounted where, and who holds a mount busy: read from /proc, never from the mount.

* ``realmfs_mounts()``: realmfs mounts from /proc/self/mounts (type ``fuse.realmfs``,
  source ``realmfs:BACKING``, set by the daemon's fsname/subtype options).
* ``holders()``: processes with a cwd, root, open file or mapping under a mountpoint
  (what makes an unmount busy), named for the user.
* ``status()``: one row per mount for ``realmfs status``.

Invariants: nothing here touches a path under a mountpoint (a dead mount would hang
or fail), only /proc and BACKING's lock file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..keys import config as configmod
from ..storage.backinglock import is_locked, pid_alive, read_owner
from ..storage.backinglock import unescape_mount_field as _unescape

FSNAME_PREFIX = "realmfs:"
FSTYPE = "fuse.realmfs"


@dataclass
class MountEntry:
    backing: str
    mountpoint: str
    options: str
    daemon_gone: bool = False     # set by unmounting.unmount: it detached a dead mount


def daemon_gone(entry: MountEntry) -> bool:
    """A mount whose daemon died (kill -9, a crash): nobody holds BACKING's lock for it.
    The daemon holds the flock for its whole life; the kernel drops it with the process."""
    owner = is_locked(entry.backing)
    return owner is None or owner.get("mountpoint", entry.mountpoint) != entry.mountpoint


def realmfs_mounts(mounts_file: str = "/proc/self/mounts") -> list[MountEntry]:
    entries = []
    with open(mounts_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 4 or parts[2] != FSTYPE:
                continue
            source = _unescape(parts[0])
            if not source.startswith(FSNAME_PREFIX):
                continue
            backing = source[len(FSNAME_PREFIX):].replace("\\,", ",").replace("\\\\", "\\")
            entries.append(MountEntry(backing, _unescape(parts[1]), parts[3]))
    return entries


def is_mountpoint(path: str) -> bool:
    """True for any mount at ``path`` (also a dead FUSE mount, which stat cannot see)."""
    path = os.path.abspath(path)
    with open("/proc/self/mounts") as f:
        return any(_unescape(line.split()[1]) == path for line in f if line.strip())


def find_mount(mountpoint: str) -> MountEntry | None:
    """The realmfs mount at ``mountpoint``. The plain path is tried first: resolving it
    (symlinks in the way) stats the mountpoint, which a wedged daemon never answers."""
    by_path = {entry.mountpoint: entry for entry in realmfs_mounts()}
    entry = by_path.get(os.path.abspath(mountpoint))
    if entry is None:
        try:
            entry = by_path.get(os.path.realpath(mountpoint))
        except OSError:
            pass
    return entry


@dataclass
class Holder:
    pid: int
    name: str
    what: str


def holders(mountpoint: str, exclude: set[int] = frozenset()) -> list[Holder]:
    """Processes with a cwd, root, open file or mapping under ``mountpoint``."""
    import psutil
    prefix = mountpoint.rstrip("/") + "/"
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        pid = proc.info["pid"]
        if pid in exclude or pid == os.getpid():
            continue
        what = _holds(pid, mountpoint, prefix)
        if what:
            found.append(Holder(pid, proc.info["name"] or "?", what))
    return found


def _under(path: str, mountpoint: str, prefix: str) -> bool:
    path = path.removesuffix(" (deleted)")
    return path == mountpoint or path.startswith(prefix)


def _holds(pid: int, mountpoint: str, prefix: str) -> str:
    base = f"/proc/{pid}"
    try:
        for link, what in (("cwd", "working directory"), ("root", "root directory")):
            if _under(os.readlink(f"{base}/{link}"), mountpoint, prefix):
                return what
        for fd in os.listdir(f"{base}/fd"):
            try:
                target = os.readlink(f"{base}/fd/{fd}")
            except OSError:
                continue
            if _under(target, mountpoint, prefix):
                return f"open file {target}"
        with open(f"{base}/maps") as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) == 6 and _under(parts[5].strip(), mountpoint, prefix):
                    return f"mapped file {parts[5].strip()}"
    except OSError:
        return ""
    return ""


# ---------------------------------------------------------------------- status
def open_backing_files(pid: int, backing: str) -> int:
    prefix = backing.rstrip("/") + "/"
    lock = os.path.join(backing, configmod.LOCK_NAME)
    count = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix) and target != lock:
                count += 1
    except OSError:
        return 0
    return count


def status() -> list[dict]:
    rows = []
    for entry in realmfs_mounts():
        owner = read_owner(entry.backing) or {}
        pid = int(owner.get("pid") or 0)
        alive = pid_alive(pid)
        started = owner.get("started")
        rows.append({
            "backing": entry.backing, "mountpoint": entry.mountpoint, "pid": pid if alive else None,
            "uptime": (time.time() - started) if (alive and started) else None,
            "open_files": open_backing_files(pid, entry.backing) if alive else 0,
            "state": "mounted" if alive else "disconnected (daemon gone: run 'realmfs unmount')",
            "read_only": "ro" in entry.options.split(","),
        })
    return rows
