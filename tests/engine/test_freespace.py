"""Free pages are reused once no snapshot can see them, so rewriting the same
objects over and over keeps the file size bounded."""

import os

import engine

SCHEMA = {"Obj": {"id": "int primary_key", "n": "int index", "payload": "bytes"}}


def rewrite(db, rounds, objects=100, start=0):
    for r in range(start, start + rounds):
        with db.write() as tx:
            for i in range(0, objects, 3):
                key = (i + r) % objects
                # alternate small / chain-page sized payloads
                tx.update("Obj", key, {"n": r, "payload": bytes([r % 256]) * (50 if r % 2 else 2000)})


def seeded(path, objects=100):
    db = engine.open(path, schema=SCHEMA, durability="none")
    with db.write() as tx:
        for i in range(objects):
            tx.create("Obj", {"id": i, "n": 0, "payload": b"x" * 1500})
    return db


def test_repeated_updates_keep_file_size_bounded(db_path):
    with seeded(db_path) as db:
        rewrite(db, 30)
        warm = os.path.getsize(db_path)
        rewrite(db, 600, start=30)
        final = os.path.getsize(db_path)
        stats = db.stats()
        assert final <= warm * 1.25, (warm, final)
        assert stats["pages_free"] < stats["pages_allocated"]
        assert db.verify() == []


def test_live_snapshot_pins_pages_until_closed(db_path):
    with seeded(db_path) as db:
        rewrite(db, 20)
        snap = db.read()
        expected = {o.key: dict(o) for o in snap.objects("Obj")}
        rewrite(db, 100, start=20)
        pinned = os.path.getsize(db_path)
        assert {o.key: dict(o) for o in snap.objects("Obj")} == expected   # nothing it sees was reused
        snap.close()
        rewrite(db, 200, start=120)
        assert os.path.getsize(db_path) <= pinned * 1.05
        assert db.verify() == []


def test_delete_everything_then_reuse(db_path):
    with seeded(db_path, objects=500) as db:
        size = os.path.getsize(db_path)
        with db.write() as tx:
            for i in range(500):
                tx.delete("Obj", i)
        with db.read() as snap:
            assert snap.count("Obj") == 0 and snap.objects("Obj").filter(n=0).count() == 0
        assert db.verify() == []
        for _ in range(3):   # let the freed pages age past the previous root slot
            with db.write() as tx:
                tx.create("Obj", {"id": 10**6 + _, "n": 1})
        with db.write() as tx:
            for i in range(500):
                tx.create("Obj", {"id": i, "n": 0, "payload": b"y" * 1500})
        assert os.path.getsize(db_path) <= size * 1.2
        assert db.verify() == []
