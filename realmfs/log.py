"""Logging set-up for the CLI and the daemon: one line per event, to stderr or a file.

Rate limiting keeps a flood of identical warnings (e.g. one per damaged page read
again and again) from drowning the log; a record may name what counts as "the same"
(``extra={"ratelimit_key": ...}``, e.g. one internal error at many offsets). A log
file is rotated at LOG_FILE_MAX_BYTES (LOG_FILE_BACKUPS old ones kept), so a mount
that runs for months cannot fill /run.

Strict mode (``$REALMFS_STRICT`` = a file, set by the test suite): the daemon also
appends every warning, error and uncaught exception (any thread, and exceptions that
Python could only report as "unraisable") to that file, unfiltered, one record per
line with continuation lines indented; the tests fail when a record appears that
they did not declare.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import time

STRICT_ENV = "REALMFS_STRICT"
_FORMAT = "realmfs: %(levelname)s: %(message)s"
_DEBUG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"
LOG_FILE_MAX_BYTES = 4 << 20
LOG_FILE_BACKUPS = 2


class RateLimit(logging.Filter):
    """Let the same message (formatted: the same file and page) through at most ``burst``
    times per ``window`` seconds."""

    def __init__(self, burst: int = 5, window: float = 60.0):
        super().__init__()
        self.burst, self.window = burst, window
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # per message by default: another file or page is news
        key = getattr(record, "ratelimit_key", None) or f"{record.name}:{record.getMessage()}"
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start > self.window:
            start, count = now, 0
        self._seen[key] = (start, count + 1)
        if len(self._seen) > 10000:
            self._seen.clear()
        return count < self.burst


class _RotatingWithHead(logging.handlers.RotatingFileHandler):
    """Rotation that starts every new file with ``head`` (the default log's line naming its
    backing directory, which pruning reads: fs/logfiles.py)."""

    def __init__(self, filename: str, head: str | None, **kwargs):
        self.head = head
        super().__init__(filename, **kwargs)

    def doRollover(self) -> None:
        super().doRollover()
        if self.head and self.stream is not None:
            self.stream.write(self.head + "\n")
            self.stream.flush()


def setup_logging(debug: bool = False, logfile: str | None = None, head: str | None = None) -> None:
    """Log to stderr, or to ``logfile`` (rotated; each new file starts with ``head``)."""
    if logfile:
        handler = _RotatingWithHead(logfile, head, maxBytes=LOG_FILE_MAX_BYTES,
                                    backupCount=LOG_FILE_BACKUPS)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_DEBUG_FORMAT if debug or logfile else _FORMAT))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)


class _OneRecordPerLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\n    ")


def enable_strict(path: str) -> None:
    """Strict mode (see the module docstring): record to ``path`` from now on."""
    try:
        handler = logging.FileHandler(path)      # appends; one write per record
    except OSError as error:     # e.g. another user's file: serve anyway, say so in the log
        logging.getLogger("realmfs").warning("strict mode: cannot record to %s: %s", path, error)
        return
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneRecordPerLine("%(process)d %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    strict_log = logging.getLogger("realmfs.strict")

    def thread_died(args) -> None:
        name = args.thread.name if args.thread else "?"
        strict_log.error("uncaught exception in thread %s", name,
                         exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    def unraisable(args) -> None:
        strict_log.error("unraisable exception %s in %r", args.err_msg or "", args.object,
                         exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    threading.excepthook = thread_died
    sys.unraisablehook = unraisable
