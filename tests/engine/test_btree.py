"""B+tree edge cases through the public API: maximum-size keys, values around
the inline/chain-page threshold, splits, merges and root collapse, checked
against a dict and verify() after every commit."""

import hypothesis.strategies as st
from hypothesis import given

import engine
from engine.layout import INLINE_VALUE_MAX
from engine.objects import MAX_PRIMARY_KEY_SIZE
from enginetest_support import hypothesis_settings, new_db_dir, remove_db_dir

SCHEMA = {"KV": {"k": "str primary_key", "v": "bytes", "tag": "bytes? index"}}
# keys up to the limit (encoded key = utf-8 + 2 terminator bytes)
KEYS = st.builds(lambda stem, n: (stem * n)[:MAX_PRIMARY_KEY_SIZE - 2],
                 st.sampled_from(["a", "b", "ab", "z"]), st.integers(1, MAX_PRIMARY_KEY_SIZE))
SIZES = st.sampled_from([0, 1, 100, INLINE_VALUE_MAX - 1, INLINE_VALUE_MAX, INLINE_VALUE_MAX + 1, 4100, 9000])
OPS = st.lists(st.tuples(st.sampled_from(["put", "put", "delete", "commit"]), KEYS, SIZES), min_size=40, max_size=150)


@hypothesis_settings(fast_examples=60, steps=1)
@given(ops=OPS)
def test_tree_matches_dict(ops):
    directory = new_db_dir()
    path = str(directory / "kv.db")
    model = {}
    try:
        with engine.open(path, schema=SCHEMA, durability="none") as db:
            tx = db.write()
            pending = dict(model)
            for op, key, size in ops + [("commit", "", 0)]:
                if op == "put":
                    value = bytes([len(key) % 251]) * size
                    tag = b"\x00" * (len(key) % 300)      # NULs double in index keys
                    if key in pending:
                        tx.update("KV", key, {"v": value, "tag": tag})
                    else:
                        tx.create("KV", {"k": key, "v": value, "tag": tag})
                    pending[key] = value
                elif op == "delete" and key in pending:
                    tx.delete("KV", key)
                    del pending[key]
                elif op == "commit":
                    tx.commit()
                    model = pending
                    assert db.verify() == []
                    with db.read() as snap:
                        assert {o.key: o["v"] for o in snap.objects("KV")} == model
                    tx = db.write()
                    pending = dict(model)
            tx.abort()
    finally:
        remove_db_dir(directory)


def test_key_too_long_is_rejected(db_path):
    with engine.open(db_path, schema=SCHEMA, durability="none") as db:
        with db.write() as tx:
            try:
                tx.create("KV", {"k": "x" * MAX_PRIMARY_KEY_SIZE})
            except engine.ValidationError as exc:
                assert "longer than" in str(exc)
            else:
                raise AssertionError("over-long primary key accepted")


def test_many_deletes_collapse_the_tree(db_path):
    with engine.open(db_path, schema=SCHEMA, durability="none") as db:
        with db.write() as tx:
            for i in range(3000):
                tx.create("KV", {"k": f"{i:06d}" * 20, "v": b"v" * 200})
        with db.read() as snap:
            deep_root = snap._table("KV").tree.root
            assert not snap._view.load(deep_root).leaf
        with db.write() as tx:
            for i in range(3000):
                if i != 1234:
                    tx.delete("KV", f"{i:06d}" * 20)
        assert db.verify() == []
        with db.read() as snap:
            root = snap._view.load(snap._table("KV").tree.root)
            assert root.leaf and len(root.keys) == 1
