"""POSIX metadata on the mount against ext4 (issue 10 items 3-6).

Each scenario of posixops.py runs on the mount and on a plain directory of this
machine's disk, in a process of its own, and both must observe the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.mount.conftest import REPO


def run_scenario(name: str, root: str, env: dict | None = None, **popen) -> dict:
    result = subprocess.run([sys.executable, "-m", "tests.mount.posixops", name, root],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": REPO, **(env or {})}, cwd=REPO, **popen)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def differences(mount: dict, plain: dict) -> dict:
    return {key: (mount.get(key), plain.get(key)) for key in plain.keys() | mount.keys()
            if mount.get(key) != plain.get(key)}


def test_long_paths_and_name_max_names_work_as_on_ext4(mnt, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    expected = run_scenario("long_paths", str(plain))
    assert expected["create"] == 5000 and expected["deep_stat"][0][2] == 2    # the oracle did it all
    assert differences(run_scenario("long_paths", mnt.mountpoint), expected) == {}
