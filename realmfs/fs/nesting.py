"""``realmfs init`` never makes a backing directory inside another one.

A directory inside a backing directory is part of that directory's data: a mount of
the outer one writes its files under the outer key and counters, so a second
backing directory there would have two writers (and, mounted together, reuse IVs;
backinglock refuses that case at mount time). ``enclosing_backing`` finds the
nearest directory above a path that is one:

* it has a realmfs config, or
* it is held by a realmfs process (mounted, rekey, verify --repair), or
* it holds Realm Core ciphertext directly (a ``*.realm`` file of Realm Core's
  encrypted shape: a backing directory that was never initialised).

Invariants: paths are resolved first (a symlink cannot hide the parent); nothing
here writes; only each parent's own entries are read, never a whole tree.
"""

from __future__ import annotations

import fnmatch
import os

from ..keys import config as configmod
from ..storage.backinglock import is_locked
from ..errors import BackingLocked, BadPath
from ..format.layout import PAGE_SIZE
from ..format.detect import looks_like_realm_ciphertext


def _parents(path: str):
    parent = os.path.dirname(path)
    while parent != path:
        yield parent
        path, parent = parent, os.path.dirname(parent)


def _realm_ciphertext_in(directory: str) -> str | None:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return None
    for entry in entries:
        if not fnmatch.fnmatchcase(entry.name, configmod.DEFAULT_REALM_PATTERN):
            continue
        try:
            if (entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_size % PAGE_SIZE == 0
                    and looks_like_realm_ciphertext(entry.path)):
                return entry.path
        except OSError:
            continue
    return None


def enclosing_backing(path: str) -> tuple[str, str, bool] | None:
    """(directory, why, in use) for the nearest backing directory above ``path``, else None."""
    for directory in _parents(os.path.realpath(path)):
        owner = is_locked(directory)
        if owner is not None:
            return directory, f"it is in use by realmfs pid {owner.get('pid', '?')}", True
        if os.path.exists(configmod.config_path(directory)):
            return directory, f"it has a realmfs config ({configmod.CONFIG_NAME})", False
        found = _realm_ciphertext_in(directory)
        if found:
            return directory, f"it holds Realm Core ciphertext ({os.path.basename(found)})", False
    return None


def refuse_nested_init(path: str) -> None:
    """BadPath (BackingLocked if the outer one is in use) when ``path`` is inside a
    backing directory."""
    found = enclosing_backing(path)
    if found is None:
        return
    directory, why, in_use = found
    message = (f"{path} is inside the backing directory {directory} ({why}): its files would be "
               f"encrypted by two backing directories; choose a directory outside {directory}")
    raise (BackingLocked if in_use else BadPath)(message)
