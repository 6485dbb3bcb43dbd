"""EncryptedFile: one plaintext file kept as encrypted pages on a backing file.

Two layouts share all page code (see docs/file-format.md):

* ``.realm`` files: Realm Core's layout exactly, body at offset 0, logical size in
  whole pages, derived from the physical size; byte-compatible with Realm Core.
* every other file: a realmfs header page (file id, exact size) and then the same
  body at offset 4096; page MACs also bind file id, page number and counter.

EncryptedFile is the file level: size, header, byte ranges, partial pages, growth and
truncation. It is composed of a BackingFile (every I/O), an IvTable (what is known of
the IV table) and a PageStore (verified reads and crash-safe writes of page groups).

Invariants
* A page is returned only if it authenticates in slot 1 or slot 2 (PageStore).
* Every page write uses a counter above every counter seen for that page and, in the
  header layout, above the header's counter floor (counters of pages whose IV blocks
  a truncation cut away); the order of the backing writes is PageStore's.
* Bytes past the logical size inside the last page are zero on disk (header
  layout), so a file that grows again reads zeros there.
* Truncation, header layout: the new size and counter floor are committed in one
  header write first; the rest is tidying (``_tidy_beyond_size``) that the next
  writable open redoes if a crash stops it. ``.realm`` layout: the size is the
  physical length, so the cut comes first and the entries it leaves are cleared after.
* All public methods hold ``self.lock``; the object is safe to share between threads.
"""

from __future__ import annotations

import logging
import os
import threading

from ..format import fileheader
from .backingfile import BackingFile
from ..format.damage import NOT_ENCRYPTED, judge_header, judge_size, open_error
from ..format.detect import PLAIN_REALM_PROBE, looks_like_plain_realm
from ..errors import ReadOnly, RealmfsError, WrongKey
from ..format.fileheader import FILE_ID_SIZE, Header, HeaderProblem
from .ivtable import IvTable
from ..format.layout import (
    HEADER_SIZE,
    PAGE_SIZE,
    block_of,
    body_to_data_size,
    contiguous_page_groups,
    data_to_body_size,
    layout_base,
    page_offset,
    pages_for,
)
from ..format.pagecipher import PageCipher
from .pagestore import PageStore

log = logging.getLogger(__name__)

# Sequential readers get the backing file read this far ahead of them (posix_fadvise
# WILLNEED, in steps of half of it), so the disk works while the daemon decrypts: cold
# sequential reads measured 280 -> 370 MB/s (median of 5, 256 MiB) against none.
SEQUENTIAL_PREFETCH = 2 << 20


