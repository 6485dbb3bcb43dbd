"""One writer process and several reader processes on the same file: every
snapshot satisfies the bank invariant, readers never go back in time, and all
of them eventually see the final commit."""

import json
import subprocess
import sys
import time
from pathlib import Path

import engine
from engine.lockfile import LockFile
from enginetest_support import subprocess_env
import mp_worker

WORKER = str(Path(__file__).with_name("mp_worker.py"))
READERS = 3
TRANSFERS = 400


def seed_bank(path: str):
    with engine.open(path, schema=mp_worker.SCHEMA) as db, db.write() as tx:
        for acct in range(mp_worker.ACCOUNTS):
            tx.create("Acct", {"id": acct, "balance": mp_worker.INITIAL})
        tx.create("Meta", {"name": "m", "txn": 0, "done": False})


def spawn(*args):
    return subprocess.Popen([sys.executable, WORKER, *map(str, args)], env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_readers_see_consistent_snapshots_and_the_latest_commit(db_dir):
    path = str(db_dir / "bank.db")
    seed_bank(path)
    procs = []
    try:
        procs = [spawn("reader", path, 90) for _ in range(READERS)]
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        writer = spawn("writer", path, TRANSFERS)
        procs.append(writer)
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        for proc in procs[:READERS]:
            out, err = proc.communicate(timeout=120)
            result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err}
            assert result.get("ok"), result
            assert result["last_txn"] == TRANSFERS
            assert result["snapshots"] > 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    with engine.open(path) as db:
        assert db.verify() == []
        with db.read() as snap:
            assert sum(o["balance"] for o in snap.objects("Acct")) == mp_worker.ACCOUNTS * mp_worker.INITIAL


def test_a_reader_slot_in_use_is_never_claimed_by_another_process(db_dir):
    """The race behind "page N is not a valid tree node" in the test above: a slot
    being republished must never look free to a process claiming one (two
    snapshots in one slot: when one ends, the other is unregistered and the
    writer reuses its pages).  Fails within milliseconds on the old code, whose
    struct.pack_into zero-filled the slot before rewriting it."""
    path = str(db_dir / "slots.db")
    seed_bank(path)
    other = spawn("republish", path, 30)
    try:
        line = other.stdout.readline().split()
        assert line and line[0] == "ready", other.stderr.read()
        taken = int(line[1])
        lock = LockFile(path)
        try:
            claims, deadline = 0, time.monotonic() + 1.0
            while time.monotonic() < deadline:
                index = lock.claim_reader_slot()
                lock.release_reader_slot(index)
                claims += 1
                assert index != taken, f"claimed the other process's live slot after {claims} claims"
        finally:
            lock.close()
        assert other.poll() is None, other.stderr.read()      # it held its slot throughout
        assert claims > 100
    finally:
        if other.poll() is None:
            other.kill()
            other.communicate()


def test_opening_while_another_process_commits(db_dir):
    """Opening checks the newest commit's pages and reads its catalog; a writer
    in another process may commit twice meanwhile and reuse those pages unless
    the opener is registered as a reader while it checks."""
    path = str(db_dir / "churn.db")
    seed_bank(path)
    writer = spawn("churn", path, 30)
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        deadline, opened = time.monotonic() + 2.0, 0
        while time.monotonic() < deadline:
            with engine.open(path) as db:
                opened += 1
        assert writer.poll() is None, writer.stderr.read()
        assert opened > 10
    finally:
        writer.kill()
        writer.communicate()
    with engine.open(path) as db:
        assert db.verify() == []


def test_snapshot_in_other_process_pins_pages_and_dead_reader_is_reclaimed(db_dir):
    path = str(db_dir / "pin.db")
    seed_bank(path)
    holder = spawn("hold", path)
    try:
        line = holder.stdout.readline().split()
        assert line and line[0] == "ready", holder.stderr.read()
        held_txn = int(line[1])
        with engine.open(path) as db:
            assert db.stats()["oldest_snapshot"] == held_txn
            start_size = Path(path).stat().st_size
            for i in range(200):
                with db.write() as tx:
                    tx.update("Acct", i % mp_worker.ACCOUNTS, {"history": list(range(i % 50))})
            pinned_size = Path(path).stat().st_size
            assert pinned_size > start_size          # nothing the snapshot sees was reused
            assert db.stats()["oldest_snapshot"] == held_txn
            holder.kill()
            holder.communicate()
            assert db.stats()["live_snapshots"] == 0     # dead pid's slot no longer counts
            for i in range(400):
                with db.write() as tx:
                    tx.update("Acct", i % mp_worker.ACCOUNTS, {"history": list(range(i % 50))})
            assert Path(path).stat().st_size <= pinned_size   # freed pages were reused
            assert db.verify() == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
