"""Logging set-up for the CLI and the daemon: one line per event, to stderr or a file.

Rate limiting keeps a flood of identical warnings (e.g. one per damaged page read
again and again) from drowning the log; a log file is rotated at LOG_FILE_MAX_BYTES
(LOG_FILE_BACKUPS old ones kept), so a mount that runs for months cannot fill /run.
"""

from __future__ import annotations

import logging
import logging.handlers
import time

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
        key = f"{record.name}:{record.getMessage()}"   # per message: another file or page is news
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start > self.window:
            start, count = now, 0
        self._seen[key] = (start, count + 1)
        if len(self._seen) > 10000:
            self._seen.clear()
        return count < self.burst


def setup_logging(debug: bool = False, logfile: str | None = None) -> None:
    if logfile:
        handler = logging.handlers.RotatingFileHandler(logfile, maxBytes=LOG_FILE_MAX_BYTES,
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
