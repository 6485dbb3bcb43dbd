"""Object API, queries, transactions and schema migration."""

import datetime as dt
import hashlib
import os
import threading
import time

import pytest

import engine
from engine import Q
from engine.query import _compile

SCHEMA = {
    "Dog": {"name": "str primary_key", "age": "int index", "weight": "float?", "good": "bool",
            "chip": "bytes", "born": "datetime?", "tags": "list[str]", "owner": "str? index"},
    "Log": {"msg": "str", "level": "int?"},
}


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def db(db_path):
    database = engine.open(db_path, schema=SCHEMA, durability="none")
    yield database
    database.close()


def add_dogs(db, n=10):
    with db.write() as tx:
        for i in range(n):
            tx.create("Dog", {"name": f"dog{i:02d}", "age": i % 5, "owner": None if i % 3 else f"o{i % 2}"})


def test_create_read_update_delete_roundtrip_all_types(db):
    born = dt.datetime(2020, 2, 29, 12, 30, 5, 123456)
    aware = dt.datetime(2021, 1, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with db.write() as tx:
        assert tx.create("Dog", {"name": "Rex", "age": 3, "weight": 12.5, "good": True,
                                 "chip": b"\x00\xff", "born": born, "tags": ["a", "b"]}) == "Rex"
        assert tx.create("Dog", {"name": "Utc", "born": aware}) == "Utc"
        assert tx.create("Log", {"msg": "first"}) == 1
        assert tx.create("Log", {"msg": "second", "level": -2}) == 2
    with db.read() as snap:
        rex = snap.get("Dog", "Rex")
        assert rex.key == "Rex"
        assert dict(rex) == {"name": "Rex", "age": 3, "weight": 12.5, "good": True, "chip": b"\x00\xff",
                             "born": born, "tags": ["a", "b"], "owner": None}
        assert snap.get("Dog", "Utc")["born"] == aware
        assert snap.get("Dog", "Utc")["age"] == 0 and snap.get("Dog", "Utc")["weight"] is None
        assert snap.get("Log", 2)["level"] == -2
        assert snap.get("Dog", "nobody") is None
    with db.write() as tx:
        tx.update("Dog", "Rex", {"age": 4, "tags": []})
        tx.delete("Log", 1)
    with db.read() as snap:
        assert snap.get("Dog", "Rex")["age"] == 4 and snap.get("Dog", "Rex")["tags"] == []
        assert snap.get("Log", 1) is None and snap.count("Log") == 1
    assert db.verify() == []


def test_large_values_use_chain_pages(db):
    blob = os.urandom(100_000)
    with db.write() as tx:
        tx.create("Dog", {"name": "big", "chip": blob, "tags": ["x" * 5000] * 3})
    with db.read() as snap:
        assert snap.get("Dog", "big")["chip"] == blob
    with db.write() as tx:
        tx.update("Dog", "big", {"chip": b"small"})
    assert db.verify() == []
    assert os.path.getsize(db.path) % 4096 == 0


@pytest.mark.parametrize("values, fragment", [
    ({"name": "x", "age": "3"}, "expected int"),
    ({"name": "x", "age": True}, "expected int"),
    ({"name": "x", "age": 1 << 63}, "expected int"),
    ({"name": "x", "good": 1}, "expected bool"),
    ({"name": "x", "tags": "abc"}, "expected a list"),
    ({"name": "x", "color": "red"}, "unknown property"),
    ({"age": 3}, "primary key"),
    ({"name": None}, "not optional"),
])
def test_invalid_values_are_rejected(db, values, fragment):
    with pytest.raises(engine.ValidationError, match=fragment), db.write() as tx:
        tx.create("Dog", values)
    with db.read() as snap:
        assert snap.count("Dog") == 0


def test_duplicate_missing_and_primary_key_change(db):
    add_dogs(db, 2)
    with db.write() as tx:
        with pytest.raises(engine.DuplicateKeyError):
            tx.create("Dog", {"name": "dog00"})
        with pytest.raises(engine.ObjectNotFoundError):
            tx.update("Dog", "ghost", {"age": 1})
        with pytest.raises(engine.ObjectNotFoundError):
            tx.delete("Dog", "ghost")
        with pytest.raises(engine.ValidationError, match="primary key cannot be changed"):
            tx.update("Dog", "dog00", {"name": "other"})
        with pytest.raises(engine.QueryError, match="unknown class"):
            tx.get("Cat", 1)


def test_abort_leaves_no_trace(db):
    add_dogs(db, 50)
    before = digest(db.path)
    with pytest.raises(RuntimeError):
        with db.write() as tx:
            for i in range(500):
                tx.create("Dog", {"name": f"new{i}", "chip": b"z" * 3000})
            tx.delete("Dog", "dog01")
            raise RuntimeError("boom")
    tx = db.write()
    tx.update("Dog", "dog02", {"age": 99})
    tx.abort()
    assert digest(db.path) == before
    with db.read() as snap:
        assert snap.count("Dog") == 50 and snap.get("Dog", "dog02")["age"] == 2


def test_snapshot_isolation_and_own_writes(db):
    add_dogs(db, 3)
    old = db.read()
    try:
        with db.write() as tx:
            tx.update("Dog", "dog00", {"age": 42})
            assert tx.get("Dog", "dog00")["age"] == 42                 # sees its own write
            assert tx.objects("Dog").filter(age=42).keys() == ["dog00"]
            with db.read() as during:
                assert during.get("Dog", "dog00")["age"] == 0          # not yet committed
        for i in range(50):                                            # recycle many pages
            with db.write() as tx:
                tx.update("Dog", "dog01", {"tags": [str(i)] * 100})
        assert old.get("Dog", "dog00")["age"] == 0                     # old snapshot unchanged
        assert old.get("Dog", "dog01")["tags"] == []
        with db.read() as new:
            assert new.get("Dog", "dog00")["age"] == 42
    finally:
        old.close()


def test_transaction_misuse(db):
    with db.read() as snap:
        with pytest.raises(engine.TransactionError):
            snap.create("Dog", {"name": "x"})
    with pytest.raises(engine.TransactionError):
        snap.get("Dog", "x")
    with db.write() as tx:
        with pytest.raises(engine.TransactionError):
            db.write()
    with pytest.raises(engine.TransactionError):
        tx.create("Dog", {"name": "late"})


def test_writers_in_two_threads_are_serialised(db):
    add_dogs(db, 1)
    order = []

    def second_writer():
        with db.write() as tx:
            order.append("second")
            tx.update("Dog", "dog00", {"age": tx.get("Dog", "dog00")["age"] + 1})

    with db.write() as tx:
        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.1)
        order.append("first")
        tx.update("Dog", "dog00", {"age": 10})
    thread.join(10)
    assert order == ["first", "second"]
    with db.read() as snap:
        assert snap.get("Dog", "dog00")["age"] == 11


