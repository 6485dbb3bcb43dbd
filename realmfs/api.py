"""Python API for scripts and tests: ``with realmfs.mounted(backing, mountpoint, key) as m: ...``.

The mount is a real daemon process (the same one ``realmfs mount`` starts), so the
calling process can use the mountpoint freely, even from several threads. Leaving
the block unmounts and waits until the daemon has sealed (every backing file
fsynced); if files under the mountpoint are still open, the mount is detached
lazily and Busy is raised naming the holders.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

from .fs import launcher, unmounting
from .errors import Busy
from .keys.key import Key, parse_key


def _as_key(key) -> Key:
    if isinstance(key, Key):
        return key
    return parse_key(key, "key")


@dataclass
class Mount:
    backing: str
    mountpoint: str
    pid: int
    log_file: str
    active: bool = True

    def path(self, *parts: str) -> str:
        """A path inside the mount."""
        return os.path.join(self.mountpoint, *parts)

    def unmount(self, lazy: bool = False) -> None:
        if not self.active:
            return
        try:
            unmounting.unmount(self.mountpoint, lazy=lazy)
        except Busy:
            if lazy:
                raise
            unmounting.unmount(self.mountpoint, lazy=True)
            self.active = False
            raise
        self.active = False


@contextmanager
def mounted(backing: str, mountpoint: str, key, *, read_only: bool = False,
            options: list[str] | None = None, log_file: str | None = None, debug: bool = False):
    """Mount ``backing`` on ``mountpoint`` for the duration of the block."""
    started = launcher.start(backing, mountpoint, _as_key(key), read_only=read_only,
                             extra_options=options, log_file=log_file, debug=debug)
    handle = Mount(started.backing, started.mountpoint, started.pid, started.log_file)
    try:
        yield handle
    finally:
        handle.unmount()
