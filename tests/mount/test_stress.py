"""Stress: seeded namespace and data operations on the mount and on a plain directory
end in the same tree (names, types, modes, sizes, contents, nlink), also after a remount.

* Concurrent: WORKERS processes at once in one tree, each with its own seed and its own
  names (stressops.py) in shared directories, so the final tree does not depend on the
  interleaving: what runs at once is the daemon's handling of one directory by several
  processes, open-file table, hidden names, hard links across directories.
* Deterministic: one process on names that concurrent workers would fight over (it
  renames and removes the shared directories too), where concurrency would make the
  trees differ legitimately; every operation's result must match as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.mount import stressops
from tests.mount.conftest import REPO

WORKERS = 4
OPS = 500


def _start(root: str, seed: int, prefix: str, count: int, own: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.mount.stressops", root, str(seed), prefix,
                             str(count), "1" if own else "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": REPO}, cwd=REPO)


def _results(procs: list[subprocess.Popen]) -> list:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out))
    return results


def _first_difference(mount: list, plain: list) -> str:
    for index, (got, want) in enumerate(zip(mount, plain)):
        if got != want:
            return f"operation {index}: mount {got}, plain {want}"
    return ""


def _on_both(mnt, tmp_path, run) -> list:
    """``run(root)`` on a fresh plain directory, then on the mount (each prepared alike),
    then the final trees compared, also after a remount; returns the two runs."""
    plain = str(tmp_path / "plain")
    os.mkdir(plain)
    runs = []
    for root in (plain, mnt.mountpoint):
        stressops.prepare(root)
        runs.append(run(root))
    expected = stressops.snapshot(plain)
    assert stressops.snapshot(mnt.mountpoint) == expected
    mnt.remount()
    assert stressops.snapshot(mnt.mountpoint) == expected
    return runs


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_concurrent_workers_end_in_the_same_tree(mnt, tmp_path, seed):
    def run(root):
        return _results([_start(root, seed * 100 + i, f"p{i}_", OPS, own=True) for i in range(WORKERS)])

    want, got = _on_both(mnt, tmp_path, run)
    for worker, (w, g) in enumerate(zip(want, got)):
        assert g == w, f"worker {worker}: {_first_difference(g, w)}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_process_on_shared_names_ends_in_the_same_tree(mnt, tmp_path, seed):
    want, got = _on_both(mnt, tmp_path, lambda root: stressops.worker(root, seed, "", 2 * OPS, False))
    assert got == want, _first_difference(got, want)
