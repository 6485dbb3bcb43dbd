"""Progress of long offline operations: one self-rewriting status line on stderr.

Shows the current file (n of N) and bytes done of the total. Silent unless the
stream is a terminal (scripts and logs get only results and errors), and
throttled so that printing never costs noticeable time.

Invariants: every method is cheap and safe to call when disabled; ``close``
clears the status line so that the next output starts on a clean line.
"""

from __future__ import annotations

import sys
import time

_INTERVAL = 0.1   # seconds between redraws


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Progress:
    """``with Progress("encrypt", files, total_bytes) as p: p.file(name); p.advance(n)``."""

    def __init__(self, verb: str, files: int = 0, total: int = 0, stream=None, enabled: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.verb, self.files, self.total = verb, files, total
        self.index, self.done, self.name = 0, 0, ""
        self._last = 0.0
        self._width = 0

    def file(self, name: str) -> None:
        self.index += 1
        self.name = name
        self._draw(force=True)

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < _INTERVAL:
            return
        self._last = now
        total = f"/{_size(self.total)}" if self.total else ""
        line = f"realmfs {self.verb}: [{self.index}/{self.files}] {_size(self.done)}{total} {self.name}"
        line = line[:150]
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def disabled() -> Progress:
    return Progress("", enabled=False)
