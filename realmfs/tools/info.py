"""``realmfs info BACKING``: what a backing directory is, read without the key.

Everything shown is what anyone who can read BACKING sees anyway: the config's
format version, patterns, key-slot types and KDF parameters (never a salt, nonce,
wrapped key or key check value), file counts and sizes, whether it is mounted.
Without the key nothing here is authenticated: the lines say so, and
``realmfs verify`` checks it all with the key.

Invariants: reads only (the config, directory listings, the lock file's owner
record); never a file's contents, never a path under a mountpoint.
"""

from __future__ import annotations

import os

from ..keys import config as configmod
from ..storage.backinglock import is_locked
from ..format.fileheader import VERSION as HEADER_VERSION
from ..format.layout import KEY_SIZE, PAGE_SIZE

_KDF_PARAMETERS = {"scrypt": ("n", "r", "p"), "argon2id": ("iterations", "lanes", "memory_cost")}


def describe_kdf(kdf: dict) -> str:
    """``scrypt (n=131072, r=8, p=1)``: the KDF and its recorded parameters."""
    name = kdf.get("name", "?")
    params = [f"{p}={kdf[p]}" for p in _KDF_PARAMETERS.get(name, ()) if p in kdf]
    return f"{name} ({', '.join(params)})" if params else name


def _slot_line(index: int, slot: dict) -> str:
    kind = slot.get("type", "?")
    what = {"passphrase": "passphrase", "keyfile": "recovery key file"}.get(kind, kind)
    return f"  slot {index}: {what}, KDF {describe_kdf(slot.get('kdf') or {})}"


def _plain_patterns(config: configmod.Config | None) -> list | None:
    """The config's plain (unencrypted) name patterns, where this version of the config has
    them; None where it has none (older realmfs)."""
    if config is None:
        config = configmod.Config()
    globs = getattr(config, "plain_globs", None)
    return list(globs) if globs is not None else None


def _file_counts(backing: str, config: configmod.Config) -> dict:
    """{kind: [files, bytes]} of every regular file a user put there (plain ones too:
    ``backing_files`` lists only the encrypted ones where the config has plain patterns)."""
    counts = {"realm": [0, 0], "header": [0, 0], "plain": [0, 0]}
    kind_of = getattr(config, "kind_of", None)
    for root, _, files in os.walk(backing):
        for name in files:
            path = os.path.join(root, name)
            if ((root == backing and name in configmod.RESERVED_NAMES)
                    or name.endswith(configmod.TOOL_TEMP_SUFFIX) or name.startswith(configmod.FUSE_HIDDEN_PREFIX)
                    or os.path.islink(path) or not os.path.isfile(path)):
                continue
            rel = os.path.relpath(path, backing)
            kind = kind_of(rel) if kind_of else ("realm" if config.is_realm_file(rel) else "header")
            counts.setdefault(kind, [0, 0])
            counts[kind][0] += 1
            counts[kind][1] += os.path.getsize(path)
    return counts


def info_lines(backing: str) -> list[str]:
    configmod.require_directory(backing)
    backing = os.path.realpath(backing)
    config = configmod.load(backing)
    lines = [f"backing directory: {backing}"]
    if config is None:
        lines.append(f"config: none ({configmod.CONFIG_NAME} missing): a directory Realm Core wrote, "
                     f"or not initialised; a key is checked against its files ('realmfs init' adds a config)")
        shown = configmod.Config()
    else:
        lines.append(f"config: {config.path}, format version {config.version} (read without the key: "
                     "not authenticated; 'realmfs verify' checks it)")
        shown = config
    lines.append(f"encryption: AES-256-CBC + HMAC-SHA224 per {PAGE_SIZE}-byte page, "
                 f"{KEY_SIZE}-byte key (Realm Core's page format)")
    default = "" if config is not None else " (default)"
    lines.append(f"realm pattern: {shown.realm_pattern}{default}: Realm Core's own layout, byte-compatible")
    plain = _plain_patterns(config)
    if plain is not None:
        lines.append(f"plain patterns: {' '.join(plain) or '(none)'}{default}: kept unencrypted, "
                     "as Realm Core keeps its auxiliary files")
    lines.append(f"other files: realmfs header layout (header version {HEADER_VERSION})")
    if config is not None:
        if config.keyslots:
            lines.append(f"key slots: {len(config.keyslots)} (each unlocks the master key)")
            lines += [_slot_line(i, slot) for i, slot in enumerate(config.keyslots)]
        else:
            lines.append("key slots: none (only the 64-byte key itself opens it: key file, "
                         "$REALMFS_KEY, --key-from-keyring)")
        if config.rekey is not None:
            lines.append("rekey: INTERRUPTED; finish it with 'realmfs rekey' (same options as before)")
    counts = _file_counts(backing, shown)
    lines.append("files: " + ", ".join(f"{n} {kind} ({size} bytes)" for kind, (n, size) in counts.items()
                                        if n or kind != "plain"))
    owner = is_locked(backing)
    where = (owner or {}).get("mountpoint", "?")
    if owner is None:
        lines.append("mounted: no")
    elif where.startswith("/"):
        lines.append(f"mounted: on {where} (realmfs pid {owner.get('pid', '?')})")
    else:
        lines.append(f"in use: {where} (pid {owner.get('pid', '?')})")
    return lines
