"""``realmfs keygen``: a fresh key from the OS CSPRNG, to a file (mode 0600) or a secret store."""

from __future__ import annotations

import sys

from ..errors import ExitCode
from ..keys import Key, write_key_file


def register(sub) -> None:
    parser = sub.add_parser("keygen", help="make a new random 64-byte key (file mode 0600, or --keyring)",
                            description="Write a new random 64-byte key (128 hex digits) to FILE "
                                        "with mode 0600, or store it in the secret store with "
                                        "--keyring NAME. Refuses to overwrite an existing key.")
    parser.add_argument("file", metavar="FILE", nargs="?")
    parser.add_argument("--keyring", metavar="NAME",
                        help="store the key in the secret store (Linux kernel keyring via keyctl, "
                             "or the 'keyring' package) under NAME; use it with --key-from-keyring NAME")
    parser.set_defaults(handler=run_keygen)


def run_keygen(args) -> int:
    if not args.file and not args.keyring:
        print("realmfs: keygen needs FILE or --keyring NAME (or both)", file=sys.stderr)
        return ExitCode.USAGE
    key = Key.generate()
    if args.file:
        write_key_file(args.file, key)
        print(f"wrote a new key to {args.file} (mode 0600); keep a copy somewhere safe: "
              "without it the data cannot be read")
    if args.keyring:
        from .. import keyring
        where = keyring.store(args.keyring, key)
        print(f"stored a new key in {where}; use it with --key-from-keyring {args.keyring}")
    return 0