def test_two_handles_in_one_process(db, db_path):
    other = engine.open(db_path, durability="none")
    try:
        add_dogs(db, 2)
        with other.read() as snap:
            assert snap.count("Dog") == 2
        with other.write() as tx:
            tx.delete("Dog", "dog00")
        with db.read() as snap:
            assert snap.count("Dog") == 1
    finally:
        other.close()
    with db.read() as snap:          # closing one handle keeps the other's locks
        assert snap.count("Dog") == 1


def test_closing_a_handle_aborts_its_open_write_transaction(db, db_path):
    """Else the write lock stays taken and the next writer in this process waits forever."""
    other = engine.open(db_path, durability="none")
    tx = other.write()
    tx.create("Dog", {"name": "never"})
    other.close()
    got_lock = []
    thread = threading.Thread(target=lambda: (db.write().abort(), got_lock.append(True)), daemon=True)
    thread.start()
    thread.join(10)
    assert got_lock == [True]
    with pytest.raises(engine.TransactionError):
        tx.commit()
    with db.read() as snap:
        assert snap.count("Dog") == 0


def test_small_commits_stat_the_file_no_more(db, monkeypatch):
    """Growth is decided from the size last seen (the file never shrinks): on a FUSE mount
    every fstat is a getattr round trip, which was paid once per commit."""
    import engine.mmapfile as mmapfile
    add_dogs(db, 1)
    calls = []

    class CountingOs:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fstat(fd):
            calls.append("fstat")
            return os.fstat(fd)

    monkeypatch.setattr(mmapfile, "os", CountingOs())
    for number in range(20):
        with db.write() as tx:
            tx.create("Dog", {"name": f"small{number}"})
    # an fstat only where the file grows past the size last seen or the map must follow
    # it (a few times in 20 commits); it was one per commit
    assert calls.count("fstat") <= 2, calls


