"""The durability contract (docs/mount.md, issue 12 item 3), proved by killing the daemon.

What an application made durable -- fsync of a plain file, a SQLite commit
(synchronous=FULL), an LMDB commit, an engine commit -- is in the backing directory when
the call returns and survives ``kill -9`` of the daemon. A writer process commits in a
loop and prints each commit number once the call that made it durable has returned; the
daemon is killed at a random moment; then, with the mount gone, every backing page must
authenticate (verify; a write the kill cut short reads as its previous version), and after a remount every acknowledged commit must be there with
its database consistent. The next round writes on that same mount.

The other half: without the writeback cache (the default) a plain ``write()`` reaches
the backing file before it returns, so even unsynced writes survive the daemon; with it
they may be lost as on a power cut.

Default tier: a few kills per workload. ``slow``: 50 per workload, 200 in all.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from realmfs.fs import fusermount
from realmfs.tools import verify

from .conftest import REPO, kill_daemon

RECORD = 100            # bytes per fsync'd record of the plain-file workload

WRITER = textwrap.dedent(r"""
    import os, sys
    workload, path, record = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def ack(i):
        os.write(1, b"C%d\n" % i)

    if workload == "fsync":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # a record the kill cut short was never acknowledged: drop it, as a log's recovery would
        i = os.fstat(fd).st_size // record
        os.ftruncate(fd, i * record)
        os.write(1, b"go\n")
        while True:
            i += 1
            os.write(fd, (b"R%09d|" % i).ljust(record, b"."))
            os.fsync(fd)
            ack(i)
    elif workload == "sqlite":
        import sqlite3
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS t (txn INTEGER, n INTEGER, pad BLOB)")
        i = db.execute("SELECT coalesce(max(txn), 0) FROM t").fetchone()[0]
        os.write(1, b"go\n")
        while True:
            i += 1
            db.execute("BEGIN")
            db.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, n, os.urandom(300)) for n in range(10)])
            db.execute("COMMIT")
            ack(i)
    elif workload == "lmdb":
        import lmdb
        env = lmdb.open(path, map_size=256 << 20, subdir=True)      # sync and metasync: durable commits
        with env.begin() as txn:
            last = txn.get(b"last")
        i = int(last) if last else 0
        os.write(1, b"go\n")
        while True:
            i += 1
            with env.begin(write=True) as txn:
                for n in range(10):
                    txn.put(b"k%09d-%d" % (i, n), os.urandom(300))
                txn.put(b"last", b"%d" % i)
            ack(i)
    elif workload == "engine":
        import engine
        schema = {"Row": {"id": "int primary_key", "txn": "int", "pad": "str"}}
        db = engine.open(path, schema=schema)
        with db.read() as snap:
            i = max((obj["txn"] for obj in snap.objects("Row")), default=0)
        os.write(1, b"go\n")
        while True:
            i += 1
            with db.write() as tx:
                for n in range(10):
                    tx.create("Row", {"id": i * 10 + n, "txn": i, "pad": "p" * 300})
            ack(i)
