"""What a mount must pass before BACKING is touched, and the FUSE options it mounts with.

The launcher (``launcher.start``) runs these checks in the calling process so that a
refusal comes back with its own message and exit code before any daemon exists; the
daemon (``daemon.serve``) runs them again, since BACKING may have changed in between
and the daemon is also started on its own (``realmfs mount -f``).

FUSE options (see ``fuse_options``): the kernel page cache stays on, also across
opens (keep_cache per open, see fuseops; never direct_io, which breaks MAP_SHARED); no
POSIX-lock or flock handler is registered, so the kernel keeps fcntl/flock locks
itself, which is exact for every process using this mount; no ``hard_remove``: an
unlinked open file lives on as ``.fuse_hidden*`` (hidden from readdir, removed at last
close, swept at the next mount after a crash) so that fstat() on it works (the kernel
asks getattr by path); one request at a time (``-s``): no slower than libfuse's threads
for this Python daemon (measured), and it makes libfuse's hide-then-rename pair atomic
for every process using the mount.

Invariants: nothing here writes to BACKING (paths, key, plain Realm files, files nobody
encrypted and overlapping locks are only read), so a refused mount leaves BACKING as it
was; ``-o direct_io`` is refused, whoever passes it.
"""

from __future__ import annotations

import os

from ..keys import config as configmod
from ..storage import backingscan
from ..storage.backinglock import refuse_if_overlapping
from .mounttable import FSNAME_PREFIX, is_mountpoint
from ..errors import BadPath, NotRecognized
from ..keys.key import Key


def check_paths(backing: str, mountpoint: str) -> tuple[str, str]:
    """Absolute, resolved paths; BadPath for anything a mount cannot use."""
    configmod.require_directory(backing)
    backing = os.path.realpath(backing)
    try:
        os.stat(mountpoint)
    except FileNotFoundError:
        raise BadPath(f"mountpoint {mountpoint} does not exist; create it with mkdir") from None
    except OSError as error:
        if is_mountpoint(mountpoint):
            raise BadPath(f"mountpoint {mountpoint} is a disconnected mount ({error.strerror}); "
                          f"run 'realmfs unmount {mountpoint}' first") from None
        raise BadPath(f"mountpoint {mountpoint}: {error.strerror}") from None
    if not os.path.isdir(mountpoint):
        raise BadPath(f"mountpoint {mountpoint} is not a directory")
    mountpoint = os.path.realpath(mountpoint)
    if is_mountpoint(mountpoint):
        raise BadPath(f"mountpoint {mountpoint} is already a mount point")
    if os.listdir(mountpoint):
        raise BadPath(f"mountpoint {mountpoint} is not empty")
    if mountpoint == backing or mountpoint.startswith(backing + os.sep):
        raise BadPath(f"mountpoint {mountpoint} must not be inside the backing directory {backing}")
    return backing, mountpoint


def check_backing(backing: str, key: Key, mountpoint: str = "") -> configmod.Config:
    """Key, plain-file, unencrypted-file and lock checks (BACKING, and any held directory
    above or below it: see backinglock); writes nothing."""
    config = backingscan.open_backing_dir(backing, key)
    if not config.key_check:
        check_all_encrypted(backing, config)
    refuse_if_overlapping(backing)
    return config


def check_all_encrypted(backing: str, config: configmod.Config, shown: int = 3) -> None:
    """A directory without a config is a directory of Realm Core (or realmfs) files: refuse
    one that holds files nobody encrypted (the mount could only answer EIO for them)."""
    found = backingscan.unrecognized_files(backing, config)
    if found:
        names = ", ".join(os.path.relpath(p, backing) for p in found[:shown])
        more = f" and {len(found) - shown} more" if len(found) > shown else ""
        raise NotRecognized(f"{backing} has no realmfs config and holds files that are not encrypted "
                            f"({names}{more}): encrypt the directory into a new one with 'realmfs "
                            f"encrypt {backing} NEW' and mount that, or move them out (start a new "
                            "directory with 'realmfs init')")


def _escape_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,")


def fuse_options(backing: str, read_only: bool = False, extra: list[str] | None = None) -> dict:
    options = {
        "foreground": True,
        "nothreads": True,          # one request at a time: measured faster here, see the report
        "fsname": FSNAME_PREFIX + _escape_option(backing),
        "subtype": "realmfs",
        "big_writes": True,
        "max_write": 131072,
        # page cache kept across opens: set per open (keep_cache) by fuseops, which knows
        # when a file has other hard links; the mount-wide kernel_cache would override it
        "attr_timeout": 1,
        "entry_timeout": 1,
        "negative_timeout": 1,
        "default_permissions": True,
        "use_ino": True,
        # no hard_remove: libfuse keeps an unlinked or replaced open file under a
        # .fuse_hidden* name until its last close, so fstat() on it still works (the
        # kernel asks getattr by path). With one request at a time the hide-then-rename
        # pair is atomic for every process using the mount.
    }
    if read_only:
        options["ro"] = True
    for option in extra or []:
        for item in option.split(","):
            item = item.strip()
            if not item:
                continue
            if item == "direct_io":
                raise BadPath("-o direct_io is refused: it breaks shared writable mmap")
            if item == "threads":       # libfuse's multi-threaded loop (measured slower here)
                options["nothreads"] = False
                continue
            name, _, value = item.partition("=")
            options[name] = value if value else True
    return options