def test_a_string_utf8_cannot_hold_is_refused_before_anything_changes(db_path):
    schema = {"D": {"name": "str primary_key", "a": "str index", "b": "str index"}}
    with engine.open(db_path, schema=schema, durability="none") as db:
        with db.write() as tx:
            tx.create("D", {"name": "x", "a": "old", "b": "old"})
        with db.write() as tx:
            with pytest.raises(engine.ValidationError):
                tx.update("D", "x", {"a": "new", "b": "\udcff"})     # a lone surrogate
            with pytest.raises(engine.ValidationError):
                tx.create("D", {"name": "\udcff"})
        assert db.verify() == []
        with db.read() as snap:
            assert snap.get("D", "x")["a"] == "old"


def test_queries(db):
    add_dogs(db, 20)
    with db.read() as snap:
        dogs = snap.objects("Dog")
        assert dogs.count() == 20 and len(list(dogs)) == 20 and dogs.filter().count() == 20
        assert dogs.filter(Q()).count() == 20
        assert dogs.filter(age=3).keys() == ["dog03", "dog08", "dog13", "dog18"]
        assert sorted(dogs.filter(age__gte=3, name__lt="dog10").keys()) == ["dog03", "dog04", "dog08", "dog09"]
        assert sorted(dogs.filter(Q(age=0) | Q(name="dog01")).keys()) == ["dog00", "dog01", "dog05", "dog10", "dog15"]
        assert dogs.filter(owner=None).count() == 13
        assert dogs.filter(owner__ne=None).count() == 7
        assert sorted(dogs.filter(owner__gt="o0").keys()) == ["dog03", "dog09", "dog15"]
        assert sorted(dogs.filter(age__lt=1).filter(owner="o0").keys()) == ["dog00"]
        ordered = dogs.filter(age__lte=1).order_by("-age", "name").keys()
        assert ordered == ["dog01", "dog06", "dog11", "dog16", "dog00", "dog05", "dog10", "dog15"]
        assert dogs.order_by("owner", "name").first().key == "dog01"
        assert dogs.filter(age=99).first() is None
        assert [o["name"] for o in dogs.filter(name__gte="dog18")] == ["dog18", "dog19"]
        with pytest.raises(engine.QueryError, match="unknown property"):
            dogs.filter(colour="red").count()
        with pytest.raises(engine.QueryError, match="unknown operator"):
            dogs.filter(age__like=3).count()
        with pytest.raises(engine.QueryError, match="needs a value"):
            dogs.filter(age__gt=None).count()
        with pytest.raises(engine.QueryError, match="expected int"):
            dogs.filter(age="3").count()


def test_indexed_and_primary_key_predicates_are_planned_as_range_scans(db):
    add_dogs(db, 5)
    with db.read() as snap:
        table = snap._table("Dog")
        assert _compile(Q(age=3), table)[1] is not None          # secondary index
        assert _compile(Q(name__gt="a"), table)[1] is not None   # primary key tree
        assert _compile(Q(weight=1.0), table)[1] is None         # no index: scan
        assert _compile(Q(age=1) | Q(weight=1.0), table)[1] is None
        assert _compile(Q(age=1) & Q(weight=1.0), table)[1] is not None


