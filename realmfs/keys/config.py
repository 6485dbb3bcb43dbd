"""The backing directory's config: format version, key check value and options.

``realmfs init`` writes ``BACKING/.realmfs.conf`` (JSON) so that a wrong key is
refused before any file is touched, even in an empty directory. It holds:

* ``version``       config format version
* ``realm_pattern`` glob for files kept in Realm Core's own layout (default ``*.realm``)
* ``plain_patterns`` globs for files kept as they are, unencrypted: Realm Core's auxiliary
                    files, which Realm Core itself never encrypts (``X.realm.lock``, the
                    ``.note`` FIFO, the ``.management`` directory, ...; see ``kind_of``).
                    Absent when it is the default for the realm pattern
                    (``default_plain_patterns``), so configs of older versions keep their MAC
* ``key_check``     HMAC-SHA224(mac key, context || AES-256(aes key, 16 zero bytes)):
                    proves both halves of the key without revealing either
* ``keyslots``      wrapped copies of the key (passphrases, recovery keys); may be empty
                    (see keyslots.py)
* ``rekey``         present only while ``realmfs rekey`` runs: the new key's check value,
                    where the new key is, the new key slots (see offline.py); a mount or
                    tool other than rekey refuses the directory while it is there
* ``mac``           HMAC-SHA224(mac key, context || canonical JSON of all other fields):
                    the options cannot be changed without the key

Every file under BACKING is of one kind, decided by ``Config.kind_of`` alone: ``plain``
(a plain-pattern name, or anything under a directory of such a name), else ``realm``
(the realm pattern), else ``header`` (realmfs's header layout).

Invariants: the file is replaced atomically (temp file, fsync, rename, fsync of
the directory); a config that fails ``unlock`` is never used. Scanning the directory's
files (and checking a key against them where there is no config) is backingscan.py's.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..durable import TEMP_SUFFIX, write_atomically
from ..errors import AlreadyExists, BadPath, Damaged, WrongKey
from .key import Key

CONFIG_NAME = ".realmfs.conf"
LOCK_NAME = ".realmfs.lock"
RESERVED_NAMES = frozenset({CONFIG_NAME, LOCK_NAME, CONFIG_NAME + TEMP_SUFFIX})
# per-file temporaries of offline tools (rekey, encrypt, decrypt): never user data, anywhere
TOOL_TEMP_SUFFIX = ".realmfs-tmp"
# the mount's temporaries of a rename across layouts (transcode.py): PREFIX + random + TOOL_TEMP_SUFFIX;
# hidden and reserved on the mount at every level, swept at the next mount
RENAME_TEMP_PREFIX = ".realmfs-rename-"
# FUSE's silly-renamed unlinked-but-open files (fuseops.HIDDEN_PREFIX): not user data either
FUSE_HIDDEN_PREFIX = ".fuse_hidden"
CONFIG_VERSION = 1
DEFAULT_REALM_PATTERN = "*.realm"
# What Realm Core keeps beside a database X and never encrypts, also with a key set
# (realm-core src/realm/db.cpp DB::get_core_file, backup_restore.cpp): the lock file
# (shared info, mmapped), the notification FIFO, the management directory (lock and
# mutex emulation FIFOs/files), the legacy log header and the upgrade backup's text log.
# Also beside X.fresh, the copy a sync client reset downloads. See docs/threat-model.md.
REALM_AUX_SUFFIXES = (".lock", ".note", ".management", ".log", ".backup-log")
REALM_AUX_BASES = ("", ".fresh")
KIND_REALM, KIND_HEADER, KIND_PLAIN = "realm", "header", "plain"
_CHECK_CONTEXT = b"realmfs-key-check\x00"
_MAC_CONTEXT = b"realmfs-config\x00"


@dataclass
class Config:
    version: int = CONFIG_VERSION
    realm_pattern: str = DEFAULT_REALM_PATTERN
    key_check: str = ""
    keyslots: list = field(default_factory=list)
    rekey: dict | None = None
    mac: str = ""
    path: str = ""
    plain_patterns: list | None = None     # None: default_plain_patterns(realm_pattern)

    def is_realm_file(self, name: str) -> bool:
        return fnmatch.fnmatchcase(os.path.basename(name), self.realm_pattern)

    @property
    def plain_globs(self) -> list:
        if self.plain_patterns is None:
            return default_plain_patterns(self.realm_pattern)
        return list(self.plain_patterns)

    def kind_of(self, path: str) -> str:
        """KIND_PLAIN, KIND_REALM or KIND_HEADER for ``path`` relative to BACKING ('/' or
        os.sep separated; a leading '/' is ignored): plain if its name or the name of any
        directory above it matches a plain pattern (a ``.management`` directory's FIFOs)."""
        parts = [part for part in path.replace(os.sep, "/").split("/") if part]
        globs = self.plain_globs
        if any(fnmatch.fnmatchcase(part, glob) for part in parts for glob in globs):
            return KIND_PLAIN
        return KIND_REALM if parts and fnmatch.fnmatchcase(parts[-1], self.realm_pattern) else KIND_HEADER

    def fields(self) -> dict:
        fields = {"version": self.version, "realm_pattern": self.realm_pattern,
                  "key_check": self.key_check, "keyslots": self.keyslots}
        if self.rekey is not None:     # absent otherwise, so older configs' MACs still hold
            fields["rekey"] = self.rekey
        if self.plain_patterns is not None:     # likewise: absent means the default
            fields["plain_patterns"] = self.plain_patterns
        return fields


def default_plain_patterns(realm_pattern: str = DEFAULT_REALM_PATTERN) -> list:
    """Realm Core's auxiliary names for databases matching ``realm_pattern``."""
    return [realm_pattern + base + suffix for base in REALM_AUX_BASES for suffix in REALM_AUX_SUFFIXES]


def key_check_value(key: Key) -> str:
    encryptor = Cipher(algorithms.AES(key.aes_key), modes.ECB()).encryptor()
    proof = encryptor.update(bytes(16)) + encryptor.finalize()
    return hmac.digest(key.mac_key, _CHECK_CONTEXT + proof, "sha224").hex()


def _config_mac(fields: dict, key: Key) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hmac.digest(key.mac_key, _MAC_CONTEXT + canonical, "sha224").hex()


def config_path(backing: str) -> str:
    return os.path.join(backing, CONFIG_NAME)


def require_directory(path: str, what: str = "backing directory") -> None:
    if not os.path.exists(path):
        raise BadPath(f"{what} {path} does not exist")
    if not os.path.isdir(path):
        raise BadPath(f"{what} {path} is not a directory")


def create(backing: str, key: Key, realm_pattern: str = DEFAULT_REALM_PATTERN,
           keyslots: list | None = None, plain_patterns: list | None = None) -> Config:
    """Write a new config into ``backing``; refuse if one is there already."""
    require_directory(backing)
    if os.path.exists(config_path(backing)):
        raise AlreadyExists(f"{backing} is already initialised ({CONFIG_NAME} exists)")
    if plain_patterns is not None and list(plain_patterns) == default_plain_patterns(realm_pattern):
        plain_patterns = None
    config = Config(realm_pattern=realm_pattern, key_check=key_check_value(key), keyslots=keyslots or [],
                    plain_patterns=None if plain_patterns is None else list(plain_patterns))
    save(backing, config, key)
    return config


def save(backing: str, config: Config, key: Key) -> None:
    """Authenticate and atomically replace the config file."""
    config.mac = _config_mac(config.fields(), key)
    config.path = config_path(backing)
    document = dict(config.fields(), mac=config.mac)
    write_atomically(config.path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


def load(backing: str) -> Config | None:
    """The config of ``backing`` (not yet checked against a key), or None if there is none."""
    require_directory(backing)
    path = config_path(backing)
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        raise Damaged(f"{path} is not valid JSON; restore it from a backup") from None
    if not isinstance(document, dict) or "key_check" not in document:
        raise Damaged(f"{path} is not a realmfs config")
    if document.get("version") != CONFIG_VERSION:
        raise Damaged(f"{path} has config version {document.get('version')}; "
                      f"this realmfs reads version {CONFIG_VERSION}")
    return Config(version=document["version"], realm_pattern=document.get("realm_pattern", DEFAULT_REALM_PATTERN),
                  key_check=document["key_check"], keyslots=document.get("keyslots", []),
                  rekey=document.get("rekey"), mac=document.get("mac", ""), path=path,
                  plain_patterns=_plain_patterns_field(document, path))


def _plain_patterns_field(document: dict, path: str) -> list | None:
    patterns = document.get("plain_patterns")
    if patterns is not None and not (isinstance(patterns, list) and all(isinstance(p, str) for p in patterns)):
        raise Damaged(f"{path}: plain_patterns is not a list of globs; restore it from a backup")
    return patterns


def unlock(config: Config, key: Key) -> None:
    """Raise WrongKey unless ``key`` is the key the config was made with."""
    if not hmac.compare_digest(key_check_value(key), config.key_check):
        raise WrongKey(f"wrong key for {os.path.dirname(config.path) or config.path} "
                       "(it does not match the key check in its config)")
    if not hmac.compare_digest(_config_mac(config.fields(), key), config.mac):
        raise Damaged(f"{config.path} fails authentication (edited or corrupted); "
                      "restore it or run 'realmfs init' on a copy")
