"""Shared fixtures. Mount fixtures live in tests/mount/conftest.py.

Strict mode (realmfs/log.py): every realmfs daemon this suite starts, through any
fixture or the CLI, inherits ``$REALMFS_STRICT`` and appends each warning, error and
uncaught exception to one file. A test fails when records appeared while it ran (its
fixtures' unmounts included) that it did not declare with
``@pytest.mark.daemon_warnings("regex", ...)``: a test that provokes a warning on
purpose (tampering, a crash, a refused rename) says which.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import tempfile

import pytest

from realmfs.log import STRICT_ENV


@pytest.fixture(scope="session", autouse=True)
def strict_daemons():
    """The file every daemon of the session records its warnings and errors in; writable
    by the unprivileged user some mount tests run daemons as."""
    directory = tempfile.mkdtemp(prefix="realmfs-strict-")
    os.chmod(directory, 0o755)
    path = pathlib.Path(directory) / "daemon-records.log"
    path.touch()
    os.chmod(path, 0o666)
    previous = os.environ.get(STRICT_ENV)
    os.environ[STRICT_ENV] = str(path)
    yield path
    if previous is None:
        os.environ.pop(STRICT_ENV, None)
    else:
        os.environ[STRICT_ENV] = previous
    shutil.rmtree(directory, ignore_errors=True)


def daemon_records(path, start: int = 0) -> list[str]:
    """The records appended to ``path`` after byte ``start`` (continuation lines joined)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        f.seek(start)
        text = f.read()
    records: list[str] = []
    for line in text.splitlines():
        if line.startswith(" ") and records:
            records[-1] += "\n" + line
        elif line:
            records.append(line)
    return records


def undeclared(records: list[str], patterns) -> list[str]:
    compiled = [re.compile(p) for p in patterns]
    return [r for r in records if not any(p.search(r) for p in compiled)]


@pytest.fixture(autouse=True)
def no_undeclared_daemon_warnings(request, strict_daemons):
    start = os.path.getsize(strict_daemons)
    yield
    patterns = [p for marker in request.node.iter_markers("daemon_warnings") for p in marker.args]
    unexpected = undeclared(daemon_records(strict_daemons, start), patterns)
    if unexpected:
        pytest.fail("a realmfs daemon logged warnings or errors this test did not declare "
                    "(@pytest.mark.daemon_warnings):\n" + "\n".join(unexpected[:20]), pytrace=False)