""")

PATHS = {"fsync": "log.bin", "sqlite": "db.sqlite", "lmdb": "lmdb", "engine": "data.realm"}


# ------------------------------------------------------------------ what survived
def survived_fsync(path: str) -> int:
    """Whole records in order; a trailing part of one is a write the kill cut short (never
    acknowledged, so either outcome is allowed)."""
    with open(path, "rb") as f:
        data = f.read()            # EIO would raise: every page must read
    whole = len(data) // RECORD
    for i in range(1, whole + 1):
        assert data[(i - 1) * RECORD:i * RECORD] == (b"R%09d|" % i).ljust(RECORD, b"."), i
    return whole


def survived_sqlite(path: str) -> int:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        last, rows = db.execute("SELECT coalesce(max(txn), 0), count(*) FROM t").fetchone()
        assert rows == 10 * last, "a commit is there only in part"
        return last
    finally:
        db.close()


def survived_lmdb(path: str) -> int:
    import lmdb
    env = lmdb.open(path, map_size=256 << 20, subdir=True, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            last = int(txn.get(b"last") or 0)
            keys = sum(1 for key in txn.cursor().iternext(values=False) if key.startswith(b"k"))
        assert keys == 10 * last, "a commit is there only in part"
        return last
    finally:
        env.close()


def survived_engine(path: str) -> int:
    import engine
    db = engine.open(path)
    try:
        assert db.verify() == []
        with db.read() as snap:
            txns = [obj["txn"] for obj in snap.objects("Row")]
        last = max(txns, default=0)
        assert sorted(txns) == sorted(t for t in range(1, last + 1) for _ in range(10))
        return last
    finally:
        db.close()


SURVIVED = {"fsync": survived_fsync, "sqlite": survived_sqlite, "lmdb": survived_lmdb,
            "engine": survived_engine}


# ------------------------------------------------------------------ one round
def _writer(env, workload: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, workload, env.m(PATHS[workload]), str(RECORD)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": REPO}, cwd=REPO)


def kill_round(env, workload: str, delay: float) -> int:
    """Start the writer, kill the daemon ``delay`` s after it began committing; returns
    the last commit the writer acknowledged. The mount is gone afterwards."""
    writer = _writer(env, workload)
    try:
        first = writer.stdout.readline()
        assert first == b"go\n", writer.stderr.read().decode()[-2000:]
        time.sleep(delay)
        kill_daemon(env.current.pid)
        try:
            writer.wait(timeout=30)         # its next call fails: the connection is gone
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.wait()
        acks = writer.stdout.read().split()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
        writer.stderr.close()
    env.forget_mount()
    fusermount.unmount(env.mountpoint, check=True)
    return max((int(a[1:]) for a in acks if a.startswith(b"C")), default=0)


def every_backing_page_authenticates(env) -> None:
    """No page that a read would fail on. A page the kill caught between its data and its
    IV entry is allowed: it reads as its previous version (a torn write, the case Realm
    Core's two IV slots exist for), and was never acknowledged."""
    report = verify.verify_path(env.backing, env.key)
    damaged = [str(p) for p in report.problems if p.severity >= verify.Severity.DAMAGE]
    assert damaged == []


def run_kills(env, workload: str, kills: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    env.mount()
    history = []
    for _ in range(kills):
        acked = kill_round(env, workload, rng.uniform(0.02, 0.6))
        every_backing_page_authenticates(env)
        env.mount()                         # the stale lock is taken over
        found = SURVIVED[workload](env.m(PATHS[workload]))
        assert found >= acked, f"acknowledged commit {acked} lost: {found} survived"
        history.append((acked, found))
    env.unmount()
    assert any(acked for acked, _found in history), "the writer never committed: nothing was tested"
    return history


WORKLOADS = ["fsync", "sqlite", "lmdb", "engine"]


@pytest.mark.daemon_warnings(r"taking over a stale lock", r"removed \d+ unlinked-but-open")
@pytest.mark.parametrize("workload", WORKLOADS)
def test_acknowledged_commits_survive_kill_9_of_the_daemon(env, workload):
    run_kills(env, workload, kills=3, seed=WORKLOADS.index(workload))


@pytest.mark.slow
@pytest.mark.daemon_warnings(r"taking over a stale lock", r"removed \d+ unlinked-but-open")
@pytest.mark.parametrize("workload", WORKLOADS)
def test_acknowledged_commits_survive_50_kills_each(env, workload):
    history = run_kills(env, workload, kills=50, seed=100 + WORKLOADS.index(workload))
    assert len(history) == 50


@pytest.mark.daemon_warnings(r"taking over a stale lock")
def test_without_the_writeback_cache_even_unsynced_writes_survive_the_daemon(env):
    """The default mount has no writeback cache: write() returns after the daemon wrote the
    backing file, so a kill -9 right after loses nothing, synced or not."""
    env.mount()
    data = os.urandom(3 * 4096 + 123)
    fd = os.open(env.m("unsynced.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        kill_daemon(env.current.pid)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass                    # ENOTCONN: the daemon is gone
    env.forget_mount()
    fusermount.unmount(env.mountpoint, check=True)
    every_backing_page_authenticates(env)
    assert env.decrypt("unsynced.bin") == data
