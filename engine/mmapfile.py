"""The database file: a shared read mapping plus pwrite/ftruncate/fsync.

Invariants:
- The file size is always a whole number of pages; it only grows while open
  (compaction writes a new file), so a mapping never points past EOF.
- Reads go through one MAP_SHARED read-only mapping.  When a snapshot needs a
  page beyond the mapped length the file is remapped; older mapping objects stay
  alive for as long as something references them, so remapping never pulls
  memory out from under a running reader.
- close() releases the file completely, mappings included, even while
  snapshot objects (ended by Database.close) still reference them: a mapping
  holds its own descriptor, and a file left open keeps e.g. a FUSE mount busy.
- Writes use os.pwrite: the writer only touches pages no snapshot can see, and
  pwrite keeps a stray write from being able to scribble over mapped pages.
"""

import errno
import mmap
import os
import threading
import weakref

from .errors import TruncatedFileError
from .layout import PAGE_SIZE

GROWTH_MIN_PAGES = 16          # grow in chunks so small commits do not ftruncate each time
GROWTH_FRACTION = 32           # ... and by 1/32 of the file for large files


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """pwrite every byte (a full disk or a FUSE file system may write fewer and not fail)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "the file system wrote nothing")
        view, offset = view[written:], offset + written


class PagedFile:
    def __init__(self, path: str, fd: int):
        self.path = path
        self.fd = fd
        self.map = None
        self.mapped_pages = 0
        self._known_pages = 0      # the file had at least this many pages (it never shrinks)
        self._remap_lock = threading.Lock()
        self._maps = weakref.WeakSet()   # every mapping still referenced, for close()
        self.remap(self.file_pages())

    def file_pages(self) -> int:
        pages = os.fstat(self.fd).st_size // PAGE_SIZE
        self._known_pages = max(self._known_pages, pages)
        return pages

    def remap(self, needed_pages: int):
        """Make sure the mapping covers at least `needed_pages` pages."""
        with self._remap_lock:
            if self.map is not None and self.mapped_pages >= needed_pages:
                return self.map
            pages = self.file_pages()
            if pages < needed_pages:
                raise TruncatedFileError(
                    f"{self.path}: file has {pages} pages but the header needs {needed_pages}")
            self.map = mmap.mmap(self.fd, pages * PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
            self._maps.add(self.map)
            self.mapped_pages = pages
            return self.map

    def ensure_size(self, npages: int):
        """Grow the file (ftruncate, whole pages) so it holds `npages` pages. A size already
        seen answers without an fstat (a getattr round trip on a FUSE mount, every commit)."""
        if npages <= self._known_pages:
            return
        current = self.file_pages()
        if current >= npages:
            return
        target = max(npages, current + GROWTH_MIN_PAGES, current + current // GROWTH_FRACTION)
        os.ftruncate(self.fd, target * PAGE_SIZE)
        self._known_pages = target

    def write_pages(self, pages: dict):
        """pwrite {pgno: page bytes}, coalescing runs of consecutive pages."""
        run_start = None
        run = []
        for pgno in sorted(pages):
            if run and pgno == run_start + len(run):
                run.append(pages[pgno])
                continue
            if run:
                pwrite_all(self.fd, b"".join(run), run_start * PAGE_SIZE)
            run_start, run = pgno, [pages[pgno]]
        if run:
            pwrite_all(self.fd, b"".join(run), run_start * PAGE_SIZE)

    def write_at(self, offset: int, data: bytes):
        pwrite_all(self.fd, data, offset)

    def sync(self):
        os.fsync(self.fd)

    def close(self):
        for mapping in list(self._maps):
            try:
                mapping.close()
            except BufferError:       # a buffer into it is still exported: the GC frees it
                pass
        self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
