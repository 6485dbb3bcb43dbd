"""Model-based test: random writes, queries, commits, aborts, snapshots and
reopens checked against plain dicts.  Runs once with secondary indexes on every
scalar property and once without any."""

import copy
import random

import hypothesis.strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import engine
from engine import Q
from enginetest_support import hypothesis_settings, new_db_dir, remove_db_dir

LONG = "x" * 230   # longer than the index prefix, so index keys get truncated
ITEM_KEYS = ["", "a", "a\x00", "ab", "b", "é", LONG + "1", LONG + "2"]
INTS = st.sampled_from([-(1 << 63), -5, -1, 0, 1, 2, 7, (1 << 63) - 1]) | st.integers(-10, 10)
FLOATS = st.none() | st.sampled_from([-2.25, -0.0, 0.0, 1.5, 1e300])
STRS = st.none() | st.sampled_from(["", "a", "a\x00", "a\x00b", "ab", "b", LONG + "1", LONG + "2"])
VALUES = {"n": INTS, "f": FLOATS, "s": STRS, "b": st.booleans(),
          "t": st.lists(st.integers(-3, 3), max_size=3), "blob": st.sampled_from([b"", b"\x00", b"z" * 3000])}
NOTE_VALUES = {"text": st.sampled_from(["", "hi", "a\x00", LONG]), "n": st.none() | st.integers(-3, 3)}
OPS = ["eq", "ne", "lt", "lte", "gt", "gte"]


def make_schema(indexed: bool) -> dict:
    idx = " index" if indexed else ""
    return {
        "Item": {"k": "str primary_key", "n": "int" + idx, "f": "float?" + idx, "s": "str?" + idx,
                 "b": "bool" + idx, "t": "list[int]", "blob": "bytes"},
        "Note": {"text": "str" + idx, "n": "int?" + idx},
    }


DEFAULTS = {"Item": {"n": 0, "f": None, "s": None, "b": False, "t": [], "blob": b""},
            "Note": {"text": "", "n": None}}


@st.composite
def predicates(draw, class_name, depth=0):
    values = VALUES if class_name == "Item" else NOTE_VALUES
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        left = draw(predicates(class_name, depth + 1))
        right = draw(predicates(class_name, depth + 1))
        return (draw(st.sampled_from(["and", "or"])), left, right)
    props = [p for p in values if p != "t"] + (["k"] if class_name == "Item" else [])
    prop = draw(st.sampled_from(props))
    strategy = st.sampled_from(ITEM_KEYS) if prop == "k" else values[prop]
    value = draw(strategy)
    op = draw(st.sampled_from(OPS if value is not None else ["eq", "ne"]))
    return ("pred", prop, op, value)


def to_q(pred):
    if pred[0] == "pred":
        _, prop, op, value = pred
        return Q(**{f"{prop}__{op}": value})
    left, right = to_q(pred[1]), to_q(pred[2])
    return left & right if pred[0] == "and" else left | right


def model_match(obj, pred) -> bool:
    kind = pred[0]
    if kind == "and":
        return model_match(obj, pred[1]) and model_match(obj, pred[2])
    if kind == "or":
        return model_match(obj, pred[1]) or model_match(obj, pred[2])
    _, prop, op, value = pred
    x = obj[prop]
    if op == "eq":
        return x == value
    if op == "ne":
        return x != value
    if x is None:
        return False
    return {"lt": x < value, "lte": x <= value, "gt": x > value, "gte": x >= value}[op]


