"""engine: a small Realm/LMDB-style object database over one mmap'ed file.

    import engine
    db = engine.open("pets.db", schema={"Dog": {"name": "str primary_key",
                                                "age": "int index"}})
    with db.write() as tx:
        tx.create("Dog", {"name": "Rex", "age": 3})
    with db.read() as snap:
        snap.get("Dog", "Rex")
        snap.objects("Dog").filter(age__gt=2).order_by("-age").count()

This package never imports realmfs.  See docs/engine-format.md for the format.
"""

from .db import Database, open_database as open
from .errors import (CorruptFileError, DatabaseClosedError, DuplicateKeyError, EngineError,
                     FileFormatError, NotAnEngineFileError, ObjectNotFoundError, QueryError,
                     SchemaError, SchemaMismatchError, TransactionError, TruncatedFileError,
                     UnsupportedVersionError, ValidationError)
from .objects import Obj
from .query import Q

__all__ = [
    "open", "Database", "Obj", "Q", "EngineError", "FileFormatError", "NotAnEngineFileError",
    "TruncatedFileError", "UnsupportedVersionError", "CorruptFileError", "SchemaError",
    "SchemaMismatchError", "ValidationError", "DuplicateKeyError", "ObjectNotFoundError",
    "QueryError", "TransactionError", "DatabaseClosedError",
]
