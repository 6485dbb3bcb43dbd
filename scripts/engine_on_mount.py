#!/usr/bin/env python3
"""Run the engine's own test suite, unchanged, with its databases on a realmfs mount.

Makes a fresh key and backing directory, mounts it, runs ``pytest tests/engine``
with ``ENGINE_TEST_DIR`` pointing into the mountpoint (the crash tests then kill
the engine while it commits on the mount), unmounts, and checks offline that
every backing file still verifies under the key. The mount is always unmounted,
even when the tests fail or are interrupted.

Usage: python3 scripts/engine_on_mount.py [pytest arguments]
Exit code: pytest's, or 1 if the backing directory fails verification afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from realmfs import api
from realmfs.keys import config  # noqa: E402
from realmfs.keys.key import Key  # noqa: E402


def verify_backing(backing: str, key: Key) -> bool:
    """Every page of every backing file authenticates (no torn or tampered page left)."""
    from realmfs.tools import verify
    report = verify.verify_path(backing, key)
    clean = not report.damaged
    for line in verify.format_report(report):
        if not clean:
            print(line)
    print(f"engine-on-mount: offline verify of the backing directory: {'clean' if clean else 'DAMAGE FOUND'}")
    return clean


def main(argv: list[str]) -> int:
    key = Key.generate()
    with tempfile.TemporaryDirectory(prefix="realmfs-engine-", dir="/var/tmp") as work:
        backing = os.path.join(work, "backing")
        mountpoint = os.path.join(work, "mnt")
        os.mkdir(backing)
        os.mkdir(mountpoint)
        config.create(backing, key)
        env = dict(os.environ, ENGINE_TEST_DIR=mountpoint)
        print(f"engine-on-mount: running tests/engine with ENGINE_TEST_DIR on a realmfs mount ({mountpoint})",
              flush=True)
        log_file = os.path.join(work, "daemon.log")     # goes with the work directory
        with api.mounted(backing, mountpoint, key, log_file=log_file):
            code = subprocess.call([sys.executable, "-m", "pytest", "tests/engine", "-p", "no:cacheprovider",
                                    *argv], cwd=REPO, env=env)
        if code:
            with open(log_file, errors="replace") as log:
                tail = log.readlines()[-40:]
            print("engine-on-mount: last lines of the daemon's log:\n" + "".join(tail), end="")
        if not verify_backing(backing, key):
            return code or 1
        return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
