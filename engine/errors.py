"""Exceptions raised by the engine.

Invariant: every message is a single line (no newlines) that names the file,
class or property involved, so `python -m engine` can print it verbatim.
All engine exceptions derive from EngineError.
"""


class EngineError(Exception):
    """Base class of all engine errors."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class FileFormatError(EngineError):
    """The file cannot be used as an engine database."""


class NotAnEngineFileError(FileFormatError):
    """The file does not start with the engine magic."""


class TruncatedFileError(FileFormatError):
    """The file is shorter than its header says (or not page aligned)."""


class UnsupportedVersionError(FileFormatError):
    """The header carries a format version this code does not know."""


class CorruptFileError(FileFormatError):
    """Checksums or tree structure are damaged."""


class SchemaError(EngineError):
    """A schema declaration is invalid."""


class SchemaMismatchError(SchemaError):
    """The schema given to open() cannot be migrated in place."""


class ValidationError(EngineError):
    """An object value does not match its declared property type."""


class DuplicateKeyError(EngineError):
    """An object with this primary key already exists."""


class ObjectNotFoundError(EngineError):
    """No object with this key exists."""


class QueryError(EngineError):
    """A query names an unknown property/operator or compares wrong types."""


class TransactionError(EngineError):
    """A transaction was used after it ended, or a write was attempted in a read."""


class DatabaseClosedError(EngineError):
    """The database handle was closed."""
