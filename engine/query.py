"""Queries: predicates (Q), planning onto key ranges, results.

    snap.objects("Dog").filter(age__gt=2, name="Rex")          # and
    snap.objects("Dog").filter(Q(age__lt=2) | Q(owner=None))   # or
    ... .order_by("-age", "name"), .count(), .first(), iteration

Operators: eq (default), ne, lt, lte, gt, gte.  Null semantics: eq/ne None test
for null; range predicates never match null.  Planning: a predicate on the
primary key or an indexed property becomes a key-range scan (Scan); an `and`
intersects the scans on the same tree and runs the most selective-looking one
(equality first); an `or` is planned only if every branch is, as a union.
Every candidate is re-checked against the full predicate, so plans only need
to return a superset of the matches.  Results are materialised before they
are yielded, so iterating inside a write transaction while writing is safe.
"""

import datetime as dt

from .codec import check_value, encode_index_value, encode_primary_key
from .errors import QueryError, ValidationError
from .objects import Obj

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte")
RANGE_OPS = ("lt", "lte", "gt", "gte")


class Q:
    """A predicate tree: Q(age__gt=2, name="Rex") is an `and`; combine with & and |."""

    def __init__(self, *children, _op="and", **predicates):
        self.op = _op
        self.children = list(children)
        for name, value in predicates.items():
            prop, _, oper = name.partition("__")
            self.children.append(("pred", prop, oper or "eq", value))

    def __and__(self, other):
        return Q(self, _q(other), _op="and")

    def __or__(self, other):
        return Q(self, _q(other), _op="or")


def _q(value) -> "Q":
    if not isinstance(value, Q):
        raise QueryError(f"Q objects combine with Q objects, not {type(value).__name__} {value!r:.60}")
    return value


def _naive_utc(value):
    return value if value.tzinfo is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)


def comparable(prop):
    """None, or a function mapping values of `prop` to values that compare
    without error and as their keys do: datetimes become naive UTC (a naive
    datetime is stored as UTC), so aware and naive ones can be compared."""
    if prop.type != "datetime":
        return None
    if prop.is_list:
        return lambda values: None if values is None else [_naive_utc(v) for v in values]
    return lambda value: None if value is None else _naive_utc(value)


def _compile(node, table):
    """-> (test(values) -> bool, plan(table) -> list of object keys or None)."""
    if isinstance(node, Q):
        parts = [_compile(child, table) for child in node.children]
        tests = [t for t, _ in parts]
        if len(tests) == 1:
            return parts[0]
        if node.op == "and":
            def test(values, tests=tuple(tests)):
                for t in tests:
                    if not t(values):
                        return False
                return True
            return test, _plan_and([p for _, p in parts])

        def test(values, tests=tuple(tests)):
            for t in tests:
                if t(values):
                    return True
            return False
        return test, _plan_or([p for _, p in parts])
    _, prop_name, oper, value = node
    prop = table.cls.by_name.get(prop_name)
    if prop is None:
        raise QueryError(f"{table.cls.name}: unknown property {prop_name!r}")
    if oper not in OPERATORS:
        raise QueryError(f"{table.cls.name}.{prop_name}: unknown operator {oper!r} (use {', '.join(OPERATORS)})")
    if value is None and oper in RANGE_OPS:
        raise QueryError(f"{table.cls.name}.{prop_name}: {oper} needs a value, not None")
    try:
        if value is not None:
            value = check_value(f"{table.cls.name}.{prop_name}", prop, value)
    except ValidationError as exc:
        raise QueryError(str(exc)) from None
    pos = table.names.index(prop_name)
    return _predicate(pos, oper, value, comparable(prop)), _plan_predicate(table, prop, oper, value)


def _predicate(pos, oper, value, norm):
    if norm is not None:
        value = norm(value)
        test = _predicate(0, oper, value, None)
        return lambda v: test((norm(v[pos]),))
    if oper == "eq":
        return lambda v: v[pos] == value
    if oper == "ne":
        return lambda v: v[pos] != value
    compare = {"lt": lambda a: a < value, "lte": lambda a: a <= value,
               "gt": lambda a: a > value, "gte": lambda a: a >= value}[oper]
    return lambda v: v[pos] is not None and compare(v[pos])


class Scan:
    """A key range over the object tree (primary key) or one index tree.

    Bounds are encoded keys; the scan starts at `low` and stops at the first key
    whose first len(high) bytes exceed `high` (encodings are prefix-free, so
    that is the first key whose value is past the upper bound).  Calling it
    gives [(object key, record or None)]: a scan of the object tree has each
    record in hand and hands it on (no second lookup); an index scan gives
    None, and `object_key_of` cuts the object key out of each index key.
    """

    def __init__(self, tree, object_key_of, low, high):
        self.tree = tree
        self.object_key_of = object_key_of     # None: the object tree itself
        self.low = low
        self.high = high

    def narrowed(self, other: "Scan") -> "Scan":
        """Intersection with another scan of the same tree."""
        lows = [b for b in (self.low, other.low) if b is not None]
        highs = [b for b in (self.high, other.high) if b is not None]
        return Scan(self.tree, self.object_key_of, max(lows) if lows else None,
                    min(highs) if highs else None)

    def __call__(self) -> list:
        rows, high, key_of, resolve = [], self.high, self.object_key_of, self.tree.resolve
        for key, stored in self.tree.items(self.low, raw=True):
            if high is not None and key[:len(high)] > high:
                break
            rows.append((key, resolve(stored)) if key_of is None else (key_of(key), None))
        return rows


