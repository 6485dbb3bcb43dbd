"""``realmfs keygen``: a fresh key from the OS CSPRNG, written with mode 0600."""

from __future__ import annotations

from ..keys import Key, write_key_file


def register(sub) -> None:
    parser = sub.add_parser("keygen", help="write a new random 64-byte key to a file (mode 0600)",
                            description="Write a new random 64-byte key (128 hex digits) to FILE "
                                        "with mode 0600. Refuses to overwrite an existing file.")
    parser.add_argument("file", metavar="FILE")
    parser.set_defaults(handler=run_keygen)


def run_keygen(args) -> int:
    write_key_file(args.file, Key.generate())
    print(f"wrote a new key to {args.file} (mode 0600); keep a copy somewhere safe: "
          "without it the data cannot be read")
    return 0
