"""Objects: tables of typed records, primary keys and secondary indexes.

Each class has one object tree (key = encoded primary key, or the big-endian
u64 object id for classes without one; value = encoded record without the
primary key) and one index tree per indexed property (key = encoded value +
object key, value empty: encoded values are prefix-free, so the object key is
what follows the value, codec.index_value_length).  Invariant: after every write operation the index trees hold exactly one
entry per object and property, and the catalog count equals the number of
objects; tools.verify checks both.
"""

from .btree import Tree
from .codec import (INDEX_PREFIX, INT64_MAX, INT64_MIN, KEY_U64, RecordCodec, check_value, decode_object_id,
                    decode_primary_key, default_value, encode_index_value, encode_object_id, encode_primary_key,
                    index_value_length)
from .errors import DuplicateKeyError, ObjectNotFoundError, QueryError, ValidationError
from .layout import MAX_KEY_SIZE

_INT_KEY = KEY_U64.pack
# An index key is encoded value (<= 1 + 2 * INDEX_PREFIX + 2 bytes) + object
# key, so primary keys are capped well below the tree's MAX_KEY_SIZE.
MAX_PRIMARY_KEY_SIZE = 300
assert 1 + 2 * INDEX_PREFIX + 2 + MAX_PRIMARY_KEY_SIZE <= MAX_KEY_SIZE


_PLAIN = {"int": int, "float": float, "bool": bool, "str": str, "bytes": bytes}


class Obj(dict):
    """A read-only copy of an object's properties; `.key` is its pk or id."""

    __slots__ = ("key",)

    def __repr__(self):
        return f"Obj({self.key!r}, {dict.__repr__(self)})"


