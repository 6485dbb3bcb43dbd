"""A commit cut at every write and at its fsync, with unsynced writes lost.

A fault-injecting file layer records the writes, file growth and fsyncs of one
commit (page by page: the disk may keep any subset of a multi-page write).
From the file as it was before the commit it then builds the disk a crash
could leave at each cut point k (after the k-th operation):
- every operation up to k kept (the process was killed at k);
- operations after the last completed fsync lost: all of them, all but one,
  only one, random subsets (power lost / FUSE daemon killed at k);
- the root slot torn: half written, or its sector garbage.
Each such file must open to exactly the state before or after the commit, the
state after once the commit's fsync has returned, and verify() clean.

The same layer can also fail the k-th operation for real (OSError) inside a
live process: the failed commit changes nothing visible and the next commit
works.
"""

import errno
import os
import random

import pytest

import engine
from engine import layout

SCHEMA = {"Item": {"k": "int primary_key", "v": "str index", "blob": "bytes"},
          "Tag": {"name": "str primary_key", "n": "int"}}


class FaultLayer:
    """Wraps a Database's PagedFile: records operations, optionally fails one."""

    def __init__(self, db, fail_at=None):
        self.ops = []
        self.fail_at = fail_at
        self.calls = 0                 # writes and fsyncs so far (what fail_at counts)
        self.paged = paged = db._store.file
        write_pages, write_at, sync, ensure_size = (paged.write_pages, paged.write_at, paged.sync,
                                                     paged.ensure_size)

        def op(entry, run):
            if self.calls == self.fail_at:
                raise OSError(errno.EIO, f"injected failure at operation {self.fail_at}")
            self.calls += 1
            self.ops.append(entry)
            run()

        def record_pages(pages):
            for pgno in sorted(pages):
                op(("write", pgno * layout.PAGE_SIZE, pages[pgno]),
                   lambda pgno=pgno: write_pages({pgno: pages[pgno]}))

        def record_size(npages):
            before = os.fstat(paged.fd).st_size
            ensure_size(npages)
            after = os.fstat(paged.fd).st_size
            if after != before:
                self.ops.append(("size", after))

        paged.write_pages = record_pages
        paged.write_at = lambda offset, data: op(("write", offset, bytes(data)), lambda: write_at(offset, data))
        paged.sync = lambda: op(("sync",), sync)
        paged.ensure_size = record_size

    def remove(self):
        for name in ("write_pages", "write_at", "sync", "ensure_size"):
            delattr(self.paged, name)


def apply(base: bytes, ops) -> bytes:
    image = bytearray(base)
    for entry in ops:
        if entry[0] == "size":
            image.extend(bytes(max(0, entry[1] - len(image))))
        elif entry[0] == "write":
            _, offset, data = entry
            image.extend(bytes(max(0, offset + len(data) - len(image))))
            image[offset:offset + len(data)] = data
    return bytes(image)


def crash_images(base: bytes, ops, rng):
    """Yield (description, disk image, durable?) for every cut point and loss pattern."""
    for k in range(len(ops) + 1):
        prefix = ops[:k]
        synced = max((i + 1 for i, entry in enumerate(prefix) if entry[0] == "sync"), default=0)
        durable, pending = prefix[:synced], [e for e in prefix[synced:] if e[0] != "sync"]
        done = synced > 0
        yield f"killed after op {k}", apply(base, prefix), done
        if not pending:
            continue
        yield f"cut at {k}, all unsynced lost", apply(base, durable), done
        full = k == len(ops) or ops[k][0] == "sync"          # everything written, fsync not returned
        singles = range(len(pending)) if full else rng.sample(range(len(pending)), min(3, len(pending)))
        for i in singles:
            yield (f"cut at {k}, unsynced op {i} lost",
                   apply(base, durable + pending[:i] + pending[i + 1:]), done)
            yield f"cut at {k}, only unsynced op {i} kept", apply(base, durable + [pending[i]]), done
        for _ in range(3):
            kept = [e for e in pending if rng.random() < 0.5]
            yield f"cut at {k}, random subset of {len(kept)}", apply(base, durable + kept), done
        slot_writes = [e for e in pending if e[0] == "write" and e[1] in layout.SLOT_OFFSETS]
        for slot_write in slot_writes:
            _, offset, data = slot_write
            others = [e for e in pending if e is not slot_write]
            old = apply(base, durable)[offset:offset + len(data)]
            half = len(data) // 2
            torn = ("write", offset, data[:half] + old[half:])
            yield f"cut at {k}, slot torn in half", apply(base, durable + others + [torn]), done
            garbage = ("write", offset - offset % layout.SECTOR_SIZE, rng.randbytes(layout.SECTOR_SIZE))
            yield f"cut at {k}, slot sector garbage", apply(base, durable + others + [garbage]), done


