"""Whether this machine can mount FUSE: tests that mount fail (never skip) without it."""

from __future__ import annotations

import os
import shutil


def fuse_problem() -> str | None:
    """None when /dev/fuse and fusermount are there, else what is missing."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount") is None:
        return "fusermount is missing (apt-get install fuse libfuse2)"
    return None
