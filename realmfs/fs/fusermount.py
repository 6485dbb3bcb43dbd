"""The one way realmfs, its scripts and its tests run fusermount (unmounting a FUSE mount).

libfuse 3 ships its setuid helper as ``fusermount3`` (Debian's ``fuse3`` package), libfuse 2
as ``fusermount`` (``fuse``); the two packages conflict, so a machine usually has one of
them. Either tool unmounts a mount made through either library (``-u``; ``-z`` lazily).

Invariant: ``fusermount3`` is preferred whenever it is installed; nothing else in the
project names either tool. Shell scripts call ``python3 -m realmfs.fs.fusermount -u[z] MNT``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

TOOLS = ("fusermount3", "fusermount")
INSTALL_HINT = "install Debian's fuse3 package (apt-get install fuse3)"


def command() -> str | None:
    """Path of the fusermount to use, or None if neither is installed."""
    for name in TOOLS:
        path = shutil.which(name)
        if path:
            return path
    return None


def unmount(mountpoint: str, lazy: bool = False, check: bool = False) -> subprocess.CompletedProcess:
    """``fusermount -u MOUNTPOINT`` (``-uz`` if lazy); output captured, never raised on unless
    ``check``. FileNotFoundError if no fusermount is installed."""
    tool = command()
    if tool is None:
        raise FileNotFoundError(f"neither fusermount3 nor fusermount is installed: {INSTALL_HINT}")
    return subprocess.run([tool, "-uz" if lazy else "-u", mountpoint], capture_output=True,
                          text=True, check=check)


def main(argv: list[str]) -> int:
    """``python3 -m realmfs.fs.fusermount -u|-uz MOUNTPOINT`` for shell scripts."""
    if len(argv) != 2 or argv[0] not in ("-u", "-uz"):
        print("usage: python3 -m realmfs.fs.fusermount -u|-uz MOUNTPOINT", file=sys.stderr)
        return 2
    try:
        result = unmount(argv[1], lazy=argv[0] == "-uz")
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
