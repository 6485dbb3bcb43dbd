"""Key material: the 64-byte key, how it is read, and how a fresh one is made.

A key is exactly 64 bytes: bytes 0-31 are the AES-256 key, bytes 32-63 the
HMAC-SHA224 key (Realm Core's layout). It is accepted as 64 raw bytes or 128 hex
digits (surrounding whitespace and newlines tolerated) from a file, a hex string
from an environment variable, or either form on standard input.

Invariants: a Key never shows its bytes in ``repr``/``str``; every refusal is a
KeyFormatError with one line saying which form is expected.
"""

from __future__ import annotations

import logging
import os
import stat
import string

from ..errors import AlreadyExists, BadPath, KeyFormatError
from ..format.layout import AES_KEY_SIZE, KEY_SIZE

log = logging.getLogger(__name__)

KEY_ENV = "REALMFS_KEY"
HEX_DIGITS = KEY_SIZE * 2
_EXPECTED = f"a key is {KEY_SIZE} raw bytes or {HEX_DIGITS} hex digits"
_HEX = set(string.hexdigits)


class Key:
    """A 64-byte realmfs/Realm key; its bytes are never printed."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes):
        if len(raw) != KEY_SIZE:
            raise KeyFormatError(f"wrong key length: {len(raw)} bytes; {_EXPECTED}")
        self._raw = bytes(raw)

    @property
    def raw(self) -> bytes:
        return self._raw

    @property
    def aes_key(self) -> bytes:
        return self._raw[:AES_KEY_SIZE]

    @property
    def mac_key(self) -> bytes:
        return self._raw[AES_KEY_SIZE:]

    def hex(self) -> str:
        return self._raw.hex()

    def __eq__(self, other) -> bool:
        return isinstance(other, Key) and self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return "Key(<64 bytes hidden>)"

    __str__ = __repr__

    def __bytes__(self) -> bytes:
        return self._raw

    @classmethod
    def generate(cls) -> "Key":
        return cls(os.urandom(KEY_SIZE))


def parse_key(data: bytes | str, source: str = "key") -> Key:
    """Parse raw (64 bytes) or hex (128 digits, whitespace tolerated) key material."""
    text = isinstance(data, str)
    if text:
        # Text (an environment variable) carries only the hex form: 64 characters are not
        # 64 raw bytes, and non-ASCII must be refused, not replaced by '?'.
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise KeyFormatError(f"{source} is not ASCII hex; {_EXPECTED}") from None
    if len(data) == KEY_SIZE and not text:
        # 64 bytes that happen to be a short hex string are still raw; only a full
        # 128-digit string is hex, so there is no ambiguity.
        return Key(data)
    text = data.strip()
    if not text:
        raise KeyFormatError(f"{source} is empty; {_EXPECTED}")
    compact = b"".join(text.split())
    if not all(chr(c) in _HEX for c in compact):
        raise KeyFormatError(f"{source} is not hex and not {KEY_SIZE} raw bytes ({len(data)} bytes read); {_EXPECTED}")
    if len(compact) != HEX_DIGITS:
        raise KeyFormatError(f"{source} has {len(compact)} hex digits; {_EXPECTED}")
    return Key(bytes.fromhex(compact.decode("ascii")))


def read_key_file(path: str) -> Key:
    """Read a key file, warning when group or others may read it."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(HEX_DIGITS * 4 + 1)
    except FileNotFoundError:
        raise BadPath(f"key file {path} does not exist; make one with 'realmfs keygen {path}'") from None
    except IsADirectoryError:
        raise BadPath(f"key file {path} is a directory") from None
    except PermissionError:
        raise BadPath(f"key file {path} is not readable (permission denied)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("key file %s is accessible by group or others (mode %o); run: chmod 600 %s",
                    path, stat.S_IMODE(mode), path)
    return parse_key(data, f"key file {path}")


def key_from_env(environ=os.environ) -> Key | None:
    value = environ.get(KEY_ENV)
    if value is None:
        return None
    return parse_key(value, f"${KEY_ENV}")


def write_key_file(path: str, key: Key) -> None:
    """Write ``key`` as 128 hex digits and a newline, mode 0600; never overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AlreadyExists(f"{path} already exists; refusing to overwrite a key, choose another name") from None
    except FileNotFoundError:
        raise BadPath(f"cannot create {path}: its directory does not exist") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed it further, never widened; be exact
        os.write(fd, (key.hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
