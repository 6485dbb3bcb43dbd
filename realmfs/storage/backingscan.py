"""Scanning a backing directory: its files by kind, and every check before a mount or a
tool touches one of them.

* ``backing_files``: the encrypted (or, with ``plain``, the plain-pattern) regular files,
  reserved names, tool temporaries and FUSE's hidden files skipped;
* ``open_backing_dir``: the config to use, after refusing a rekey in progress, a wrong key
  (against the config, or without one against the files: ``check_key_against_files``)
  and any Realm file in clear;
* ``plain_named_ciphertext``: plain-pattern files an older realmfs encrypted.

Invariant: nothing here writes; a directory without a config (files made by Realm Core)
is checked against its files with the default patterns.
"""

from __future__ import annotations

import os

from ..keys.config import (
    FUSE_HIDDEN_PREFIX,
    KIND_PLAIN,
    KIND_REALM,
    RESERVED_NAMES,
    TOOL_TEMP_SUFFIX,
    Config,
    config_path,
    load,
    unlock,
)
from ..format.detect import PLAIN_REALM_PROBE, first_page, has_realm_iv_table, has_realmfs_header, \
    looks_like_plain_realm
from ..errors import Damaged, NotEncrypted, RekeyInProgress, WrongKey
from ..format.fileheader import HeaderProblem, unpack_page
from ..keys.key import Key
from ..format.pagecipher import PageCipher
from .pagefile import open_backing


def backing_files(backing: str, config: Config | None = None, plain: bool = False):
    """Encrypted regular files under ``backing`` (reserved names and plain-pattern files
    skipped), or with ``plain`` only the plain-pattern files; ``config`` gives the
    patterns, default: the directory's own config."""
    if config is None:
        try:
            config = load(backing) or Config()
        except Damaged:          # the caller reports a bad config itself
            config = Config()
    for root, dirs, files in os.walk(backing):
        dirs.sort()
        for name in sorted(files):
            if ((root == backing and name in RESERVED_NAMES) or name.endswith(TOOL_TEMP_SUFFIX)
                    or name.startswith(FUSE_HIDDEN_PREFIX)):
                continue
            path = os.path.join(root, name)
            if (os.path.isfile(path) and not os.path.islink(path)
                    and (config.kind_of(os.path.relpath(path, backing)) == KIND_PLAIN) == plain):
                yield path


def check_key_against_files(backing: str, key: Key, probe: Config | None = None) -> None:
    """Without a config: the key must open the first encrypted file that has written data.

    Raises NotEncrypted for a plain Realm file and WrongKey when a file does not
    authenticate; an empty directory or one of empty files says nothing. Plain-pattern
    files (``probe``'s, default patterns if None) say nothing about the key.
    """
    cipher = PageCipher(key.raw)
    probe = probe or Config()
    for path in backing_files(backing, probe):
        if probe.is_realm_file(path):
            try:
                f = open_backing(path, cipher, realm_layout=True, read_only=True)
            except Damaged:
                continue    # a cut file says nothing about the key; verify reports it
            f.close()
            if f.size:
                return
        else:
            page = first_page(path)
            if not page:
                continue
            try:
                unpack_page(page, cipher.mac_message)
                return
            except HeaderProblem as problem:
                if problem.kind == "key":
                    raise WrongKey(f"wrong key for {backing}: it does not open {path}") from None
                if problem.kind == "foreign" and looks_like_plain_realm(page):
                    raise NotEncrypted(f"{path} is an unencrypted Realm file; "
                                       "encrypt it with 'realmfs encrypt' before mounting") from None


def plain_named_ciphertext(backing: str, config: Config, key: Key) -> list[str]:
    """Plain-pattern files that are realmfs header-layout files under ``key``: what a
    realmfs before plain patterns wrote for names such as ``X.realm.lock``."""
    found = []
    cipher = PageCipher(key.raw)
    for path in backing_files(backing, config, plain=True):
        try:
            unpack_page(first_page(path), cipher.mac_message)
        except HeaderProblem:
            continue        # Realm Core's own bytes (or damage, which stays as it is)
        found.append(path)
    return found


def find_plain_realm_files(backing: str, config: Config | None = None) -> list[str]:
    """Encrypted-kind files under ``backing`` that start with a Realm header in clear (``T-DB``)."""
    found = []
    for path in backing_files(backing, config):
        with open(path, "rb") as raw:
            if looks_like_plain_realm(raw.read(PLAIN_REALM_PROBE)):
                found.append(path)
    return found


def unrecognized_files(backing: str, config: Config) -> list[str]:
    """Encrypted-kind files under ``backing`` that are not empty and carry neither a realmfs
    header nor Realm Core's IV table (nor a plain Realm header, which NotEncrypted reports):
    files nobody encrypted, which a mount could only answer with EIO."""
    found = []
    for path in backing_files(backing, config):
        first = first_page(path)
        if not first or has_realmfs_header(first) or looks_like_plain_realm(first):
            continue
        if config.kind_of(os.path.relpath(path, backing)) == KIND_REALM and not any(first):
            continue    # Realm layout with no page written yet: reads as zeros, holds nothing
        if not has_realm_iv_table(path):
            found.append(path)
    return found


def open_backing_dir(backing: str, key: Key) -> Config:
    """Everything a mount or tool checks before it touches a file; returns the config to use.

    Refuses a wrong key (against the config, or the files when there is none) and
    any plain Realm file, without writing anything.
    """
    config = load(backing)
    if config is not None:
        if config.rekey is not None:    # checked first: the user may hold either key now
            raise RekeyInProgress(f"a rekey of {backing} was interrupted; finish it first with "
                                  f"'realmfs rekey {backing}' (same options as before)")
        unlock(config, key)
    else:
        config = Config(path=config_path(backing))
        check_key_against_files(backing, key, config)
    plain = find_plain_realm_files(backing, config)
    if plain:
        more = f" (and {len(plain) - 1} more)" if len(plain) > 1 else ""
        raise NotEncrypted(f"{plain[0]}{more} is an unencrypted Realm file; "
                           f"encrypt it with 'realmfs encrypt' before mounting")
    return config