def read_state(path):
    with engine.open(path) as db:
        problems = db.verify()
        with db.read() as snap:
            state = {name: {o.key: dict(o) for o in snap.objects(name)} for name in SCHEMA}
    return state, problems


def commit_first(tx):
    for k in range(300):
        tx.create("Item", {"k": k, "v": f"v{k % 17}", "blob": b"x" * (k % 40)})
    tx.create("Tag", {"name": "t", "n": 1})


def commit_overflow_and_deletes(tx):
    for k in range(0, 300, 6):
        tx.update("Item", k, {"blob": bytes([k % 256]) * 3000, "v": "big"})
    for k in range(1, 300, 9):
        tx.delete("Item", k)
    tx.update("Tag", "t", {"n": 2})


def commit_merges_and_reuse(tx):
    for k in range(300):
        if k % 9 != 1 and k % 5:
            tx.delete("Item", k)
    for k in range(1000, 1040):
        tx.create("Item", {"k": k, "v": "new", "blob": b"y" * 1500})
    tx.create("Tag", {"name": "u", "n": 3})


COMMITS = [commit_first, commit_overflow_and_deletes, commit_merges_and_reuse]


@pytest.mark.parametrize("which", range(len(COMMITS)))
def test_commit_cut_at_every_write_and_fsync(db_dir, which):
    path = str(db_dir / "cut.db")
    with engine.open(path, schema=SCHEMA) as db:
        for build in COMMITS[:which]:
            with db.write() as tx:
                build(tx)
    before, problems = read_state(path)
    assert problems == []
    with open(path, "rb") as f:
        base = f.read()
    with engine.open(path) as db:
        layer = FaultLayer(db)
        with db.write() as tx:
            COMMITS[which](tx)
    after, problems = read_state(path)
    assert problems == [] and after != before
    ops = layer.ops
    assert [e[0] for e in ops].count("sync") == 1 and ops[-1] == ("sync",), "one fsync, last"
    rng = random.Random(which)
    image_path = str(db_dir / "image.db")
    seen = {"before": 0, "after": 0}
    for description, image, durable in crash_images(base, ops, rng):
        for stale in (image_path, image_path + ".lock"):
            if os.path.exists(stale):
                os.unlink(stale)
        with open(image_path, "wb") as f:
            f.write(image)
        state, problems = read_state(image_path)
        assert problems == [], description
        assert state in (before, after), f"{description}: neither the state before nor after"
        if durable:
            assert state == after, f"{description}: the commit's fsync returned but it is lost"
        seen["after" if state == after else "before"] += 1
        state_again, _ = read_state(image_path)       # the first open's repair is stable
        assert state_again == state, description
    assert seen["before"] and seen["after"]


@pytest.mark.parametrize("which", range(len(COMMITS)))
def test_failed_write_or_fsync_leaves_a_usable_database(db_dir, which):
    """A live process whose k-th write (or the fsync) fails: the commit raises,
    the database shows the state before or after it, and the next commit works."""
    path = str(db_dir / "fail.db")
    with engine.open(path, schema=SCHEMA) as db:
        for build in COMMITS[:which]:
            with db.write() as tx:
                build(tx)
        with db.read() as snap:
            before = {o.key: dict(o) for o in snap.objects("Item")}
    with open(path, "rb") as f:
        base = f.read()

    def trial_copy(name):
        trial = str(db_dir / name)
        with open(trial, "wb") as f:
            f.write(base)
        return trial

    with engine.open(trial_copy("dry.db")) as db:
        dry = FaultLayer(db)
        with db.write() as tx:
            COMMITS[which](tx)
    total = dry.calls
    assert dry.ops[-1] == ("sync",)
    for fail_at in range(total):
        trial = trial_copy(f"fail-{fail_at}.db")
        with engine.open(trial) as db:
            layer = FaultLayer(db, fail_at=fail_at)
            with pytest.raises(OSError, match="injected"):
                with db.write() as tx:
                    COMMITS[which](tx)
            with db.read() as snap:
                state = {o.key: dict(o) for o in snap.objects("Item")}
            layer.remove()
            with db.write() as tx:
                tx.create("Item", {"k": 5000 + fail_at, "v": "later", "blob": b""})
            assert db.verify() == []
        with engine.open(trial) as db, db.read() as snap:
            assert snap.get("Item", 5000 + fail_at)["v"] == "later"
        assert state == before or fail_at == total - 1, "only a failed fsync may leave the commit visible"
