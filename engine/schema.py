"""Schema declaration, validation, persistence and additive migration.

User form (what engine.open takes):

    {"Dog": {"name": "str primary_key", "age": "int index", "owner": "str?",
             "tags": "list[str]", "born": "datetime?"}}

A type is one of int, float, bool, str, bytes, datetime; a trailing "?" makes
it optional (nullable); "list[T]" is a list of non-null T.  Modifiers:
"primary_key" (int or str, not optional, at most one per class) and "index"
(secondary index; not on lists).

Invariant: a class's stored property order is append-only, because objects are
encoded positionally; migration may only add classes, properties and indexes.
"""

import json
from dataclasses import dataclass, field

from .errors import SchemaError, SchemaMismatchError

SCALAR_TYPES = ("int", "float", "bool", "str", "bytes", "datetime")


@dataclass
class Property:
    name: str
    type: str
    optional: bool = False
    is_list: bool = False
    indexed: bool = False

    def spec(self) -> str:
        text = f"list[{self.type}]" if self.is_list else self.type
        return text + ("?" if self.optional else "")

    def same_shape(self, other: "Property") -> bool:
        return (self.type, self.optional, self.is_list) == (other.type, other.optional, other.is_list)


@dataclass
class ClassSchema:
    name: str
    properties: list
    primary_key: str | None = None
    by_name: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.by_name = {p.name: p for p in self.properties}

    def indexed(self):
        return [p for p in self.properties if p.indexed]


def _parse_property(cls: str, name: str, spec: str):
    if not isinstance(name, str) or not name.isidentifier() or "__" in name:
        raise SchemaError(f"{cls}: property name {name!r} must be an identifier without '__'")
    if not isinstance(spec, str):
        raise SchemaError(f"{cls}.{name}: property spec must be a string like 'int?'")
    words = spec.split()
    if not words:
        raise SchemaError(f"{cls}.{name}: empty property spec")
    type_text, modifiers = words[0], set(words[1:])
    unknown = modifiers - {"primary_key", "index"}
    if unknown:
        raise SchemaError(f"{cls}.{name}: unknown modifier {sorted(unknown)[0]!r}")
    optional = type_text.endswith("?")
    type_text = type_text.rstrip("?")
    is_list = type_text.startswith("list[") and type_text.endswith("]")
    if is_list:
        type_text = type_text[5:-1]
    if type_text not in SCALAR_TYPES:
        raise SchemaError(f"{cls}.{name}: unknown type {type_text!r} (use one of {', '.join(SCALAR_TYPES)})")
    primary = "primary_key" in modifiers
    indexed = "index" in modifiers
    if is_list and (primary or indexed):
        raise SchemaError(f"{cls}.{name}: list properties cannot be primary keys or indexed")
    if primary and (optional or type_text not in ("int", "str")):
        raise SchemaError(f"{cls}.{name}: a primary key must be a non-optional int or str")
    return Property(name, type_text, optional, is_list, indexed), primary


def parse_schema(declared) -> dict:
    """User schema dict -> {class name: ClassSchema}."""
    if not isinstance(declared, dict) or not declared:
        raise SchemaError("schema must be a non-empty dict of class name -> {property: spec}")
    classes = {}
    for cls, props in declared.items():
        if not isinstance(cls, str) or not cls.isidentifier():
            raise SchemaError(f"class name {cls!r} must be an identifier")
        if not isinstance(props, dict) or not props:
            raise SchemaError(f"{cls}: properties must be a non-empty dict of name -> spec")
        properties, primary_key = [], None
        for name, spec in props.items():
            prop, primary = _parse_property(cls, name, spec)
            if primary:
                if primary_key is not None:
                    raise SchemaError(f"{cls}: more than one primary key ({primary_key}, {name})")
                primary_key = name
            properties.append(prop)
        classes[cls] = ClassSchema(cls, properties, primary_key)
    return classes


def schema_to_json(classes: dict) -> bytes:
    doc = {name: {"primary_key": c.primary_key,
                  "properties": [[p.name, p.type, p.optional, p.is_list, p.indexed]
                                 for p in c.properties]}
           for name, c in classes.items()}
    return json.dumps(doc, sort_keys=True).encode()


def encode_catalog(classes: dict, tables: dict) -> bytes:
    """The catalog blob: the schema (as a JSON string) and each class's tree roots."""
    return json.dumps({"schema": schema_to_json(classes).decode(), "tables": tables},
                      sort_keys=True).encode()


def schema_from_json(data: bytes) -> dict:
    doc = json.loads(data.decode())
    return {name: ClassSchema(name, [Property(*row) for row in c["properties"]], c["primary_key"])
            for name, c in doc.items()}


def describe(classes: dict) -> dict:
    """Inverse of parse_schema: the user form of a schema."""
    result = {}
    for name, c in classes.items():
        props = {}
        for p in c.properties:
            mods = (" primary_key" if p.name == c.primary_key else "") + (" index" if p.indexed else "")
            props[p.name] = p.spec() + mods
        result[name] = props
    return result


def migrate(stored: dict, wanted: dict):
    """Merge an additive schema change.

    Returns (merged classes, [(class, property) of indexes to build], changed?).
    Raises SchemaMismatchError for anything that would drop or reinterpret data.
    """
    merged, new_indexes, changed = {}, [], False
    for name, old in stored.items():
        if name not in wanted:
            raise SchemaMismatchError(f"schema mismatch: class {name} exists in the file but not in the schema")
        new = wanted[name]
        if new.primary_key != old.primary_key:
            raise SchemaMismatchError(
                f"schema mismatch: {name} primary key is {old.primary_key} in the file, {new.primary_key} in the schema")
        props = []
        for p in old.properties:
            q = new.by_name.get(p.name)
            if q is None:
                raise SchemaMismatchError(f"schema mismatch: property {name}.{p.name} would be removed")
            if not q.same_shape(p):
                raise SchemaMismatchError(
                    f"schema mismatch: {name}.{p.name} is {p.spec()} in the file but {q.spec()} in the schema")
            if p.indexed and not q.indexed:
                raise SchemaMismatchError(f"schema mismatch: index on {name}.{p.name} would be removed")
            if q.indexed and not p.indexed:
                new_indexes.append((name, p.name))
                changed = True
            props.append(Property(p.name, p.type, p.optional, p.is_list, q.indexed))
        for q in new.properties:
            if q.name not in old.by_name:
                props.append(q)
                changed = True
                if q.indexed:
                    new_indexes.append((name, q.name))
        merged[name] = ClassSchema(name, props, old.primary_key)
    for name, new in wanted.items():
        if name not in stored:
            merged[name] = new
            changed = True
    return merged, new_indexes, changed
