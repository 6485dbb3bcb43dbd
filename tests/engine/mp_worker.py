"""Worker processes for test_multiprocess.py (run as scripts, not collected).

    python mp_worker.py writer PATH TRANSFERS
    python mp_worker.py reader PATH TIMEOUT
    python mp_worker.py hold PATH          (opens a snapshot, prints 'ready', sleeps)
    python mp_worker.py churn PATH SECONDS  (small commits, durability none, for SECONDS)
    python mp_worker.py republish PATH SECONDS  (claims a reader slot, prints its index,
                                           then publishes txnids into it for SECONDS)

The bank invariant: ACCOUNTS accounts, total balance constant in every commit.
"""

import json
import random
import sys
import time

import engine

ACCOUNTS = 20
INITIAL = 100
SCHEMA = {"Acct": {"id": "int primary_key", "balance": "int index", "history": "list[int]"},
          "Meta": {"name": "str primary_key", "txn": "int", "done": "bool"}}


def writer(path: str, transfers: int):
    db = engine.open(path, schema=SCHEMA)
    rng = random.Random(7)
    for i in range(1, transfers + 1):
        a, b = rng.sample(range(ACCOUNTS), 2)
        amount = rng.randint(1, 50)
        try:
            with db.write() as tx:
                src, dst = tx.get("Acct", a), tx.get("Acct", b)
                tx.update("Acct", a, {"balance": src["balance"] - amount,
                                      "history": (src["history"] + [i])[-40:]})
                if i % 7 == 0:
                    raise RuntimeError("abort half-way")   # must never be visible
                tx.update("Acct", b, {"balance": dst["balance"] + amount})
                tx.update("Meta", "m", {"txn": i, "done": i == transfers})
        except RuntimeError:
            with db.write() as tx:
                tx.update("Meta", "m", {"txn": i, "done": i == transfers})
        time.sleep(rng.random() * 0.002)
    db.close()


def reader(path: str, timeout: float):
    db = engine.open(path)
    print("ready", flush=True)        # the test starts the writer once all readers are up
    deadline = time.time() + timeout
    last_txn, snapshots = -1, 0
    while time.time() < deadline:
        with db.read() as snap:
            meta = snap.get("Meta", "m")
            total = 0
            for acct in range(ACCOUNTS):
                total += snap.get("Acct", acct)["balance"]
                if acct % 5 == 0:
                    time.sleep(0.0005)         # stretch the snapshot across commits
            by_query = sum(o["balance"] for o in snap.objects("Acct").filter(balance__gte=-10**9))
            again = snap.get("Meta", "m")
        snapshots += 1
        if total != ACCOUNTS * INITIAL or by_query != total or again != meta:
            print(json.dumps({"error": f"inconsistent snapshot at txn {meta['txn']}: sum {total} / {by_query}"}))
            return 1
        if meta["txn"] < last_txn:
            print(json.dumps({"error": f"went back in time: {meta['txn']} after {last_txn}"}))
            return 1
        last_txn = meta["txn"]
        if meta["done"]:
            print(json.dumps({"ok": True, "snapshots": snapshots, "last_txn": last_txn}))
            return 0
    print(json.dumps({"error": f"timed out at txn {last_txn}"}))
    return 1


def hold(path: str):
    db = engine.open(path)
    snap = db.read()
    print("ready", snap.txnid, flush=True)
    time.sleep(3600)


def churn(path: str, seconds: float):
    db = engine.open(path, durability="none")
    print("ready", flush=True)
    deadline, i = time.time() + seconds, 0
    while time.time() < deadline:
        i += 1
        with db.write() as tx:
            tx.update("Acct", i % ACCOUNTS, {"history": [i]})
    db.close()


def republish(path: str, seconds: float):
    from engine.lockfile import LockFile
    lock = LockFile(path)
    slot = lock.claim_reader_slot()
    print("ready", slot, flush=True)
    deadline, txnid = time.time() + seconds, 1
    while time.time() < deadline:
        for _ in range(1000):
            lock.publish_reader_txnid(slot, txnid)   # what every snapshot does once, hammered
        txnid += 1


if __name__ == "__main__":
    role, path = sys.argv[1], sys.argv[2]
    if role == "writer":
        writer(path, int(sys.argv[3]))
    elif role == "reader":
        sys.exit(reader(path, float(sys.argv[3])))
    elif role == "churn":
        churn(path, float(sys.argv[3]))
    elif role == "republish":
        republish(path, float(sys.argv[3]))
    else:
        hold(path)
