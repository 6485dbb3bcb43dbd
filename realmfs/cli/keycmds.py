"""``realmfs keygen``: a fresh key from the OS CSPRNG, to a file (mode 0600) or a secret store;
or an existing key file's key into the secret store (``--keyring NAME --from-file F``)."""

from __future__ import annotations

import sys

from ..errors import ExitCode
from ..keys.key import Key, read_key_file, write_key_file


def register(sub) -> None:
    parser = sub.add_parser("keygen", help="make a new random 64-byte key (file mode 0600, or --keyring)",
                            description="Write a new random 64-byte key (128 hex digits) to FILE "
                                        "with mode 0600, or store it in the secret store with "
                                        "--keyring NAME. Refuses to overwrite an existing key.")
    parser.add_argument("file", metavar="FILE", nargs="?")
    parser.add_argument("--keyring", metavar="NAME",
                        help="store the key in the secret store (Linux kernel keyring via keyctl, "
                             "or the 'keyring' package) under NAME; use it with --key-from-keyring NAME")
    parser.add_argument("--from-file", metavar="F",
                        help="with --keyring: store the existing key of key file F instead of a new one")
    parser.set_defaults(handler=run_keygen)


def run_keygen(args) -> int:
    if not args.file and not args.keyring:
        print("realmfs: keygen needs FILE or --keyring NAME (or both)", file=sys.stderr)
        return ExitCode.USAGE
    if args.from_file:
        if args.file or not args.keyring:
            print("realmfs: --from-file F goes with --keyring NAME alone (it stores F's key there)",
                  file=sys.stderr)
            return ExitCode.USAGE
        from ..keys import keyring
        where = keyring.store(args.keyring, read_key_file(args.from_file))
        print(f"stored the key of {args.from_file} in {where}; use it with --key-from-keyring "
              f"{args.keyring} (the file is unchanged: delete it yourself once you no longer need it)")
        return 0
    key = Key.generate()
    if args.file:
        write_key_file(args.file, key)
        print(f"wrote a new key to {args.file} (mode 0600); keep a copy somewhere safe: "
              "without it the data cannot be read")
    if args.keyring:
        from ..keys import keyring
        where = keyring.store(args.keyring, key)
        print(f"stored a new key in {where}; use it with --key-from-keyring {args.keyring}")
    return 0
