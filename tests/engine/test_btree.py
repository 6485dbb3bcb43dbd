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


class _MemTxn:
    def free_page(self, pgno):
        pass

    def free_blob(self, overflow):
        pass


class _MemView:
    def __init__(self):
        self.cache = {}


def _leaf_items(pages, pgno):
    from engine.layout import decode_node
    leaf, keys, vals, _ = decode_node(pages[pgno], 0)
    if leaf:
        return list(zip(keys, vals))
    return [item for child in vals for item in _leaf_items(pages, child)]


# Mostly uniform small entries (fixed-width leaves that may exceed the
# variable-layout capacity), then occasional odd-sized ones that make a full
# fixed leaf lose its layout and need more than one split.
ENTRY = st.one_of(st.tuples(st.integers(0, 5000), st.just(4), st.just(4)),
                  st.tuples(st.integers(0, 5000), st.sampled_from([3, 5, 200, 512]),
                            st.sampled_from([0, 1, 300, INLINE_VALUE_MAX])))


@hypothesis_settings(fast_examples=40, steps=1)
@given(entries=st.lists(ENTRY, min_size=1, max_size=2500), ascending=st.booleans())
def test_fixed_leaves_lose_fixedness(entries, ascending):
    from engine.btree import Tree
    if ascending:     # full fixed leaves first, then odd entries into their middle
        entries = (sorted(e for e in entries if e[1:] == (4, 4))
                   + [e for e in entries if e[1:] != (4, 4)])
    tree = Tree(_MemView(), 0, _MemTxn())
    model = {}
    for n, klen, vlen in entries:
        key = n.to_bytes(4, "big").rjust(klen, b"k")[-klen:] if klen >= 4 else n.to_bytes(4, "big")[:klen]
        value = bytes([n % 251]) * vlen
        tree.put(key, value)
        model[key] = value
    counter = iter(range(1, 10**6))
    pages = {}
    root = tree.flush(lambda: next(counter), pages, 2)
    assert _leaf_items(pages, root) == sorted(model.items())


APPEND_SCHEMA = {"Seq": {"id": "int primary_key", "v": "bytes", "n": "int index"}}
APPEND_OPS = st.lists(st.tuples(st.sampled_from(["append"] * 6 + ["insert", "update", "delete", "dup", "commit", "abort"]),
                                st.integers(0, 10**6), st.sampled_from([0, 8, 200, INLINE_VALUE_MAX + 1])),
                      min_size=50, max_size=400)


@hypothesis_settings(fast_examples=30, steps=1)
@given(ops=APPEND_OPS)
def test_ascending_appends_match_dict(ops):
    """The rightmost-leaf append path (Tree.tail) mixed with every other change."""
    directory = new_db_dir()
    path = str(directory / "seq.db")
    model, top = {}, 0
    try:
        with engine.open(path, schema=APPEND_SCHEMA, durability="none") as db:
            tx, pending = db.write(), {}
            for op, r, size in ops + [("commit", 0, 0)]:
                value = bytes([r % 251]) * size
                keys = sorted(pending)
                if op == "append":
                    top += 1 + r % 3
                    tx.create("Seq", {"id": top, "v": value, "n": r % 50})
                    pending[top] = value
                elif op == "insert" and r % (top + 1) not in pending:
                    tx.create("Seq", {"id": r % (top + 1), "v": value, "n": r % 50})
                    pending[r % (top + 1)] = value
                elif op == "update" and keys:
                    key = keys[-1 - r % min(3, len(keys))]
                    tx.update("Seq", key, {"v": value, "n": r % 7})
                    pending[key] = value
                elif op == "delete" and keys:
                    key = keys[-1 - r % min(3, len(keys))]
                    tx.delete("Seq", key)
                    del pending[key]
                elif op == "dup" and keys:
                    try:
                        tx.create("Seq", {"id": keys[-1]})
                    except engine.DuplicateKeyError:
                        pass
                    else:
                        raise AssertionError("duplicate key accepted")
                elif op in ("commit", "abort"):
                    tx.commit() if op == "commit" else tx.abort()
                    if op == "commit":
                        model = pending
                        assert db.verify() == []
                        with db.read() as snap:
                            assert {o.key: o["v"] for o in snap.objects("Seq")} == model
                    tx, pending = db.write(), dict(model)
                    top = max(model, default=0)
            tx.abort()
    finally:
        remove_db_dir(directory)
