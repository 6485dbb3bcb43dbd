"""Keys kept in the platform's secret store instead of a file.

Backends, in order:

1. the Linux kernel keyring through the ``keyctl`` command (Debian package
   ``keyutils``): a ``user`` key named ``realmfs:NAME`` in the user keyring ``@u``.
   It lives in kernel memory only (gone after a reboot or when the user's last
   session ends), never on disk, and is readable only by the same uid.
2. the ``keyring`` Python package (desktop stores: Secret Service, KWallet, macOS
   Keychain, Windows Credential Locker), if it is importable; service ``realmfs``.

``$REALMFS_KEYRING`` = ``keyctl`` or ``python`` forces one backend.

Invariants: key bytes travel only through pipes (stdin/stdout), never on a command
line; every failure is a KeyringError with one line saying what to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import AlreadyExists, KeyringError
from .key import Key, parse_key

SERVICE = "realmfs"
BACKEND_ENV = "REALMFS_KEYRING"
_KEYRING = "@u"


def _description(name: str) -> str:
    if not name or any(c.isspace() for c in name):
        raise KeyringError(f"keyring name {name!r} must be non-empty and without spaces")
    return f"{SERVICE}:{name}"


def _keyctl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["keyctl", *args], input=data, capture_output=True, check=False)


def _backend() -> str:
    forced = os.environ.get(BACKEND_ENV)
    if forced in ("keyctl", "python"):
        return forced
    if shutil.which("keyctl"):
        return "keyctl"
    try:
        import keyring  # noqa: F401
    except ImportError:
        raise KeyringError("no secret store: install 'keyutils' (keyctl, Linux kernel keyring) "
                           "or the 'keyring' Python package") from None
    return "python"


def _keyctl_id(name: str) -> str | None:
    found = _keyctl("search", _KEYRING, "user", _description(name))
    return found.stdout.decode().strip() if found.returncode == 0 else None


def store(name: str, key: Key, overwrite: bool = False) -> str:
    """Put ``key`` in the store under ``name``; returns where it went (for messages)."""
    if _backend() == "keyctl":
        if not overwrite and _keyctl_id(name) is not None:
            raise AlreadyExists(f"the kernel keyring already holds a key named {name!r}; choose another name")
        added = _keyctl("padd", "user", _description(name), _KEYRING, data=key.hex().encode())
        if added.returncode != 0:
            raise KeyringError(f"keyctl could not store the key: {added.stderr.decode().strip()}")
        return f"the kernel user keyring (@u) as 'user' key {_description(name)!r}"
    import keyring
    if not overwrite and keyring.get_password(SERVICE, name) is not None:
        raise AlreadyExists(f"the keyring already holds a key named {name!r}; choose another name")
    try:
        keyring.set_password(SERVICE, name, key.hex())
    except Exception as error:  # noqa: BLE001 - any backend failure is one message
        raise KeyringError(f"the keyring could not store the key: {error}") from None
    return f"the system keyring (service {SERVICE!r}, name {name!r})"


def load(name: str) -> Key:
    """The key stored under ``name``."""
    if _backend() == "keyctl":
        key_id = _keyctl_id(name)
        if key_id is None:
            raise KeyringError(f"no key named {name!r} in the kernel user keyring; "
                               f"store one with 'realmfs keygen --keyring {name}'")
        piped = _keyctl("pipe", key_id)
        if piped.returncode != 0:
            raise KeyringError(f"keyctl could not read key {name!r}: {piped.stderr.decode().strip()}")
        return parse_key(piped.stdout, f"keyring entry {name!r}")
    import keyring
    try:
        value = keyring.get_password(SERVICE, name)
    except Exception as error:  # noqa: BLE001
        raise KeyringError(f"the keyring could not be read: {error}") from None
    if value is None:
        raise KeyringError(f"no key named {name!r} in the keyring; store one with 'realmfs keygen --keyring {name}'")
    return parse_key(value, f"keyring entry {name!r}")


def remove(name: str) -> None:
    """Delete the key stored under ``name`` (missing is not an error)."""
    if _backend() == "keyctl":
        key_id = _keyctl_id(name)
        if key_id is not None:
            _keyctl("unlink", key_id, _KEYRING)
        return
    import keyring
    try:
        keyring.delete_password(SERVICE, name)
    except Exception:  # noqa: BLE001 - absent already
        pass