class TableState:
    """One class's trees and counters inside a transaction."""

    def __init__(self, cls, tree, indexes, count, next_id):
        self.cls = cls
        self.tree = tree
        self.indexes = indexes
        self.count = count
        self.next_id = next_id
        self.dirty = False
        self.names = [p.name for p in cls.properties]
        self.name_set = frozenset(self.names)
        self.wheres = [f"{cls.name}.{name}" for name in self.names]   # for error messages
        self.indexed_props = [(i, p) for i, p in enumerate(cls.properties) if p.indexed]
        self.pk_prop = cls.by_name.get(cls.primary_key) if cls.primary_key else None
        self.pk_pos = self.names.index(cls.primary_key) if cls.primary_key else None
        self.codec = RecordCodec.for_props(cls.properties, self.pk_pos)
        self.int_keys = self.pk_prop is not None and self.pk_prop.type == "int"
        # Index entries store no value: the object key is the index key's tail,
        # its last 8 bytes when object keys are always 8 bytes (int primary
        # keys, object ids), else what follows the prefix-free encoded value.
        short = self.pk_prop is None or self.int_keys
        self.object_key_in = {p.name: (lambda k: k[-8:]) if short else
                              (lambda k, p=p: k[index_value_length(p, k):]) for p in cls.indexed()}
        # values_for fast path: a value of exactly this type needs no
        # normalisation by check_value (ints still need the range check).
        self.fields = [(p.name, None if p.is_list else _PLAIN.get(p.type), p.type == "int" and not p.is_list,
                        p, self.wheres[i], i) for i, p in enumerate(cls.properties)]

    @classmethod
    def from_catalog(cls, classes, tables, name, view, txn):
        if name not in classes:
            raise QueryError(f"unknown class {name!r} (known: {', '.join(sorted(classes))})")
        entry = tables.get(name) or {"root": 0, "count": 0, "next_id": 1, "indexes": {}}
        schema = classes[name]
        indexes = {p.name: Tree(view, entry["indexes"].get(p.name, 0), txn)
                   for p in schema.indexed()}
        return cls(schema, Tree(view, entry["root"], txn), indexes, entry["count"], entry["next_id"])

    def flush(self, alloc, out, txnid) -> dict:
        return {"root": self.tree.flush(alloc, out, txnid),
                "count": self.count, "next_id": self.next_id,
                "indexes": {name: tree.flush(alloc, out, txnid)
                            for name, tree in self.indexes.items()}}

    # -- keys and records ------------------------------------------------------

    def object_key(self, key) -> bytes:
        if self.int_keys and type(key) is int and INT64_MIN <= key <= INT64_MAX:
            return _INT_KEY(key - INT64_MIN)      # fast path of point reads
        if self.pk_prop is not None:
            value = check_value(f"{self.cls.name}.{self.pk_prop.name} (primary key)", self.pk_prop, key)
            encoded = encode_primary_key(self.pk_prop, value)
            if len(encoded) > MAX_PRIMARY_KEY_SIZE:
                raise ValidationError(
                    f"{self.cls.name}: primary key longer than {MAX_PRIMARY_KEY_SIZE} bytes when encoded")
            return encoded
        if isinstance(key, bool) or not isinstance(key, int) or not 0 < key < 1 << 63:
            raise ValidationError(f"{self.cls.name}: object id must be a positive int, got {key!r:.60}")
        return encode_object_id(key)

    def user_key(self, key: bytes):
        if self.pk_prop is not None:
            return decode_primary_key(self.pk_prop, key)
        return decode_object_id(key)

    def decode(self, key: bytes, record: bytes) -> list:
        """Property values of the object stored under `key`."""
        if self.pk_prop is None:
            return self.codec.decode(record)
        return self.codec.decode(record, decode_primary_key(self.pk_prop, key))

    def values_for(self, values: dict, base=None) -> list:
        if not isinstance(values, dict):
            raise ValidationError(f"{self.cls.name}: values must be a dict, got {type(values).__name__}")
        if not self.name_set.issuperset(values):
            unknown = sorted(set(values) - self.name_set)
            raise ValidationError(f"{self.cls.name}: unknown property {unknown[0]!r}")
        result = []
        for name, plain, is_int, prop, where, i in self.fields:
            if name in values:
                value = values[name]
                if (type(value) is not plain or is_int and not INT64_MIN <= value <= INT64_MAX
                        or plain is str and not value.isascii()):      # non-ASCII: is it UTF-8?
                    value = check_value(where, prop, value)
                result.append(value)
            else:
                result.append(base[i] if base is not None else default_value(prop))
        return result

    def index_entries(self, key: bytes, values: list) -> list:
        return [(prop.name, encode_index_value(prop, values[i]) + key) for i, prop in self.indexed_props]

    # -- writes ----------------------------------------------------------------

    def insert(self, values: dict):
        vals = self.values_for(values)
        if self.pk_prop is not None:
            if self.cls.primary_key not in values:
                raise ValidationError(f"{self.cls.name}: primary key {self.cls.primary_key!r} is required")
            key = self.object_key(vals[self.pk_pos])
            if not self.tree.beyond_tail(key) and self.tree.get(key) is not None:
                raise DuplicateKeyError(f"{self.cls.name}: primary key {vals[self.pk_pos]!r:.60} already exists")
            user_key = vals[self.pk_pos]
        else:
            user_key = self.next_id
            key = encode_object_id(user_key)
            self.next_id += 1
        self.restore(key, vals)
        return user_key

    def restore(self, key: bytes, vals: list):
        """Store a new object under a known key (insert, and loading a copy)."""
        self.tree.put(key, self.codec.encode(vals))
        for name, index_key in self.index_entries(key, vals):
            self.indexes[name].put(index_key, b"")
        self.count += 1
        self.dirty = True

    def load(self, user_key):
        key = self.object_key(user_key)
        record = self.tree.get(key)
        if record is None:
            raise ObjectNotFoundError(f"{self.cls.name}: no object with key {user_key!r:.60}")
        return key, self.codec.decode(record, user_key)

    def modify(self, user_key, changes: dict):
        key, old = self.load(user_key)
        new = self.values_for(changes, old)
        if self.pk_prop is not None and new[self.pk_pos] != old[self.pk_pos]:
            raise ValidationError(f"{self.cls.name}: the primary key cannot be changed")
        record = self.codec.encode(new)     # first: nothing changes if it cannot be encoded
        old_entries = dict(self.index_entries(key, old))
        for name, index_key in self.index_entries(key, new):
            if old_entries[name] != index_key:
                self.indexes[name].delete(old_entries[name])
                self.indexes[name].put(index_key, b"")
        self.tree.put(key, record)
        self.dirty = True

    def remove(self, user_key):
        key, old = self.load(user_key)
        for name, index_key in self.index_entries(key, old):
            self.indexes[name].delete(index_key)
        self.tree.delete(key)
        self.count -= 1
        self.dirty = True

    def add_index(self, prop_name: str, view, txn):
        """Build a new index from all objects (schema migration)."""
        tree = Tree(view, 0, txn)
        pos = self.names.index(prop_name)
        prop = self.cls.properties[pos]
        for key, record in list(self.tree.items()):
            value = self.decode(key, record)[pos]
            tree.put(encode_index_value(prop, value) + key, b"")
        self.indexes[prop_name] = tree
        self.dirty = True