class EncryptedFile:
    """Logical file API (read/write/truncate/size/flush/fsync/close) over encrypted pages.

    ``backing`` is the BackingFile every I/O goes through (opened O_RDWR, or O_RDONLY
    with ``read_only``), or a bare descriptor that the caller owns and closes after
    ``close()``; ``close()`` closes a BackingFile that owns its descriptor.
    ``key_checked`` says the key was already proven right (a mount checks it
    against the backing directory's config): failures are then damage, never
    a wrong key.
    """

    def __init__(self, backing: BackingFile | int, cipher: PageCipher, *, realm_layout: bool,
                 name: str = "?", read_only: bool = False, key_checked: bool = False,
                 salvage: bool = False):
        if type(backing) is int:
            backing = BackingFile(backing, name)
        self.backing = backing
        self._pread = backing.pread
        self.salvage = salvage      # read what can be read: damaged pages as zeros, read-only
        self.name = name
        self.cipher = cipher
        self.realm_layout = realm_layout
        self.read_only = read_only or salvage
        self.key_checked = key_checked
        self.base = layout_base(realm_layout)
        self.lock = threading.RLock()
        self.table = IvTable(backing, self.base)
        self.pages = PageStore(backing, cipher, self.table, realm_layout=realm_layout, name=name)
        # bound once: the per-group calls of read and write
        self._read_group, self._write_group = self.pages.read_group, self.pages.write_group
        self._file_id: bytes | None = None
        self._sequence = 0
        self._size = 0
        # (page, plaintext) of the last partial page the previous write sealed: the next
        # small write into it (journals write 4-byte fields around each record) merges into
        # this copy instead of reading, verifying and decrypting the page back
        self._last_partial: tuple[int, bytes] | None = None
        self._read_end = -1        # logical end of the last read: the next one there is sequential
        self._prefetched_to = 0    # physical offset the backing file was advised up to
        self._open()

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        physical = self.backing.size()
        if self.realm_layout:
            self._open_realm(physical)
        else:
            self._open_with_header(physical)

    def _open_realm(self, physical: int) -> None:
        if physical and looks_like_plain_realm(self._pread(PLAIN_REALM_PROBE, 0)):
            raise open_error(NOT_ENCRYPTED, self.name)
        self._check_size(physical)
        self._size = body_to_data_size(physical)
        if not self.key_checked and self._size and self.pages.key_opens(pages_for(self._size)) is False:
            raise WrongKey(f"the key does not open {self.name}: no written page authenticates "
                           "(wrong key, or every page is damaged)")

    def _open_with_header(self, physical: int) -> None:
        if physical == 0:
            # Created but never given a header (a crash right after create): empty.
            if not self.read_only:
                self._file_id = self.pages.binding_id = os.urandom(FILE_ID_SIZE)
                self._write_header(0)
            return
        page = self._pread(HEADER_SIZE, 0)
        try:
            header = fileheader.unpack_page(page, self.cipher.mac_message)
        except HeaderProblem as problem:
            raise open_error(judge_header(page, problem), self.name, problem, self.key_checked) from None
        self._file_id, self._sequence, self._size, self.pages.counter_floor = header
        self.pages.binding_id = self._file_id
        self._check_size(physical, self._size)
        if not self.read_only:
            try:
                self._tidy_beyond_size(physical - HEADER_SIZE)
            except RealmfsError as error:   # a damaged last page: reads will report it
                log.error("%s: could not tidy past the end: %s", self.name, error)

    def _check_size(self, physical: int, header_size: int | None = None) -> None:
        """Refuse a backing length the rulebook calls damage (salvage reads what is there)."""
        verdict = judge_size(physical, self.realm_layout, header_size)
        if verdict is not None and verdict.fails and not self.salvage:
            raise open_error(verdict, self.name)

    # ------------------------------------------------------------------ size
    @property
    def size(self) -> int:
        return self._size

    def _body_size_for(self, size: int) -> int:
        if size == 0:
            return 0
        return data_to_body_size(size)

    # ------------------------------------------------------------------ reading
    def read(self, offset: int, length: int) -> bytes:
        with self.lock:
            if offset >= self._size or length <= 0:
                return b""
            length = min(length, self._size - offset)
            first, last = offset // PAGE_SIZE, (offset + length - 1) // PAGE_SIZE
            if offset == self._read_end:
                self._prefetch(page_offset(last + 1, self.base))
            elif block_of(first) not in self.table.blocks:
                # a jump to a block whose IV page is not cached: two disk reads, IV page then
                # data. Ask for the data first, so that both are in flight at once (cold
                # random 4 KiB reads of a raw file, 3 x 3 runs: ~186 -> ~127 us per pair)
                at = page_offset(first, self.base)
                self.backing.advise(at, page_offset(last, self.base) + PAGE_SIZE - at)
            self._read_end = offset + length
            start = offset - first * PAGE_SIZE
            if block_of(first) == block_of(last):    # one group: one copy out of the buffer
                return bytes(self._read_group(first, last, self.salvage)[start:start + length])
            plain = self._read_pages(first, last, salvage=self.salvage)
            return plain[start:start + length]

    def _prefetch(self, start: int) -> None:
        """Ask the kernel to read the backing file from ``start`` on before we need it."""
        ahead = self._prefetched_to - start   # how far earlier advice reaches past start
        if SEQUENTIAL_PREFETCH // 2 <= ahead <= SEQUENTIAL_PREFETCH:
            return
        # Advice reaching further than one window ahead was given for another part of the
        # file (the reader jumped back): start afresh, or the length would go negative.
        begin = self._prefetched_to if 0 < ahead < SEQUENTIAL_PREFETCH // 2 else start
        self._prefetched_to = start + SEQUENTIAL_PREFETCH
        self.backing.advise(begin, self._prefetched_to - begin)

    def _read_pages(self, first: int, last: int, *, salvage: bool = False) -> bytes:
        """Plaintext of pages first..last; raise IntegrityError on an unreadable page."""
        parts = []
        for group_first, group_last in contiguous_page_groups(first, last):
            parts.append(bytes(self._read_group(group_first, group_last, salvage)))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # ------------------------------------------------------------------ writing
    def write(self, offset: int, data) -> int:
        with self.lock:
            self._check_writable()
            length = len(data)
            if length == 0:
                return 0
            end = offset + length
            old_size = self._size
            first, last = offset // PAGE_SIZE, (end - 1) // PAGE_SIZE
            if end > old_size:
                # A .realm file's size is its physical length, so a write spanning IV blocks
                # (several backing writes) grows it in one step first; otherwise the data
                # write itself extends the file (see _grow_body).
                one_step = not self.realm_layout or block_of(first) == block_of(last)
                self._grow_body(end, page_offset(last, self.base) + PAGE_SIZE if one_step else 0)
            source = data if type(data) is bytes else memoryview(data).cast("B")
            view = memoryview(source)       # slices of it are not copies (bytes slices are)
            last_partial, self._last_partial = self._last_partial, None
            merged = None
            for group_first, group_last in contiguous_page_groups(first, last):
                lo = max(offset, group_first * PAGE_SIZE)
                hi = min(end, (group_last + 1) * PAGE_SIZE)
                count = group_last - group_first + 1
                if lo % PAGE_SIZE == 0 and hi - lo == count * PAGE_SIZE:
                    # whole pages: encrypted straight from the caller's buffer
                    self._write_group(group_first, source, count, lo - offset)
                    continue
                pages = []
                for page in range(group_first, group_last + 1):
                    page_start = page * PAGE_SIZE
                    lo, hi = max(offset, page_start), min(end, page_start + PAGE_SIZE)
                    chunk = view[lo - offset:hi - offset]
                    if hi - lo == PAGE_SIZE:
                        pages.append(chunk)
                    else:
                        merged = (page, self._merged_page(page, lo - page_start, chunk, old_size,
                                                          last_partial))
                        pages.append(merged[1])
                self._write_group(group_first, pages)
            if end > old_size:
                self._set_size(end)
            if merged is not None:
                self._last_partial = (merged[0], bytes(merged[1]))
            return length

    def _merged_page(self, page: int, start: int, chunk, old_size: int,
                     last_partial: tuple[int, bytes] | None) -> bytearray:
        """Read-modify-write of a partial page; pages wholly past the old end are zeros."""
        if page * PAGE_SIZE >= old_size:
            base = bytearray(PAGE_SIZE)
        elif last_partial is not None and last_partial[0] == page:
            base = bytearray(last_partial[1])
        else:
            base = bytearray(self._read_group(page, page, False))   # one copy out of the read buffer
        base[start:start + len(chunk)] = chunk
        return base

    def _grow_body(self, new_size: int, written_to: int = 0) -> None:
        """Extend the backing file to Realm's resize shape for ``new_size``.

        ``written_to``: the physical end of the data a write is about to put there, or 0.
        When it reaches the shape's end (all but block-boundary sizes, where the shape
        also holds the next metadata page) that write extends the file itself: no fstat
        and no ftruncate, and a crash before it leaves the file as it was."""
        target = self._body_size_for(new_size) + self.base
        if written_to >= target:
            return
        if self.backing.size() < target:
            self.backing.truncate(target)

    def _set_size(self, size: int) -> None:
        if self.realm_layout:
            self._size = pages_for(size) * PAGE_SIZE
        else:
            self._write_header(size)

    def _write_header(self, size: int, counter_floor: int | None = None) -> None:
        floor = self.pages.counter_floor if counter_floor is None else counter_floor
        self._sequence += 1
        header = Header(self._file_id, self._sequence, size, floor)
        self.backing.pwrite(fileheader.pack_page(header, self.cipher.mac_message), 0)
        self._size, self.pages.counter_floor = size, floor

    # ------------------------------------------------------------------ truncation
    def truncate(self, size: int) -> None:
        with self.lock:
            self._check_writable()
            self._last_partial = None
            if size == self._size:
                return
            if size > self._size:
                self._grow_body(size)
                self._set_size(size)
                return
            if self.realm_layout:
                # The size lives in the physical length: cut first, then clear the entries
                # the cut left in the last metadata block (Realm Core leaves them stale).
                self._size = pages_for(size) * PAGE_SIZE
                self.backing.truncate(self._body_size_for(self._size))
                self.table.clear_from(pages_for(self._size))
            else:
                # The size lives in the header: commit it first, with the counter floor
                # of the IV blocks the cut removes (one header write); the rest is tidying
                # that _tidy_beyond_size redoes at the next open if a crash stops it.
                body = self.backing.size() - HEADER_SIZE
                self._write_header(size, self._floor_after_cut(body, self._body_size_for(size)))
                self._tidy_beyond_size(body, floor_known=True)

    def _tidy_beyond_size(self, body: int, floor_known: bool = False) -> None:
        """Make everything past the logical size read as zeros again (header layout).
        ``floor_known``: the header already holds the floor of this cut (truncate wrote it)."""
        keep_pages = pages_for(self._size)
        target = self._body_size_for(self._size)
        if body > target:
            floor = self.pages.counter_floor if floor_known else self._floor_after_cut(body, target)
            if floor != self.pages.counter_floor:
                # only a file cut by a realmfs that kept no floor gets here: record it
                # before the counters it stands for are gone
                self._write_header(self._size, floor)
            self.backing.truncate(HEADER_SIZE + target)
            self.table.clear_from(keep_pages)
        tail = self._size % PAGE_SIZE
        if tail:
            page = keep_pages - 1
            current = self._read_pages(page, page)
            if any(current[tail:]):
                self._write_group(page, [current[:tail] + bytes(PAGE_SIZE - tail)])

    def _floor_after_cut(self, body: int, target: int) -> int:
        """The counter floor once a body of ``body`` bytes is cut to ``target``: at least
        every counter of the IV blocks whose metadata page goes. The entries of the block
        the cut ends in stay on disk and keep their counters (IvTable.clear_from)."""
        return max(self.pages.counter_floor, self.table.max_counter_of_blocks(target, body))

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnly(f"{self.name} is open read-only")

    # ------------------------------------------------------------------ durability
    def flush(self) -> None:
        """Nothing is buffered in memory: every write reaches the backing file at once."""

    def fsync(self, datasync: bool = False) -> None:
        with self.lock:
            self.backing.fsync(datasync)

    def close(self) -> None:
        """Forget the caches and close the backing file if it owns its descriptor."""
        with self.lock:
            self.table.clear()
            self.backing.close()

    def __enter__(self) -> "EncryptedFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def fd(self) -> int:
        """The backing descriptor (-1 once an owning backing file is closed)."""
        return self.backing.fd


def open_backing(path: str, cipher: PageCipher, *, realm_layout: bool, read_only: bool = False,
                 key_checked: bool = False, create: bool = False, salvage: bool = False) -> EncryptedFile:
    """Open ``path`` and wrap it; the EncryptedFile owns the descriptor: ``close()`` closes it."""
    backing = BackingFile.open(path, read_only=read_only, create=create)
    try:
        return EncryptedFile(backing, cipher, realm_layout=realm_layout, name=path,
                             read_only=read_only, key_checked=key_checked, salvage=salvage)
    except BaseException:
        backing.close()
        raise
