"""Files of an older format: a clear one-line error, and `python -m engine upgrade`.

The old file is made by the old code itself, taken from git history
(`git archive`) into a temporary directory and run in a subprocess, so no
binary is committed and the test exercises exactly what users have on disk.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import io

import pytest

import engine
from enginetest_support import REPO_ROOT, subprocess_env

OLD_VERSIONS = (2, 3)


def last_commit_writing(git, version: int) -> str:
    """The parent of the commit that introduced version + 1: the last whose engine wrote `version`."""
    found = subprocess.run([git, "-C", str(REPO_ROOT), "log", "--reverse", "--format=%H",
                            f"-SFORMAT_VERSION = {version + 1} ", "--", "engine/layout.py"],
                           capture_output=True, text=True, timeout=60)
    commits = found.stdout.split()
    if found.returncode or not commits:
        pytest.skip(f"the history of engine/layout.py is not in this clone ({found.stderr.strip()})")
    return commits[0] + "^"

MAKE_OLD_FILE = r"""
import datetime as dt, sys, engine
schema = {
    "Dog": {"name": "str primary_key", "age": "int index", "weight": "float?", "good": "bool",
            "chip": "bytes", "born": "datetime?", "tags": "list[str]", "owner": "str? index"},
    "Log": {"msg": "str", "level": "int? index"},
    "Acct": {"id": "int primary_key", "v": "int index", "pad": "str"},
}
db = engine.open(sys.argv[1], schema=schema)
with db.write() as tx:
    for i in range(300):
        tx.create("Dog", {"name": f"dog{i:03d}", "age": i % 7, "weight": None if i % 4 else i / 3,
                          "good": i % 2 == 0, "chip": bytes([i % 256]) * (i % 5),
                          "born": dt.datetime(2020, 1, 1 + i % 28, tzinfo=dt.timezone.utc) if i % 3 else None,
                          "tags": [f"t{j}" for j in range(i % 3)], "owner": None if i % 5 else f"o{i % 4}"})
    for i in range(50):
        tx.create("Log", {"msg": "m" * (i * 40), "level": None if i % 6 else i})
    for i in range(400):
        tx.create("Acct", {"id": i * 3 - 600, "v": i % 11, "pad": "p" * (i % 2000 if i % 50 == 0 else 10)})
with db.write() as tx:
    for i in range(0, 50, 4):
        tx.delete("Log", i + 1)
    for i in range(0, 300, 9):
        tx.update("Dog", f"dog{i:03d}", {"age": 99})
    tx.delete("Log", 50)          # next_id stays 51 after the upgrade
db.close()
"""


def old_engine(tmp_path, version: int):
    """A directory holding the engine package as it was when it wrote `version`."""
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs git and the repository history to rebuild the old engine")
    commit = last_commit_writing(git, version)
    archive = subprocess.run([git, "-C", str(REPO_ROOT), "archive", "--format=tar", commit, "engine"],
                             capture_output=True, timeout=60)
    if archive.returncode:
        pytest.skip(f"commit {commit[:12]} is not in this clone: {archive.stderr.decode().strip()}")
    target = tmp_path / f"engine-v{version}"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target)
    return target


def run_with(code_dir, *args):
    env = dict(os.environ, PYTHONPATH=str(code_dir))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=str(code_dir), timeout=120)


def dump_all(code_dir, path) -> dict:
    out = {}
    for name in ("Dog", "Log", "Acct"):
        result = run_with(code_dir, "-m", "engine", "dump", path, name)
        assert result.returncode == 0, result.stderr
        out[name] = [json.loads(line) for line in result.stdout.splitlines()]
    return out


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_old_file_is_refused_in_one_line_and_upgrades(db_dir, tmp_path, version):
    old_code = old_engine(tmp_path, version)
    old_path = str(db_dir / "old.db")
    made = run_with(old_code, "-c", MAKE_OLD_FILE, old_path)
    assert made.returncode == 0, made.stderr
    expected = dump_all(old_code, old_path)
    assert len(expected["Dog"]) == 300 and len(expected["Acct"]) == 400
    with open(old_path, "rb") as f:
        before = f.read()

    with pytest.raises(engine.UnsupportedVersionError) as info:
        engine.open(old_path)
    message = str(info.value)
    assert "\n" not in message and f"version {version}" in message and "python -m engine upgrade" in message
    cli = subprocess.run([sys.executable, "-m", "engine", "info", old_path], capture_output=True, text=True,
                         env=subprocess_env(), timeout=60)
    assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1 and "upgrade" in cli.stderr

    new_path = str(db_dir / "new.db")
    result = subprocess.run([sys.executable, "-m", "engine", "upgrade", old_path, new_path],
                            capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    with open(old_path, "rb") as f:
        assert f.read() == before, "upgrade must not touch the old file"
    assert dump_all(REPO_ROOT, new_path) == expected
    with engine.open(new_path) as db:
        assert db.verify() == []
        with db.read() as snap:
            assert snap.objects("Dog").filter(age=99).count() == 34
            assert snap.objects("Log").filter(level=None).count() == len(
                [o for o in expected["Log"] if o["level"] is None])
        with db.write() as tx:
            assert tx.create("Log", {"msg": "after"}) == 51
    again = subprocess.run([sys.executable, "-m", "engine", "upgrade", old_path, new_path],
                           capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert again.returncode == 1 and "already exists" in again.stderr