class EngineModel(RuleBasedStateMachine):
    indexed = True

    def __init__(self):
        super().__init__()
        self.dir = new_db_dir()
        self.path = str(self.dir / "model.db")
        self.schema = make_schema(self.indexed)
        self.db = engine.open(self.path, schema=self.schema, durability="none")
        self.committed = {"Item": {}, "Note": {}, "next_note": 1}
        self.pending = None
        self.tx = None
        self.snapshots = []   # (snapshot, model copy)

    def teardown(self):
        for snap, _ in self.snapshots:
            snap.close()
        if self.tx is not None:
            self.tx.abort()
        self.db.close()
        remove_db_dir(self.dir)

    # -- transactions ---------------------------------------------------------

    @precondition(lambda self: self.tx is None)
    @rule()
    def begin(self):
        self.tx = self.db.write()
        self.pending = copy.deepcopy(self.committed)

    @precondition(lambda self: self.tx is not None)
    @rule()
    def commit(self):
        self.tx.commit()
        self.tx = None
        self.committed, self.pending = self.pending, None
        assert self.db.verify() == []

    @precondition(lambda self: self.tx is not None)
    @rule()
    def abort(self):
        self.tx.abort()
        self.tx, self.pending = None, None

    @precondition(lambda self: self.tx is None)
    @rule()
    def reopen(self):
        for snap, _ in self.snapshots:
            snap.close()
        self.snapshots = []
        self.db.close()
        self.db = engine.open(self.path, schema=self.schema, durability="none")
        assert self.db.verify() == []

    @precondition(lambda self: len(self.snapshots) < 3)
    @rule()
    def open_snapshot(self):
        self.snapshots.append((self.db.read(), copy.deepcopy(self.committed)))

    @precondition(lambda self: self.snapshots)
    @rule(pred=predicates("Item"))
    def check_old_snapshot(self, pred):
        snap, model = self.snapshots.pop(0)
        self.compare(snap, model, "Item", pred)
        self.compare_all(snap, model)
        snap.close()

    # -- writes -----------------------------------------------------------------

    @precondition(lambda self: self.tx is not None)
    @rule(key=st.sampled_from(ITEM_KEYS), data=st.data())
    def create_item(self, key, data):
        values = {p: data.draw(s) for p, s in VALUES.items() if data.draw(st.booleans())}
        values["k"] = key
        if key in self.pending["Item"]:
            try:
                self.tx.create("Item", values)
            except engine.DuplicateKeyError:
                return
            raise AssertionError("duplicate primary key accepted")
        assert self.tx.create("Item", values) == key
        self.pending["Item"][key] = {**DEFAULTS["Item"], **values}

    @precondition(lambda self: self.tx is not None)
    @rule(data=st.data())
    def create_note(self, data):
        values = {p: data.draw(s) for p, s in NOTE_VALUES.items()}
        new_id = self.tx.create("Note", values)
        assert new_id == self.pending["next_note"]
        self.pending["next_note"] += 1
        self.pending["Note"][new_id] = values

    @precondition(lambda self: self.tx is not None)
    @rule(key=st.sampled_from(ITEM_KEYS), data=st.data())
    def update_item(self, key, data):
        changes = {p: data.draw(s) for p, s in VALUES.items() if data.draw(st.booleans())}
        if key not in self.pending["Item"]:
            try:
                self.tx.update("Item", key, changes)
            except engine.ObjectNotFoundError:
                return
            raise AssertionError("update of a missing object succeeded")
        self.tx.update("Item", key, changes)
        self.pending["Item"][key].update(changes)

    @precondition(lambda self: self.tx is not None)
    @rule(key=st.sampled_from(ITEM_KEYS))
    def delete_item(self, key):
        if key not in self.pending["Item"]:
            try:
                self.tx.delete("Item", key)
            except engine.ObjectNotFoundError:
                return
            raise AssertionError("delete of a missing object succeeded")
        self.tx.delete("Item", key)
        del self.pending["Item"][key]

    @precondition(lambda self: self.tx is not None)
    @rule(count=st.integers(20, 400), seed=st.integers(0, 1000))
    def bulk_create_notes(self, count, seed):
        """Enough objects to split leaves and branches and grow index trees."""
        rng = random.Random(seed)
        for _ in range(count):
            values = {"text": rng.choice(["", "hi", LONG]) + str(rng.randrange(50)),
                      "n": rng.choice([None, rng.randrange(-3, 4)])}
            self.pending["Note"][self.tx.create("Note", values)] = values
            self.pending["next_note"] += 1

    @precondition(lambda self: self.tx is not None and self.pending["Note"])
    @rule(keep_every=st.integers(2, 5), updates=st.booleans())
    def bulk_change_notes(self, keep_every, updates):
        """Deleting/updating runs of objects exercises merges and root collapse."""
        for i, note_id in enumerate(sorted(self.pending["Note"])):
            if i % keep_every == 0:
                continue
            if updates:
                self.tx.update("Note", note_id, {"n": i % 3})
                self.pending["Note"][note_id]["n"] = i % 3
            else:
                self.tx.delete("Note", note_id)
                del self.pending["Note"][note_id]

    @precondition(lambda self: self.tx is not None and self.pending["Note"])
    @rule(data=st.data())
    def delete_note(self, data):
        note_id = data.draw(st.sampled_from(sorted(self.pending["Note"])))
        self.tx.delete("Note", note_id)
        del self.pending["Note"][note_id]

    # -- reads ------------------------------------------------------------------

    def compare(self, txn, model, class_name, pred):
        expected = sorted(k for k, obj in model[class_name].items() if model_match({**obj, "k": k}, pred))
        results = txn.objects(class_name).filter(to_q(pred))
        assert sorted(results.keys()) == expected
        assert results.count() == len(expected)

    def compare_all(self, txn, model):
        for class_name in ("Item", "Note"):
            assert txn.count(class_name) == len(model[class_name])
            for key, values in model[class_name].items():
                obj = txn.get(class_name, key)
                assert obj is not None and obj.key == key
                expected = {**values, "k": key} if class_name == "Item" else values
                assert dict(obj) == expected

    @rule(pred=predicates("Item"))
    def query_items(self, pred):
        if self.tx is not None:
            self.compare(self.tx, self.pending, "Item", pred)
        with self.db.read() as snap:
            self.compare(snap, self.committed, "Item", pred)

    @rule(pred=predicates("Note"))
    def query_notes(self, pred):
        with self.db.read() as snap:
            self.compare(snap, self.committed, "Note", pred)

    @rule(prop=st.sampled_from(["n", "f", "s", "b"]), descending=st.booleans())
    def ordered(self, prop, descending):
        with self.db.read() as snap:
            got = snap.objects("Item").order_by(("-" if descending else "") + prop, "k").keys()
        rows = sorted(self.committed["Item"].items())
        rows.sort(key=lambda kv: (kv[1][prop] is not None, kv[1][prop]), reverse=descending)
        assert got == [k for k, _ in rows]

    @invariant()
    def committed_state_matches(self):
        with self.db.read() as snap:
            self.compare_all(snap, self.committed)


class IndexedModel(EngineModel):
    indexed = True


class UnindexedModel(EngineModel):
    indexed = False


TestModelWithIndexes = IndexedModel.TestCase
TestModelWithIndexes.settings = hypothesis_settings(fast_examples=150, steps=40)
TestModelWithoutIndexes = UnindexedModel.TestCase
TestModelWithoutIndexes.settings = hypothesis_settings(fast_examples=150, steps=40)
