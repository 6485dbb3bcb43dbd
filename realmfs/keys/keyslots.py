"""Key slots: the master key wrapped under passphrases and recovery keys.

A backing directory unlocked by a passphrase still has one random 64-byte master
key (the key its pages are encrypted with, exactly as a raw-key setup). The
config's ``keyslots`` list holds that key wrapped once per way of unlocking it::

    {"type": "passphrase" | "keyfile",
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1}      # passphrase slots
          | {"name": "argon2id", "iterations": 3, "lanes": 4, "memory_cost": 65536}
          | {"name": "hkdf-sha256"},                            # keyfile slots
     "salt": hex(16), "nonce": hex(12),
     "wrapped": hex(AES-256-GCM(kek, nonce, master key, aad=canonical JSON of type/kdf/salt))}

Invariants
* A slot never holds the master key in clear; the KEK is derived from the secret
  with the parameters recorded in the slot, so old slots keep working when the
  defaults change.
* The slot's type, KDF parameters and salt are GCM associated data: weakening a
  slot's parameters in the config makes the slot fail, not leak.
* The config MAC (config.save, keyed by the master key) covers the whole list,
  so slots cannot be added or removed without the master key.
* Changing a passphrase replaces one slot and never touches the master key;
  ``rekey`` is what rotates the master key.
"""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import Damaged, WrongPassphrase
from .key import Key

PASSPHRASE = "passphrase"
KEYFILE = "keyfile"
SLOT_TYPES = (PASSPHRASE, KEYFILE)
KEK_SIZE = 32
SALT_SIZE = 16
NONCE_SIZE = 12
# scrypt's recommended interactive cost (~0.4 s, 128 MiB here). Tests and slow
# machines may lower it with $REALMFS_SCRYPT_N; the value used is recorded per slot.
DEFAULT_SCRYPT_N = 2 ** 17
SCRYPT_N_ENV = "REALMFS_SCRYPT_N"
ARGON2_DEFAULTS = {"iterations": 3, "lanes": 4, "memory_cost": 65536}
_HKDF_INFO = b"realmfs-keyfile-slot"


def default_kdf(name: str = "scrypt") -> dict:
    """KDF parameters for a new passphrase slot."""
    if name == "scrypt":
        n = int(os.environ.get(SCRYPT_N_ENV, DEFAULT_SCRYPT_N))
        if n < 2 or n & (n - 1):
            raise ValueError(f"${SCRYPT_N_ENV} must be a power of two, got {n}")
        return {"name": "scrypt", "n": n, "r": 8, "p": 1}
    if name == "argon2id":
        return dict(ARGON2_DEFAULTS, name="argon2id")
    raise ValueError(f"unknown KDF {name!r} (scrypt or argon2id)")


def derive_kek(secret: bytes, kdf: dict, salt: bytes) -> bytes:
    """The 32-byte key-encryption key of a slot, from its secret and recorded parameters."""
    name = kdf.get("name")
    if name == "scrypt":
        return Scrypt(salt=salt, length=KEK_SIZE, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])).derive(secret)
    if name == "argon2id":
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id   # cryptography >= 44
        return Argon2id(salt=salt, length=KEK_SIZE, iterations=int(kdf["iterations"]),
                        lanes=int(kdf["lanes"]), memory_cost=int(kdf["memory_cost"])).derive(secret)
    if name == "hkdf-sha256":
        # keyfile slots: the secret is itself 64 random bytes, a slow KDF adds nothing
        return HKDF(algorithm=hashes.SHA256(), length=KEK_SIZE, salt=salt, info=_HKDF_INFO).derive(secret)
    raise Damaged(f"key slot uses an unknown KDF {name!r}; this realmfs is too old for this config")


def _associated_data(slot: dict) -> bytes:
    bound = {"type": slot["type"], "kdf": slot["kdf"], "salt": slot["salt"]}
    return json.dumps(bound, sort_keys=True, separators=(",", ":")).encode()


def wrap(kind: str, kek: bytes, kdf: dict, salt: bytes, master: Key) -> dict:
    """A slot holding ``master`` under ``kek`` (a fresh nonce every time)."""
    slot = {"type": kind, "kdf": kdf, "salt": salt.hex()}
    nonce = os.urandom(NONCE_SIZE)
    wrapped = AESGCM(kek).encrypt(nonce, master.raw, _associated_data(slot))
    return dict(slot, nonce=nonce.hex(), wrapped=wrapped.hex())


def make_slot(kind: str, secret: bytes, master: Key, kdf: dict | None = None) -> dict:
    """A new slot for ``secret`` (a passphrase's bytes, or a recovery key's 64 bytes)."""
    if kind not in SLOT_TYPES:
        raise ValueError(f"unknown slot type {kind!r}")
    if kdf is None:
        kdf = default_kdf() if kind == PASSPHRASE else {"name": "hkdf-sha256"}
    salt = os.urandom(SALT_SIZE)
    return wrap(kind, derive_kek(secret, kdf, salt), kdf, salt, master)


def slot_kek(slot: dict, secret: bytes) -> bytes:
    return derive_kek(secret, slot["kdf"], bytes.fromhex(slot["salt"]))


def open_with_kek(slot: dict, kek: bytes) -> Key | None:
    """The master key in ``slot``, or None if ``kek`` is not this slot's key."""
    try:
        raw = AESGCM(kek).decrypt(bytes.fromhex(slot["nonce"]), bytes.fromhex(slot["wrapped"]),
                                  _associated_data(slot))
    except InvalidTag:
        return None
    except (KeyError, ValueError, TypeError):
        raise Damaged("a key slot in the config is malformed") from None
    return Key(raw)


class Unlocked:
    """The master key and how it was obtained (slot index and KEK, for re-wrapping)."""

    def __init__(self, master: Key, index: int | None = None, kek: bytes | None = None):
        self.master, self.index, self.kek = master, index, kek


def unlock(slots: list, secret: bytes, kind: str) -> Unlocked:
    """Try every slot of ``kind`` with ``secret``; raise WrongPassphrase if none opens."""
    candidates = [(i, s) for i, s in enumerate(slots) if s.get("type") == kind]
    if not candidates:
        raise WrongPassphrase(f"the config has no {kind} slot")
    kek_by_params: dict[str, bytes] = {}
    for index, slot in candidates:
        # slots with the same KDF and salt share a KEK: derive it once (scrypt is slow)
        # the config's MAC can only be checked once a slot opened: a damaged slot is
        # Damaged here, as in open_with_kek, not an internal error
        try:
            params = json.dumps([slot["kdf"], slot["salt"]], sort_keys=True)
            if params not in kek_by_params:
                kek_by_params[params] = slot_kek(slot, secret)
        except (KeyError, ValueError, TypeError, AttributeError):
            raise Damaged("a key slot in the config is malformed") from None
        master = open_with_kek(slot, kek_by_params[params])
        if master is not None:
            return Unlocked(master, index, kek_by_params[params])
    what = "passphrase" if kind == PASSPHRASE else "recovery key"
    raise WrongPassphrase(f"wrong {what}: it opens none of the {len(candidates)} {kind} slot(s)")


def rewrap(slot: dict, kek: bytes, master: Key) -> dict:
    """The same slot (type, KDF, salt: same secret) holding another master key."""
    return wrap(slot["type"], kek, slot["kdf"], bytes.fromhex(slot["salt"]), master)


def has_kind(slots: list, kind: str) -> bool:
    return any(s.get("type") == kind for s in slots)
