"""Crash safety: a forked child commits deterministic transactions (real fsync)
and is SIGKILLed at random moments.  After every kill the database must equal
exactly the last transaction the child reported committed (or the one it was
committing when it died), and verify() must be clean.

Each transaction i is a pure function of (seed, i, state before i), so the
parent replays it on a dict model to know the expected state."""

import os
import random
import signal
import time

import pytest

import engine

SCHEMA = {"Acct": {"id": "int primary_key", "v": "int index", "pad": "str"},
          "Meta": {"name": "str primary_key", "txn": "int"}}
SEEDS = [11, 22, 33, 44]
KILLS_PER_SEED = 55          # 220 SIGKILLs in total
MAX_KILL_DELAY = 0.05


def plan_txn(seed: int, i: int, state: dict) -> list:
    """The operations of transaction i, chosen from the state before it."""
    rng = random.Random(seed * 1_000_003 + i)
    ops = []
    existing = set(state)
    for _ in range(rng.randint(1, 12)):
        acct = rng.randrange(300)
        pad = "p" * rng.choice([0, 10, 900, 2500])   # some values spill into chain pages
        if acct in existing:
            if rng.random() < 0.3:
                ops.append(("delete", acct, None))
                existing.discard(acct)
            else:
                ops.append(("update", acct, {"v": rng.randrange(1000), "pad": pad}))
        else:
            ops.append(("create", acct, {"id": acct, "v": rng.randrange(1000), "pad": pad}))
            existing.add(acct)
    return ops


def apply_to_model(state: dict, ops):
    state = {k: dict(v) for k, v in state.items()}
    for kind, acct, values in ops:
        if kind == "delete":
            del state[acct]
        elif kind == "update":
            state[acct].update(values)
        else:
            state[acct] = dict(values)
    return state


def read_state(db):
    with db.read() as snap:
        meta = snap.get("Meta", "m")
        accounts = {obj.key: dict(obj) for obj in snap.objects("Acct")}
    return (meta["txn"] if meta else 0), accounts


def child_main(path: str, seed: int, report_fd: int):
    db = engine.open(path, schema=SCHEMA)
    last, state = read_state(db)
    i = last
    while True:
        i += 1
        ops = plan_txn(seed, i, state)
        os.write(report_fd, f"B{i}\n".encode())
        with db.write() as tx:
            for kind, acct, values in ops:
                if kind == "delete":
                    tx.delete("Acct", acct)
                elif kind == "update":
                    tx.update("Acct", acct, values)
                else:
                    tx.create("Acct", values)
            if i == 1:
                tx.create("Meta", {"name": "m", "txn": i})
            else:
                tx.update("Meta", "m", {"txn": i})
        os.write(report_fd, f"C{i}\n".encode())
        state = apply_to_model(state, ops)


def run_child_and_kill(path: str, seed: int, delay: float):
    """Fork a writer child, SIGKILL it after `delay`; returns (last begun, last committed)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            child_main(path, seed, write_fd)
        finally:
            os._exit(1)
    os.close(write_fd)
    try:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        lines = pipe.read().decode().split()
    begun = max((int(x[1:]) for x in lines if x[0] == "B"), default=0)
    committed = max((int(x[1:]) for x in lines if x[0] == "C"), default=0)
    assert os.WIFSIGNALED(status), "child exited on its own (it should only die by SIGKILL)"
    return begun, committed


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_leaves_last_committed_state(db_dir, seed):
    path = str(db_dir / f"crash-{seed}.db")
    rng = random.Random(seed)
    models = [{}]            # models[i] = state after transaction i
    reported = 0
    died_after_commit_point = 0
    for _ in range(KILLS_PER_SEED):
        begun, committed = run_child_and_kill(path, seed, rng.uniform(0, MAX_KILL_DELAY))
        reported = max(reported, committed)
        if not os.path.exists(path):
            assert committed == 0
            continue
        with engine.open(path, schema=SCHEMA) as db:
            txn, accounts = read_state(db)
            problems = db.verify()
        assert problems == []
        allowed = {reported} | ({begun} if begun == reported + 1 else set())
        assert txn in allowed, f"found txn {txn}, child reported committed {reported}, begun {begun}"
        died_after_commit_point += txn == begun > committed
        reported = txn
        while len(models) <= txn:
            i = len(models)
            models.append(apply_to_model(models[-1], plan_txn(seed, i, models[-1])))
        assert accounts == models[txn], f"state differs from the model after txn {txn}"
    assert reported >= 10, "child made too little progress to test anything"
    print(f"seed {seed}: {KILLS_PER_SEED} kills, {reported} txns, "
          f"{died_after_commit_point} died after the commit point but before reporting it")