def _plan_predicate(table, prop, oper, value):
    if oper == "ne":
        return None
    if prop.name == table.cls.primary_key:
        tree, key_of, encode = table.tree, None, lambda v: encode_primary_key(prop, v)
    elif prop.name in table.indexes:
        tree, key_of = table.indexes[prop.name], table.object_key_in[prop.name]
        encode = lambda v: encode_index_value(prop, v)   # noqa: E731
    else:
        return None
    if oper == "eq":
        return Scan(tree, key_of, encode(value), encode(value))
    if oper in ("gt", "gte"):
        return Scan(tree, key_of, encode(value), b"\x02" if prop.optional else None)  # past non-nulls
    return Scan(tree, key_of, b"\x01" if prop.optional else None, encode(value))     # skip nulls


def _plan_and(plans):
    """Intersect the scans per tree; prefer the narrowest-looking one."""
    by_tree = {}
    for plan in plans:
        if isinstance(plan, Scan):
            key = id(plan.tree)
            by_tree[key] = by_tree[key].narrowed(plan) if key in by_tree else plan
    if not by_tree:
        usable = [p for p in plans if p is not None]
        return usable[0] if usable else None
    scans = list(by_tree.values())
    return min(scans, key=lambda s: (s.low != s.high, s.low is None or s.high is None))


def _plan_or(plans):
    if not plans or any(p is None for p in plans):
        return None

    def plan():
        found = {}
        for p in plans:
            for key, record in p():
                if found.get(key) is None:
                    found[key] = record
        return list(found.items())
    return plan


class Results:
    """A lazily evaluated query over one class in one transaction."""

    def __init__(self, txn, table, condition=None, ordering=()):
        self._txn = txn
        self._table = table
        self._condition = condition
        self._ordering = tuple(ordering)

    def filter(self, *conditions, **predicates):
        parts = list(conditions)
        if predicates:
            parts.append(Q(**predicates))
        for part in parts:
            if not isinstance(part, Q):
                raise QueryError(f"filter() takes Q objects and name__op=value, got {part!r:.60}")
        if self._condition is not None:
            parts.insert(0, self._condition)
        if not parts:
            return self
        return Results(self._txn, self._table, parts[0] if len(parts) == 1 else Q(*parts),
                       self._ordering)

    def order_by(self, *names):
        for name in names:
            if not isinstance(name, str):
                raise QueryError(f"{self._table.cls.name}: order_by takes property names, got {name!r:.60}")
            if name.lstrip("-") not in self._table.cls.by_name:
                raise QueryError(f"{self._table.cls.name}: cannot order by unknown property {name!r}")
        return Results(self._txn, self._table, self._condition, names)

    def _matches(self):
        """[(object key, values)] matching the condition, in key or index order.
        Each record is read once: from the object tree's scan, or (index scans)
        by one lookup of the object key."""
        self._txn._check_open()
        table = self._table
        decode = table.decode
        if self._condition is None:
            return [(k, decode(k, r)) for k, r in table.tree.items()]
        test, plan = _compile(self._condition, table)
        if plan is None:
            rows = ((k, decode(k, r)) for k, r in table.tree.items())
        else:
            rows = []
            get = table.tree.get
            for key, record in plan():
                if record is None:
                    record = get(key)
                    if record is None:
                        continue
                rows.append((key, decode(key, record)))
        return [(k, v) for k, v in rows if test(v)]

    def _ordered(self):
        rows = self._matches()
        for name in reversed(self._ordering):
            pos = self._table.names.index(name.lstrip("-"))
            norm = comparable(self._table.cls.by_name[name.lstrip("-")]) or (lambda value: value)
            rows.sort(key=lambda row: (row[1][pos] is not None, norm(row[1][pos])),
                      reverse=name.startswith("-"))
        return rows

    def __iter__(self):
        table = self._table
        names, pk_pos, user_key = table.names, table.pk_pos, table.user_key
        for key, values in self._ordered():
            obj = Obj(zip(names, values))
            obj.key = values[pk_pos] if pk_pos is not None else user_key(key)
            yield obj

    def keys(self):
        return [self._table.user_key(k) for k, _ in self._ordered()]

    def count(self) -> int:
        if self._condition is None:
            self._txn._check_open()
            return self._table.count
        return len(self._matches())

    def first(self):
        for obj in self:
            return obj
        return None
