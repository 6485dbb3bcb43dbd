"""Unmounting from outside the daemon: ``unmount()`` refuses while busy, else unmounts and
waits for the daemon to seal; ``detach()`` is the one unmount call, shared with the daemon.

Invariants: a busy mount is refused naming its holders (processes with an open file,
mapping or cwd under it) unless ``lazy``; a non-lazy ``unmount()`` returns only once the
daemon has exited, i.e. sealed (or raises MountFailed naming its pid); a mount whose
daemon died is only detached (``entry.daemon_gone``): nothing can seal it, and the pid
in its lock file may belong to another process by now.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time

from . import fusermount
from ..storage.backinglock import pid_alive, read_owner
from .mounttable import MountEntry, daemon_gone, find_mount, holders
from ..errors import BadPath, Busy, MountFailed

log = logging.getLogger(__name__)

UNMOUNT_TIMEOUT = 60.0


def unmount(mountpoint: str, *, lazy: bool = False, timeout: float = UNMOUNT_TIMEOUT) -> MountEntry:
    """Refuse if busy (naming the holders), else unmount and wait for the daemon to seal.
    A mount whose daemon died is only detached (``entry.daemon_gone``): nothing can seal it."""
    entry = find_mount(mountpoint)
    if entry is None:
        if not os.path.exists(mountpoint):
            raise BadPath(f"{mountpoint} does not exist")
        raise BadPath(f"{mountpoint} is not a realmfs mount ('realmfs status' lists them)")
    entry.daemon_gone = daemon_gone(entry)
    owner = read_owner(entry.backing) or {}
    pid = 0 if entry.daemon_gone else int(owner.get("pid") or 0)   # a dead pid may be reused
    if not lazy:
        busy = holders(entry.mountpoint, exclude={pid})
        if busy:
            names = ", ".join(f"pid {h.pid} ({h.name}: {h.what})" for h in busy[:5])
            more = f" and {len(busy) - 5} more" if len(busy) > 5 else ""
            raise Busy(f"{entry.mountpoint} is busy: {names}{more}; close them, or use --lazy to detach anyway")
    if detach(entry.mountpoint, lazy) != 0:
        if not lazy and find_mount(entry.mountpoint) is not None:
            busy = holders(entry.mountpoint, exclude={pid})
            names = ", ".join(f"pid {h.pid} ({h.name})" for h in busy[:5]) or "unknown processes"
            raise Busy(f"{entry.mountpoint} is busy ({names}); close them, or use --lazy to detach anyway")
    if pid and not lazy:
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(pid):
            raise MountFailed(f"unmounted {entry.mountpoint}, but daemon pid {pid} is still sealing "
                              f"after {timeout:.0f}s; see its log")
    return entry


# A file closed just before an unmount keeps the mount busy for a moment: the kernel holds
# it until the daemon has answered that file's RELEASE, which is sent after close() returns
# (seen as a spurious lazy detach in about 1 of 20 Ctrl-C's right after a write). A refused
# unmount is tried again after these pauses before the caller hears "busy".
BUSY_RETRY_PAUSES = (0.05, 0.1, 0.2, 0.4)


def detach(mountpoint: str, lazy: bool) -> int:
    """``fusermount -u`` (``-uz`` if lazy), or ``umount`` where no fusermount is installed
    (root needs none); its exit code, never raised on. A refused non-lazy unmount is retried
    for up to 0.75 s (BUSY_RETRY_PAUSES)."""
    for pause in (() if lazy else BUSY_RETRY_PAUSES) + (None,):
        try:
            result = fusermount.unmount(mountpoint, lazy=lazy)
        except FileNotFoundError:
            result = subprocess.run(["umount"] + (["-l"] if lazy else []) + [mountpoint],
                                    capture_output=True, text=True)
        if result.returncode == 0 or pause is None:
            break
        time.sleep(pause)
    if result.returncode:
        log.debug("unmount %s (lazy=%s): %s", mountpoint, lazy, result.stderr.strip())
    return result.returncode
