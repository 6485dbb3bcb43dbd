"""Compact records (format 4), reads that fetch each record once, and the
errors a user sees for wrong query arguments and a broken free list."""

import datetime as dt

import pytest

import engine
from engine import layout
from engine.btree import Tree
from engine.codec import RecordCodec, get_varint, put_varint
from engine.schema import parse_schema

SCHEMA = {"Doc": {"tag": "str index", "title": "str primary_key", "body": "bytes?", "n": "int",
                  "when": "datetime? index", "words": "list[str]"}}


def props():
    return parse_schema(SCHEMA)["Doc"].properties


def test_varint_roundtrip():
    for n in (0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**63):
        out = []
        put_varint(out, n)
        data = b"x" + b"".join(out)
        assert get_varint(data, 1) == (n, len(data))
    assert len(b"".join(_varint(127))) == 1 and len(b"".join(_varint(128))) == 2


def _varint(n):
    out = []
    put_varint(out, n)
    return out


@pytest.mark.parametrize("size, width", [(0, 1), (254, 1), (255, 2), (65534, 2), (65535, 4), (70000, 4)])
def test_lengths_take_the_narrowest_width_and_roundtrip(size, width):
    codec = RecordCodec.for_props(props(), pk_pos=1)
    for body in (b"b" * size, None):
        values = ["t", "key", body, -5, None, ["a", "b" * size]]
        record = codec.encode(values)
        assert codec.decode(record, "key") == values
    record = codec.encode(["t", "key", None, 7, None, []])
    # head (1) + 4 lengths (tag, body, when, words) of 1 byte + n (8) + "t" + list count 0
    assert len(record) == 1 + 4 + 8 + 1 + 1
    big = codec.encode(["t", "key", b"b" * size, 7, None, []])
    assert len(big) == 1 + 4 * width + 8 + 1 + size + 1


def test_primary_key_is_stored_once(db_dir):
    marker = "pk-marker-9f3a"
    path = str(db_dir / "once.db")
    with engine.open(path, schema={"U": {"name": "str primary_key", "note": "str"},
                                   "V": {"name": "str primary_key", "tag": "str index"}}) as db:
        with db.write() as tx:
            tx.create("U", {"name": marker + "u", "note": "x"})
            tx.create("V", {"name": marker + "v", "tag": "t"})
        with db.read() as snap:
            assert snap.get("U", marker + "u")["name"] == marker + "u"
            assert snap.objects("V").filter(tag="t").keys() == [marker + "v"]
        assert db.verify() == []
    with open(path, "rb") as f:
        data = f.read()
    assert data.count((marker + "u").encode()) == 1            # the object key only
    assert data.count((marker + "v").encode()) == 2            # object key + index key, no index value


def test_records_of_a_class_that_grew_read_defaults_with_the_key_in_the_middle(db_path):
    with engine.open(db_path, schema={"D": {"a": "int", "k": "str primary_key", "b": "str?"}}) as db:
        with db.write() as tx:
            tx.create("D", {"a": 1, "k": "x", "b": "bee"})
    with engine.open(db_path, schema={"D": {"a": "int", "k": "str primary_key", "b": "str?",
                                            "c": "list[int]", "d": "float? index"}}) as db:
        with db.read() as snap:
            assert dict(snap.get("D", "x")) == {"a": 1, "k": "x", "b": "bee", "c": [], "d": None}
        with db.write() as tx:
            tx.update("D", "x", {"c": [1, 2], "d": 2.5})
        with db.read() as snap:
            assert dict(snap.get("D", "x")) == {"a": 1, "k": "x", "b": "bee", "c": [1, 2], "d": 2.5}
            assert snap.objects("D").filter(d__gt=2).keys() == ["x"]
        assert db.verify() == []


def test_range_scans_read_each_record_once(db_path, monkeypatch):
    with engine.open(db_path, schema=SCHEMA, durability="none") as db:
        with db.write() as tx:
            for i in range(400):
                tx.create("Doc", {"title": f"d{i:03d}", "tag": f"g{i % 7}", "n": i,
                                  "body": bytes(3000) if i % 10 == 0 else None})
        gets, blobs = [], []
        real_get, real_blob = Tree.get, Tree.resolve

        def counting_get(tree, key):
            gets.append(key)
            return real_get(tree, key)

        def counting_resolve(tree, value):
            if isinstance(value, layout.Overflow):
                blobs.append(value.pgno)
            return real_blob(tree, value)

        monkeypatch.setattr(Tree, "get", counting_get)
        monkeypatch.setattr(Tree, "resolve", counting_resolve)
        with db.read() as snap:
            found = snap.objects("Doc").filter(title__gte="d100", title__lte="d199").keys()
            assert len(found) == 100 and gets == [] and len(blobs) == 10     # primary key: no lookups
            gets.clear(), blobs.clear()
            found = snap.objects("Doc").filter(tag="g3").keys()
            assert len(found) == len(gets) == len(set(gets)) == 57             # index: one lookup each
            gets.clear()
            found = snap.objects("Doc").filter(engine.Q(tag="g3") | engine.Q(tag="g3")).keys()
            assert len(found) == len(gets) == 57


def test_wrong_query_arguments_are_query_errors_naming_the_field(db_path):
    with engine.open(db_path, schema=SCHEMA, durability="none") as db:
        with db.write() as tx:
            tx.create("Doc", {"title": "a", "when": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)})
            tx.create("Doc", {"title": "b", "when": dt.datetime(2024, 1, 2)})
        with db.read() as snap:
            docs = snap.objects("Doc")
            cases = [(lambda: docs.filter(n="3").count(), "Doc.n"),
                     (lambda: docs.filter(tag=5).count(), "Doc.tag"),
                     (lambda: docs.filter(title__gt=1.5).count(), "Doc.title"),
                     (lambda: docs.filter(words__gt="a").count(), "Doc.words"),
                     (lambda: snap.get("Doc", 7), "Doc.title"),
                     (lambda: docs.order_by(3), "order_by"),
                     (lambda: docs.filter(engine.Q(n=1) & 5), "not int")]
            for call, fragment in cases:
                with pytest.raises(engine.QueryError, match=fragment) as info:
                    call()
                assert "\n" not in str(info.value)
            # aware and naive datetimes compare as their keys do (naive = UTC), no TypeError
            assert docs.filter(when__gt=dt.datetime(2024, 1, 1, 12)).keys() == ["b"]
            assert docs.filter(when=dt.datetime(2024, 1, 1)).keys() == ["a"]
            assert docs.order_by("-when").keys() == ["b", "a"]


@pytest.mark.parametrize("field, value", [(0, 10**6), (8, layout.CHAIN_CAPACITY + 1)])
def test_verify_reports_a_broken_free_list_chain(db_path, field, value):
    """next pgno outside the file, or a used length past the page: reported, not raised."""
    with engine.open(db_path, schema=SCHEMA) as db:
        for round_ in range(2):
            with db.write() as tx:
                for i in range(200):
                    tx.create("Doc", {"title": f"{round_}-{i}", "words": ["w"] * 20})
        with db.read() as snap:
            first = snap._meta.freelist_pgno
        assert first
        # Damaged after open (an older commit's page would make open fall back past it).
        with open(db_path, "r+b") as f:
            offset = first * layout.PAGE_SIZE + layout.PAGE_HEADER_SIZE + field
            f.seek(offset)
            f.write((layout.U64 if field == 0 else layout.U32).pack(value))
        problems = db.verify()
    assert any(p.startswith("free list") for p in problems), problems
