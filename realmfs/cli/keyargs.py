"""Command-line options that say where a key comes from, shared by every subcommand.

Order of precedence: ``--key-file``, ``--key-stdin``, then ``$REALMFS_KEY``.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import KeyFormatError
from ..keys import KEY_ENV, Key, key_from_env, parse_key, read_key_file


def add_key_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("key (one of)")
    group.add_argument("--key-file", metavar="F",
                       help="file holding the 64-byte key, raw or as 128 hex digits")
    group.add_argument("--key-stdin", action="store_true",
                       help="read the key (raw or hex) from standard input")
    parser.set_defaults(key_required=required)


def key_from_args(args: argparse.Namespace, stdin=None, backing: str | None = None) -> Key | None:
    """The key the options name. ``backing``: the directory whose config may hold
    key slots (passphrases) that unwrap the key."""
    if getattr(args, "key_file", None):
        return read_key_file(args.key_file)
    if getattr(args, "key_stdin", False):
        stream = stdin or sys.stdin.buffer
        return parse_key(stream.read(), "key on standard input")
    key = key_from_env()
    if key is None and getattr(args, "key_required", True):
        raise KeyFormatError(f"no key given: use --key-file F, --key-stdin or set ${KEY_ENV} (128 hex digits)")
    return key
