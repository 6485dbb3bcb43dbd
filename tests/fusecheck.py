"""Whether this machine can mount FUSE: tests that mount fail (never skip) without it."""

from __future__ import annotations

import os

from realmfs.fs import fusermount


def fuse_problem() -> str | None:
    """None when /dev/fuse and fusermount(3) are there, else what is missing."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if fusermount.command() is None:
        return f"fusermount3/fusermount is missing ({fusermount.INSTALL_HINT})"
    return None
