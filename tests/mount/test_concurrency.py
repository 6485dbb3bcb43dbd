"""Several processes on one file with fcntl locks; SQLite and LMDB on the mount."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import lmdb
import pytest

from .conftest import slurp

WORKERS = 4
ITERATIONS = 60
RECORD = 32

WORKER = textwrap.dedent("""
    import fcntl, os, struct, sys
    path, me, iterations, record = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    fd = os.open(path, os.O_RDWR)
    for i in range(iterations):
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            count = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
            # every record so far must be intact: the file is what a sequential run made
            body = os.pread(fd, count * record, record)
            assert len(body) == count * record, (len(body), count)
            for n in range(count):
                assert body[n * record:(n + 1) * record].startswith(b"rec "), n
            line = (b"rec %d %d" % (me, i)).ljust(record, b" ")
            os.pwrite(fd, line, record + count * record)
            os.pwrite(fd, struct.pack("<Q", count + 1), 0)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        if i % 7 == 0:                               # readers under a shared lock
            fcntl.lockf(fd, fcntl.LOCK_SH)
            size = os.fstat(fd).st_size
            count = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
            assert size == record + count * record, (size, count)
            fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
""")


def test_processes_with_fcntl_locks_match_a_sequential_model(mnt):
    path = mnt.m("shared.log")
    with open(path, "wb") as f:
        f.write(bytes(RECORD))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, path, str(n), str(ITERATIONS), str(RECORD)],
                              stderr=subprocess.PIPE) for n in range(WORKERS)]
    errors = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            if proc.returncode:
                errors.append(err.decode()[-2000:])
    finally:        # a timeout must not leave workers holding files on the mount
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not errors, errors
    data = slurp(path)
    count = int.from_bytes(data[:8], "little")
    assert count == WORKERS * ITERATIONS
    assert len(data) == RECORD * (count + 1)
    seen: dict[int, list[int]] = {}
    for n in range(count):
        _rec, who, iteration = data[RECORD * (n + 1):RECORD * (n + 2)].split()
        seen.setdefault(int(who), []).append(int(iteration))
    assert seen == {w: list(range(ITERATIONS)) for w in range(WORKERS)}
    mnt.unmount()
    assert mnt.decrypt("shared.log") == data


FLOCKER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()
    fcntl.flock(fd, fcntl.LOCK_UN)
    print("unlocked", flush=True)
    sys.stdin.readline()
""")


def test_flock_between_processes(mnt):
    import fcntl
    path = mnt.m("flocked")
    with open(path, "wb"):
        pass
    other = subprocess.Popen([sys.executable, "-c", FLOCKER, path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    try:
        assert other.stdout.readline() == b"locked\n"
        fd = os.open(path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("flock granted while another process holds it")
            except BlockingIOError:
                pass
            other.stdin.write(b"\n")
            other.stdin.flush()
            assert other.stdout.readline() == b"unlocked\n"
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        other.stdin.close()
        other.wait()
        other.stdout.close()


SQLITE_READER = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], timeout=30)
    total = 0
    for _ in range(20):
        total = db.execute("select count(*) from t").fetchone()[0]
    print(total)
    db.close()
""")


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_workload(mnt, journal):
    path = mnt.m("app.db")
    db = sqlite3.connect(path, timeout=30)
    db.execute(f"pragma journal_mode={journal}")
    db.execute("create table t (id integer primary key, body text)")
    db.execute("create index t_body on t(body)")
    for batch in range(20):
        with db:
            db.executemany("insert into t (body) values (?)",
                           [(f"SQLITEMARKER row {batch}-{n} " + "x" * (n % 200),) for n in range(250)])
        if batch % 5 == 0:
            reader = subprocess.run([sys.executable, "-c", SQLITE_READER, path], capture_output=True)
            assert reader.returncode == 0, reader.stderr.decode()
            assert int(reader.stdout) >= (batch + 1) * 250
    with db:
        db.execute("delete from t where id % 3 = 0")
        db.execute("update t set body = body || ' updated' where id % 5 = 0")
    db.execute("vacuum")
    expected = db.execute("select id, body from t order by id").fetchall()
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    db.close()
    mnt.unmount()
    assert not mnt.backing_contains(b"SQLITEMARKER")
    mnt.mount()
    db = sqlite3.connect(path)
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert db.execute("select id, body from t order by id").fetchall() == expected
    db.close()


@pytest.mark.parametrize("writemap", [False, True])
def test_lmdb_workload(mnt, writemap):
    path = mnt.m("lmdb")
    os.mkdir(path)
    env = lmdb.open(path, map_size=64 << 20, writemap=writemap, max_dbs=2)
    expected = {}
    for batch in range(10):
        with env.begin(write=True) as txn:
            for n in range(300):
                key = b"key-%05d-%03d" % (batch, n)
                value = b"LMDBMARKER " + os.urandom(8).hex().encode() * (1 + n % 40)
                txn.put(key, value)
                expected[key] = value
        with env.begin(write=True) as txn:
            for n in range(0, 300, 7):
                key = b"key-%05d-%03d" % (batch, n)
                txn.delete(key)
                expected.pop(key)
    env.sync(True)
    with env.begin() as txn:
        assert dict(txn.cursor()) == expected
    env.close()
    mnt.unmount()
    assert not mnt.backing_contains(b"LMDBMARKER")
    mnt.mount()
    env = lmdb.open(path, map_size=64 << 20, readonly=True, lock=False)
    with env.begin() as txn:
        assert dict(txn.cursor()) == expected
    env.close()
