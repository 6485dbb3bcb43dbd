"""Every name of a hard-linked file shows the same attributes right after each operation.

libfuse's high-level API gives each name of a file its own kernel inode, each with its
own attribute cache: an operation through one name (a write, chmod, the unlink of
another name...) left the other names showing a stale nlink, size, mode, owner and
times for up to attr_timeout. The kernel asks the daemon again only once its cached
attributes have expired, so the daemon sets the attr_timeout of each reply itself:

* libfuse builds every reply that carries attributes (lookup, getattr, setattr, create,
  link...) right after our getattr returns, reading its config's attr_timeout then;
  with one request at a time (-s) nothing runs in between. libfuse 3 hands us that
  config (mfusepy's init_with_config); libfuse 2 keeps it inside its struct fuse, where
  ``_libfuse2_attr_timeout`` finds it by the timeouts the mount passes (entry, negative,
  attr, and ac_attr which libfuse sets to attr): they must be there exactly once, else
  nothing is touched and a warning says attributes may be stale.
* A regular file with more than one link gets attr_timeout 0: a stat of any of its
  names asks the daemon, which has one backing inode behind all of them.
* The name a link() starts from was cached while it had one link. libfuse 3 invalidates
  it (fuse_invalidate_path) before link returns: the kernel may wait for that name's
  pages, which a queued request of ours may hold, so the call runs on a helper thread
  that link waits for at most INVALIDATE_WAIT (never a deadlock). libfuse 2 cannot
  invalidate, so there a regular file is cached only while the daemon has it open;
  a link of an open file still leaves its first name stale for up to attr_timeout.
* Measured (scripts/bench.py --quick, ratios to plain): attr_timeout 0 for every file
  made SQLite selects 25-110x plain instead of 1.2x; these rules cost nothing there.
* libfuse keeps an unlinked name that is still open as ``.fuse_hidden*`` (no
  hard_remove, see mountchecks.py); that name is not one the user can see, so the nlink shown
  leaves it out (``shown_nlink``): after ``unlink f3`` with f3 open, f4 shows what ext4
  shows. The daemon counts the hidden names it made (rename to one, unlink of one).

Directories and everything else keep the mount's attr_timeout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import stat
import struct
import threading

log = logging.getLogger(__name__)

INVALIDATE_WAIT = 0.5     # seconds a link waits for the kernel to drop the old name's cache
# libfuse 2's struct fuse_config: entry_timeout, negative_timeout, attr_timeout and
# ac_attr_timeout (= attr_timeout unless set) in a row, at byte 160 of struct fuse in 2.9.9
_LIBFUSE2_SCAN = 512      # bytes of struct fuse searched


def _context_fuse(library: str) -> int:
    """fuse_get_context()->fuse of ``library`` (already loaded: dlopen gives the same one)."""
    lib = ctypes.CDLL(ctypes.util.find_library(library))
    lib.fuse_get_context.restype = ctypes.POINTER(ctypes.c_void_p)     # first field: fuse *
    return lib.fuse_get_context().contents.value


def _libfuse2_attr_timeout(timeouts: tuple[float, float, float]) -> ctypes.c_double | None:
    """libfuse 2's live attr_timeout, found by the (entry, negative, attr) timeouts and
    ac_attr_timeout (libfuse copies attr_timeout there); None unless found exactly once."""
    fuse = _context_fuse("fuse")
    memory = ctypes.string_at(fuse, _LIBFUSE2_SCAN)
    pattern = struct.pack("=4d", *timeouts, timeouts[2])
    at = memory.find(pattern)
    if at < 0 or at % 8 or memory.find(pattern, at + 1) >= 0:
        return None
    return ctypes.c_double.from_address(fuse + at + 16)


class LinkAttrs:
    def __init__(self, timeouts: tuple[float, float, float]):
        self.timeouts = timeouts            # the mount's entry, negative and attr timeouts
        self.attr_timeout = timeouts[2]
        self._cell = None                   # an object whose .value / .attr_timeout libfuse reads
        self._field = "value"
        self._invalidate = None             # libfuse 3: fuse_invalidate_path(path)
        self._only_open = False             # libfuse 2: cache a file only while it is open
        self._hidden: dict[tuple[int, int], int] = {}     # (dev, ino) -> .fuse_hidden names
        self._hidden_lock = threading.Lock()

    def bind(self, config) -> None:
        """At init, on the FUSE thread: libfuse 3's fuse_config, or None (libfuse 2)."""
        if config is not None:
            self._cell, self._field = config, "attr_timeout"
            self.attr_timeout = config.attr_timeout
            lib = ctypes.CDLL(ctypes.util.find_library("fuse3"))
            lib.fuse_invalidate_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            fuse = _context_fuse("fuse3")
            self._invalidate = lambda path: lib.fuse_invalidate_path(fuse, os.fsencode(path))
            return
        self._cell = _libfuse2_attr_timeout(self.timeouts)
        self._only_open = True
        if self._cell is None:
            log.warning("libfuse's attribute timeout was not found: other names of a hard-linked "
                        "file may show stale attributes for up to %gs", self.attr_timeout)

    # ------------------------------------------------------------------ replies
    def replying(self, st: os.stat_result, is_open: bool) -> None:
        """Set the attr_timeout of the reply about to be built from ``st`` (hidden names
        count in st_nlink: their open fds must see changes made through other names)."""
        if self._cell is None:
            return
        fresh = stat.S_ISREG(st.st_mode) and (st.st_nlink > 1 or (self._only_open and not is_open))
        setattr(self._cell, self._field, 0.0 if fresh else self.attr_timeout)

    def linked(self, source_path: str) -> None:
        """``source_path`` just got another name: drop what the kernel cached for it."""
        if self._invalidate is None:
            return
        done = threading.Event()

        def invalidate():
            # ENOENT: the kernel never looked the name up, so nothing is cached for it
            self._invalidate(source_path)
            done.set()

        threading.Thread(target=invalidate, name="invalidate", daemon=True).start()
        if not done.wait(INVALIDATE_WAIT):
            log.debug("invalidating %s after link is still waiting for the kernel", source_path)

    # ------------------------------------------------------------------ hidden names
    def hidden(self, st: os.stat_result, change: int) -> None:
        """``change`` (+1 or -1) hidden names of the inode of ``st``."""
        key = (st.st_dev, st.st_ino)
        with self._hidden_lock:
            count = self._hidden.get(key, 0) + change
            if count > 0:
                self._hidden[key] = count
            else:
                self._hidden.pop(key, None)

    def shown_nlink(self, st: os.stat_result) -> int:
        return st.st_nlink - self._hidden.get((st.st_dev, st.st_ino), 0) if self._hidden else st.st_nlink