def test_additive_migration_in_place(db_path):
    with engine.open(db_path, schema={"Dog": {"name": "str primary_key", "age": "int"}}) as db:
        with db.write() as tx:
            tx.create("Dog", {"name": "Rex", "age": 3})
    wider = {"Dog": {"name": "str primary_key", "age": "int index", "nick": "str?", "n": "int"},
             "Cat": {"lives": "int"}}
    with engine.open(db_path, schema=wider) as db:
        with db.read() as snap:
            assert dict(snap.get("Dog", "Rex")) == {"name": "Rex", "age": 3, "nick": None, "n": 0}
            assert snap.objects("Dog").filter(age=3).keys() == ["Rex"]
            assert snap.count("Cat") == 0
        with db.write() as tx:
            tx.create("Cat", {"lives": 9})
            tx.update("Dog", "Rex", {"nick": "R"})
        assert db.verify() == []
        assert db.schema["Dog"]["age"] == "int index"
    with engine.open(db_path) as db, db.read() as snap:
        assert snap.get("Dog", "Rex")["nick"] == "R"


@pytest.mark.parametrize("schema, fragment", [
    ({"Dog": {"name": "str primary_key"}}, "would be removed"),
    ({"Dog": {"name": "str primary_key", "age": "float"}}, "int in the file but float"),
    ({"Dog": {"name": "str", "age": "int"}}, "primary key"),
    ({"Dog": {"name": "str primary_key", "age": "int?"}}, "int in the file but int?"),
    ({"Cat": {"lives": "int"}}, "class Dog exists in the file"),
    ({"Dog": {"name": "str primary_key", "age": "int"}}, "index on Dog.age would be removed"),
])
def test_destructive_schema_changes_are_refused(db_path, schema, fragment):
    with engine.open(db_path, schema={"Dog": {"name": "str primary_key", "age": "int index"}}) as db:
        with db.write() as tx:
            tx.create("Dog", {"name": "Rex", "age": 3})
    before = digest(db_path)
    with pytest.raises(engine.SchemaMismatchError, match=fragment) as info:
        engine.open(db_path, schema=schema)
    assert "\n" not in str(info.value)
    assert digest(db_path) == before


@pytest.mark.parametrize("schema, fragment", [
    ({}, "non-empty"),
    ({"Dog": {"a": "int primary_key", "b": "str primary_key"}}, "more than one primary key"),
    ({"Dog": {"a": "float primary_key"}}, "primary key must be"),
    ({"Dog": {"a": "list[int] index"}}, "list properties"),
    ({"Dog": {"a": "complex"}}, "unknown type"),
    ({"Dog": {"a": "int fast"}}, "unknown modifier"),
    ({"Dog": {"a__b": "int"}}, "identifier"),
])
def test_invalid_schema(db_path, schema, fragment):
    with pytest.raises(engine.SchemaError, match=fragment):
        engine.open(db_path, schema=schema)
    assert not os.path.exists(db_path)


def test_open_requires_schema_for_new_file_and_valid_durability(db_path):
    with pytest.raises(engine.EngineError, match="no such database"):
        engine.open(db_path)
    with pytest.raises(engine.EngineError, match="durability"):
        engine.open(db_path, schema=SCHEMA, durability="sometimes")
    assert not os.path.exists(db_path)


def test_closed_database_refuses_work(db_path):
    db = engine.open(db_path, schema=SCHEMA)
    db.close()
    with pytest.raises(engine.DatabaseClosedError):
        db.read()


def test_close_ends_open_snapshots(db_path):
    db = engine.open(db_path, schema=SCHEMA, durability="none")
    snap = db.read()
    assert db.stats()["live_snapshots"] == 1
    db.close()
    with pytest.raises(engine.TransactionError):
        snap.get("Dog", "x")
    with engine.open(db_path) as again:
        assert again.stats()["live_snapshots"] == 0     # the slot was released
