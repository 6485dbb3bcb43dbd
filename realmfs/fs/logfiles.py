"""The daemons' default logs in the runtime directory (/run/realmfs): named, and kept bounded.

Each backing directory gets one log, ``<basename>-<12 hex of sha256(realpath)>.log``,
rotated by log.py at 4 MiB with two old ones (``.log.1``, ``.log.2``). Its first line
names the backing directory (``HEAD_PREFIX`` + path), so that ``prune`` can tell when
the directory is gone. Without pruning, every backing directory ever mounted would
leave its log behind for good.

``prune`` (run by each mount that uses a default log) removes a log with its rotated
copies when its backing directory no longer exists, when it was last written more
than ``MAX_AGE_DAYS`` ago, and, past ``MAX_LOGS``, the least recently written ones.

Invariants: only names of this form in that one directory are ever removed; never the
logs in ``keep`` (the mount starting and every backing mounted now).
"""

from __future__ import annotations

import hashlib
import os
import re
import time

HEAD_PREFIX = "realmfs: log of backing directory "
MAX_AGE_DAYS = 30
MAX_LOGS = 32
_NAME = re.compile(r"^(?P<base>.*-[0-9a-f]{12}\.log)(?:\.\d+)?$")


def log_name(backing: str) -> str:
    """The default log's file name for ``backing``: readable, and unique per real path."""
    real = os.path.realpath(backing)
    tag = hashlib.sha256(real.encode()).hexdigest()[:12]
    return f"{os.path.basename(real) or 'root'}-{tag}.log"


def head_line(backing: str) -> str:
    """The first line of every log file of ``backing`` (also after each rotation)."""
    return f"{HEAD_PREFIX}{os.path.realpath(backing)}"


def write_head(log_file: str, backing: str) -> None:
    """Start a new (empty) log with the line that names its backing directory."""
    if not os.path.exists(log_file) or os.path.getsize(log_file) == 0:
        with open(log_file, "a") as f:
            f.write(head_line(backing) + "\n")


def _backing_of(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            first = f.readline(4096).decode(errors="replace").rstrip("\n")
    except OSError:
        return None
    return first[len(HEAD_PREFIX):] if first.startswith(HEAD_PREFIX) else None


def prune(directory: str, keep: set[str] = frozenset(), now: float | None = None) -> list[str]:
    """Remove stale logs from ``directory`` (see the module docstring); returns the removed paths."""
    now = time.time() if now is None else now
    groups: dict[str, list[str]] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        match = _NAME.match(name)
        if match:
            groups.setdefault(os.path.join(directory, match["base"]), []).append(os.path.join(directory, name))
    keep = {os.path.abspath(path) for path in keep}
    written = {}
    for base, paths in groups.items():
        try:
            written[base] = max(os.stat(p).st_mtime for p in paths)
        except OSError:
            written[base] = now
    doomed = []
    for base in sorted(groups, key=lambda b: written[b], reverse=True):    # newest first
        if base in keep:
            continue
        backing = _backing_of(base)
        gone = backing is not None and not os.path.isdir(backing)
        old = now - written[base] > MAX_AGE_DAYS * 86400
        if gone or old:
            doomed.append(base)
    survivors = [b for b in sorted(groups, key=lambda b: written[b], reverse=True)
                 if b not in doomed]
    extra = len(survivors) - MAX_LOGS
    if extra > 0:
        doomed += [b for b in reversed(survivors) if b not in keep][:extra]
    removed = []
    for base in doomed:
        for path in groups[base]:
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed
