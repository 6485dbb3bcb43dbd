"""Command-line options that say where a key comes from, shared by every subcommand.

Order of precedence: ``--key-file``, ``--key-stdin``, ``--key-from-keyring``, a
passphrase (``--passphrase-file``, ``--extpass``, ``--passphrase`` = prompt), then
``$REALMFS_KEY``; with none of them, a backing directory whose config has
passphrase slots asks for its passphrase on the terminal.

A raw key that is not the directory's master key but opens one of its keyfile
slots (a recovery key) unlocks the master key, so ``--key-file recovery.key``
works as well as the master key file.

Passphrases are bytes as given (UTF-8 from a prompt); one trailing newline is
dropped from a passphrase file or an --extpass program's output.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import subprocess
import sys

from ..keys import config as configmod
from ..keys import keyslots
from ..errors import BadPath, ExitCode, KeyFormatError, WrongPassphrase
from ..keys.key import KEY_ENV, Key, key_from_env, parse_key, read_key_file


def add_key_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("key (one of)")
    group.add_argument("--key-file", metavar="F",
                       help="file holding the 64-byte key, raw or as 128 hex digits (a recovery key works too)")
    group.add_argument("--key-stdin", action="store_true",
                       help="read the key (raw or hex) from standard input")
    group.add_argument("--key-from-keyring", metavar="NAME",
                       help="read the key from the secret store (Linux kernel keyring via keyctl, "
                            "or the 'keyring' package); store one with 'realmfs keygen --keyring NAME'")
    add_passphrase_arguments(group)
    parser.set_defaults(key_required=required)


def add_passphrase_arguments(group, prefix: str = "", what: str = "passphrase") -> None:
    """--[PREFIX]passphrase-file F, --[PREFIX]extpass CMD (and --passphrase for the prompt)."""
    dest = prefix.replace("-", "_")
    if not prefix:
        group.add_argument("--passphrase", action="store_true",
                           help="use a passphrase, asked on the terminal without echo")
    group.add_argument(f"--{prefix}passphrase-file", metavar="F", dest=f"{dest}passphrase_file",
                       help=f"read the {what} from file F (one trailing newline dropped)")
    group.add_argument(f"--{prefix}extpass", metavar="CMD", dest=f"{dest}extpass",
                       help=f"run CMD and use its standard output as the {what} (as gocryptfs)")


# ---------------------------------------------------------------------- passphrases
def _strip_newline(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


def _nonempty(secret: bytes, source: str) -> bytes:
    if not secret:
        raise KeyFormatError(f"the passphrase from {source} is empty")
    return secret


def read_passphrase(args, prefix: str = "", prompt: str = "Passphrase: ", confirm: bool = False) -> bytes | None:
    """The passphrase named by ``--[prefix]passphrase-file`` / ``--[prefix]extpass``, or
    asked on the terminal when ``prompt`` is not None; None if none is named."""
    dest = prefix.replace("-", "_")
    path = getattr(args, f"{dest}passphrase_file", None)
    if path:
        try:
            with open(path, "rb") as f:
                return _nonempty(_strip_newline(f.read()), path)
        except FileNotFoundError:
            raise BadPath(f"passphrase file {path} does not exist") from None
        except IsADirectoryError:
            raise BadPath(f"passphrase file {path} is a directory") from None
    command = getattr(args, f"{dest}extpass", None)
    if command:
        try:
            ran = subprocess.run(shlex.split(command), stdout=subprocess.PIPE, check=False)
        except OSError as error:
            raise BadPath(f"--{prefix}extpass: cannot run {command!r}: {error.strerror}") from None
        except ValueError as error:     # shlex: unbalanced quotes
            raise BadPath(f"--{prefix}extpass: cannot parse {command!r}: {error}") from None
        if ran.returncode != 0:
            raise KeyFormatError(f"--{prefix}extpass: {command!r} exited with status {ran.returncode}")
        return _nonempty(_strip_newline(ran.stdout), f"--{prefix}extpass")
    if prompt is None:
        return None
    return prompt_passphrase(prompt, confirm)


def prompt_passphrase(prompt: str, confirm: bool = False) -> bytes:
    if not sys.stdin.isatty():
        raise KeyFormatError("a passphrase is needed and there is no terminal to ask: "
                             "use --passphrase-file F or --extpass CMD")
    try:
        first = getpass.getpass(prompt).encode("utf-8")
        _nonempty(first, "the prompt")
        if confirm and getpass.getpass("Repeat: ").encode("utf-8") != first:
            raise KeyFormatError("the two passphrases differ")
    except EOFError:        # Ctrl-D at the prompt
        raise KeyFormatError("no passphrase entered") from None
    return first


def _passphrase_named(args) -> bool:
    return bool(getattr(args, "passphrase", False) or getattr(args, "passphrase_file", None)
                or getattr(args, "extpass", None))


# ---------------------------------------------------------------------- unlocking
def _with_slots(key: Key, backing: str | None) -> keyslots.Unlocked:
    """``key`` itself, or the master key one of the backing's keyfile slots opens with it."""
    config = configmod.load(backing) if backing else None
    if (config is None or configmod.key_check_value(key) == config.key_check
            or not keyslots.has_kind(config.keyslots, keyslots.KEYFILE)):
        return keyslots.Unlocked(key)
    try:
        return keyslots.unlock(config.keyslots, key.raw, keyslots.KEYFILE)
    except WrongPassphrase:
        return keyslots.Unlocked(key)     # the config's key check reports the wrong key


def _from_passphrase(backing: str | None, secret_source) -> keyslots.Unlocked:
    config = configmod.load(backing) if backing else None
    if config is None or not keyslots.has_kind(config.keyslots, keyslots.PASSPHRASE):
        if not backing:
            raise BadPath("a passphrase unlocks only a backing directory with a config; "
                          "for a lone file use --key-file (or another key option)")
        raise BadPath(f"{backing} has no passphrase slot; use its key (--key-file), or add a "
                      f"passphrase with 'realmfs passwd {backing}'")
    return keyslots.unlock(config.keyslots, secret_source(), keyslots.PASSPHRASE)


def unlock_from_args(args: argparse.Namespace, stdin=None, backing: str | None = None) -> keyslots.Unlocked | None:
    """The master key the options name, and the slot that gave it (for passwd/rekey)."""
    if getattr(args, "key_file", None):
        return _with_slots(read_key_file(args.key_file), backing)
    if getattr(args, "key_stdin", False):
        stream = stdin or sys.stdin.buffer
        return _with_slots(parse_key(stream.read(), "key on standard input"), backing)
    if getattr(args, "key_from_keyring", None):
        from ..keys import keyring
        return _with_slots(keyring.load(args.key_from_keyring), backing)
    prompt = f"Passphrase for {backing}: " if backing else "Passphrase: "
    if _passphrase_named(args):
        return _from_passphrase(backing, lambda: read_passphrase(args, prompt=prompt))
    key = key_from_env()
    if key is not None:
        return _with_slots(key, backing)
    config = configmod.load(backing) if backing and os.path.isdir(backing) else None
    if config is not None and keyslots.has_kind(config.keyslots, keyslots.PASSPHRASE):
        return _from_passphrase(backing, lambda: prompt_passphrase(prompt))
    if getattr(args, "key_required", True):
        raise KeyFormatError(f"no key given: use --key-file F, --key-stdin, --key-from-keyring NAME, "
                             f"--passphrase-file F, --extpass CMD or set ${KEY_ENV} (128 hex digits)")
    return None


def key_from_args(args: argparse.Namespace, stdin=None, backing: str | None = None) -> Key | None:
    """The key the options name. ``backing``: the directory whose config may hold
    key slots (passphrases, recovery keys) that unwrap the key."""
    if backing is not None and not os.path.isdir(backing):
        backing = None      # a missing directory is reported by the command itself
    unlocked = unlock_from_args(args, stdin, backing)
    return None if unlocked is None else unlocked.master


def new_key_setup(args) -> tuple[Key, list]:
    """For commands that create a backing directory (init, encrypt of a tree): the key
    and key slots. With a passphrase option a random master key is made and wrapped
    under it; otherwise the key comes from the usual options."""
    if _passphrase_named(args):
        secret = read_passphrase(args, prompt="New passphrase: ", confirm=True)
        master = Key.generate()
        kdf = keyslots.default_kdf(getattr(args, "kdf", None) or "scrypt")
        return master, [keyslots.make_slot(keyslots.PASSPHRASE, secret, master, kdf)]
    return key_from_args(args), []


def exit_codes(*pairs) -> str:
    """An epilog listing the exit codes a command uses (values from errors.ExitCode)."""
    return "exit codes: " + ", ".join(f"{getattr(ExitCode, name)} {text}" for name, text in pairs)


KEY_EXIT_CODES = (("WRONG_KEY", "wrong key"), ("WRONG_PASSPHRASE", "wrong passphrase/recovery key"),
                  ("BAD_KEY", "no or malformed key"), ("KEYRING", "secret store unusable"))
