"""EncryptedFile: one plaintext file kept as encrypted pages on a backing file descriptor.

Two layouts share all page code (see docs/file-format.md):

* ``.realm`` files: Realm Core's layout exactly, body at offset 0, logical size in
  whole pages, derived from the physical size; byte-compatible with Realm Core.
* every other file: a realmfs header page (file id, exact size) and then the same
  body at offset 4096; page MACs also bind file id, page number and counter.

Invariants
* A page is returned only if it authenticates in slot 1 or slot 2. Every other
  outcome is zeros (never written, or a state only a crash or Realm Core's own
  shrink leaves in a ``.realm`` file) or an IntegrityError naming file and page.
* Every page write uses a counter above every counter seen for that page and, in the
  header layout, above the header's counter floor (counters of pages whose IV blocks
  a truncation cut away); the order of the backing writes is decided in
  ``_write_group`` alone.
* Bytes past the logical size inside the last page are zero on disk (header
  layout), so a file that grows again reads zeros there.
* All public methods hold ``self.lock``; the object is safe to share between threads.

Truncation and its crash-safe tidying live in pagetruncate.py (a mixin).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections import OrderedDict

from . import fileheader, sealworker
from .backingfile import BackingFile
from .errors import Damaged, IntegrityError, NotEncrypted, ReadOnly, RealmfsError, WrongKey
from .fileheader import FILE_ID_SIZE, Header, HeaderProblem
from .layout import (
    BLOCK_DATA_BYTES,
    ENTRIES_PER_BLOCK,
    ENTRY_SIZE,
    HEADER_SIZE,
    PAGE_SIZE,
    ZERO_PAGE,
    block_of,
    body_to_data_size,
    contiguous_page_groups,
    data_to_body_size,
    entry_offset,
    entry_start,
    layout_base,
    meta_offset,
    page_offset,
    pages_for,
)
from .pagecipher import ENTRY_COUNTERS, Entry, PageCipher, ReadResult, page_iv
from .pagetruncate import Truncation

log = logging.getLogger(__name__)

REALM_MNEMONIC = b"T-DB"
REALM_MNEMONIC_OFFSET = 16
META_CACHE_BLOCKS = 256   # 1 MiB of IV tables per open file: covers 64 MiB of data
KEY_PROBE_PAGES = 16      # written pages tried before a .realm file is said to have another key
# Sequential readers get the backing file read this far ahead of them (posix_fadvise
# WILLNEED, in steps of half of it), so the disk works while the daemon decrypts: cold
# sequential reads measured 280 -> 370 MB/s (median of 5, 256 MiB) against none.
SEQUENTIAL_PREFETCH = 2 << 20
_scratch = threading.local()     # per thread: one block of pages, read and decrypted in place
_NOTHING = contextlib.nullcontext(None)


def _read_buffer():
    """This thread's buffer for one group of pages (64 at most) and a byte view of it:
    re-used, because a fresh 256 KiB buffer costs page faults on every read."""
    try:
        return _scratch.buffer, _scratch.view
    except AttributeError:
        _scratch.buffer = ctypes.create_string_buffer(BLOCK_DATA_BYTES)
        _scratch.view = memoryview(_scratch.buffer).cast("B")
        return _scratch.buffer, _scratch.view


def looks_like_plain_realm(first_bytes: bytes) -> bool:
    """True if the bytes start with an unencrypted Realm file header (``T-DB`` in clear)."""
    return first_bytes[REALM_MNEMONIC_OFFSET:REALM_MNEMONIC_OFFSET + 4] == REALM_MNEMONIC


class EncryptedFile(Truncation):
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
        # bound once: the per-page path calls these without looking them up
        self._pread, self._preadv, self._pwrite = backing.pread, backing.preadv, backing.pwrite
        self.salvage = salvage      # read what can be read: damaged pages as zeros, read-only
        self.name = name
        self.cipher = cipher
        self.realm_layout = realm_layout
        self.read_only = read_only or salvage
        self.key_checked = key_checked
        self.base = layout_base(realm_layout)
        self.lock = threading.RLock()
        self._meta: OrderedDict[int, bytearray] = OrderedDict()
        self._lost_counter: dict[int, int] = {}   # page -> counter of a torn slot 1
        self._live: dict[int, int] = {}   # block -> bitmask of pages whose slot 1 matches the disk
        self._file_id: bytes | None = None
        self._sequence = 0
        self._size = 0
        self._counter_floor = 0   # header layout: no page counter at or below it is ever used again
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
        first = self._pread(24, 0) if physical else b""
        if physical and looks_like_plain_realm(first):
            raise NotEncrypted(f"{self.name} is an unencrypted Realm file; "
                               "encrypt it first with 'realmfs encrypt'")
        if physical % PAGE_SIZE and not self.salvage:
            raise Damaged(f"{self.name}: backing size {physical} is not a whole number of "
                          f"{PAGE_SIZE}-byte pages (file cut short?); see 'realmfs verify'")
        self._size = body_to_data_size(physical)
        if not self.key_checked and self._size:
            self._check_key_on_pages()

    def _open_with_header(self, physical: int) -> None:
        if physical == 0:
            # Created but never given a header (a crash right after create): empty.
            if not self.read_only:
                self._file_id = os.urandom(FILE_ID_SIZE)
                self._write_header(0)
            return
        page = self._pread(HEADER_SIZE, 0)
        try:
            header = fileheader.unpack_page(page, self.cipher.mac_message)
        except HeaderProblem as problem:
            raise self._header_error(problem, page) from None
        self._file_id, self._sequence, self._size, self._counter_floor = header
        body = physical - HEADER_SIZE
        if body % PAGE_SIZE and not self.salvage:
            raise Damaged(f"{self.name}: backing size {physical} is not a whole number of pages; "
                          "see 'realmfs verify'")
        if body_to_data_size(body) < pages_for(self._size) * PAGE_SIZE and not self.salvage:
            raise Damaged(f"{self.name}: header says {self._size} bytes but only "
                          f"{body_to_data_size(body)} are stored (file cut short?)")
        if not self.read_only:
            try:
                self._tidy_beyond_size(body)
            except RealmfsError as error:   # a damaged last page: reads will report it
                log.error("%s: could not tidy past the end: %s", self.name, error)

    def _header_error(self, problem: HeaderProblem, page: bytes) -> RealmfsError:
        if problem.kind == "foreign":
            if looks_like_plain_realm(page):
                return NotEncrypted(f"{self.name} is an unencrypted Realm file; "
                                    "encrypt it first with 'realmfs encrypt'")
            return Damaged(f"{self.name} has no realmfs header (not a file realmfs wrote?)")
        if problem.kind == "key" and not self.key_checked:
            return WrongKey(f"the key does not open {self.name}: wrong key?")
        return IntegrityError(self.name, None, str(problem))

    def _check_key_on_pages(self) -> None:
        """A ``.realm`` file has no key check: the key is right if any written page
        authenticates. Only the first written page is usually needed."""
        last = pages_for(self._size) - 1
        tried = 0
        for first, stop in contiguous_page_groups(0, last):
            meta = self._meta_block(block_of(first))
            for page in range(first, stop + 1):
                entry = self._entry(meta, page)
                if not entry.written:
                    continue
                tried += 1
                if tried > KEY_PROBE_PAGES:
                    break
                ciphertext = self._pread(PAGE_SIZE, page_offset(page, self.base))
                result, _ = self.cipher.classify(entry, ciphertext, page, None)
                if result in (ReadResult.SUCCESS, ReadResult.FALLBACK):
                    return
            if tried > KEY_PROBE_PAGES:
                break
        if tried:
            raise WrongKey(f"the key does not open {self.name}: no written page authenticates "
                           "(wrong key, or every page is damaged)")

    # ------------------------------------------------------------------ IV tables
    def _meta_block(self, block: int) -> bytearray:
        meta = self._meta.get(block)
        if meta is not None:
            self._meta.move_to_end(block)
            return meta
        raw = self._pread(PAGE_SIZE, meta_offset(block, self.base))
        meta = bytearray(raw) + bytearray(PAGE_SIZE - len(raw))
        self._meta[block] = meta
        if len(self._meta) > META_CACHE_BLOCKS:
            self._meta.popitem(last=False)
        return meta

    @staticmethod
    def _entry(meta: bytearray, page: int) -> Entry:
        start = entry_start(page)
        return Entry.unpack(bytes(meta[start:start + ENTRY_SIZE]))

    def _binding_id(self) -> bytes | None:
        return None if self.realm_layout else self._file_id

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
            elif block_of(first) not in self._meta:
                # a jump to a block whose IV page is not cached: two disk reads, IV page then
                # data. Ask for the data first, so that both are in flight at once (cold
                # random 4 KiB reads of a raw file, 3 x 3 runs: ~186 -> ~127 us per pair)
                at = page_offset(first, self.base)
                self.backing.advise(at, page_offset(last, self.base) + PAGE_SIZE - at)
            self._read_end = offset + length
            start = offset - first * PAGE_SIZE
            if block_of(first) == block_of(last):    # one group: one copy out of the buffer
                return bytes(self._read_group(first, last, self.salvage)[start:start + length])
            plain = self._read_pages(first, last, lenient=self.salvage)
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

    def _read_pages(self, first: int, last: int, *, lenient: bool = False) -> bytes:
        """Plaintext of pages first..last; raise IntegrityError on an unreadable page."""
        parts = []
        for group_first, group_last in contiguous_page_groups(first, last):
            parts.append(bytes(self._read_group(group_first, group_last, lenient)))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_group(self, first: int, last: int, lenient: bool) -> memoryview:
        """Plaintext of pages first..last of one block, as a view of this thread's read
        buffer: valid until the thread's next ``_read_group``."""
        count = last - first + 1
        size = count * PAGE_SIZE
        meta = self._meta_block(block_of(first))
        array, whole = _read_buffer()
        buffer = whole[:size]
        got = self._preadv([buffer], page_offset(first, self.base))
        view = buffer[:got]
        binding_id = self._binding_id()
        start = entry_start(first)
        ivs = self.cipher.check_pages(view, meta, start, first, count, binding_id)
        if None not in ivs:     # every page authenticates in slot 1: the common case
            block = block_of(first)
            self._live[block] = self._live.get(block, 0) | ((1 << count) - 1) << (first % ENTRIES_PER_BLOCK)
            self.cipher.decrypt_in_place(array, ivs)
            return buffer
        zeros = []
        for index in range(count):
            if ivs[index] is not None:
                self._set_live(first + index, True)
                continue
            page = first + index
            ciphertext = view[index * PAGE_SIZE:(index + 1) * PAGE_SIZE]
            entry = self._entry(meta, page)
            result, counter = self.cipher.classify(entry, ciphertext, page, binding_id)
            if result is ReadResult.SUCCESS or result is ReadResult.FALLBACK:
                if result is ReadResult.FALLBACK:
                    self._note_torn(page, meta)
                else:
                    self._set_live(page, True)
                ivs[index] = page_iv(counter, page)
            else:
                self._unreadable(page, result, ciphertext, lenient)   # zeros, or raises
                zeros.append(index)
        for index in zeros:     # after every check: a raise leaves no page half-done
            buffer[index * PAGE_SIZE:(index + 1) * PAGE_SIZE] = ZERO_PAGE
        for index in range(count):
            if ivs[index] is not None:
                self.cipher.decrypt_in_place(array, [ivs[index]], index * PAGE_SIZE)
        return buffer

    def _note_torn(self, page: int, meta: bytearray) -> None:
        """Slot 2 served the page: slot 1's counter was used by a write that never landed.
        Remember it so the next write does not use it again (Realm Core would)."""
        entry = self._entry(meta, page)
        if page not in self._lost_counter:
            log.info("%s page %d: last write was torn, serving the previous version", self.name, page)
        self._lost_counter[page] = entry.iv1

    def _set_live(self, page: int, live: bool) -> None:
        block, bit = block_of(page), 1 << (page % ENTRIES_PER_BLOCK)
        mask = self._live.get(block, 0)
        self._live[block] = (mask | bit) if live else (mask & ~bit)

    def _find_torn(self, first: int, count: int, meta: bytearray, binding_id) -> None:
        """Before rewriting pages whose slot 1 is not known to be live, check it on disk.

        A whole-page rewrite does not read the page, but it must know which slot holds
        the live version: after a torn write (a crash in an earlier session) that is
        slot 2, and moving the dead slot 1 over it would leave a second crash between
        entry and data with no version that authenticates. One pread per group, once
        per page and session, and only for pages with both slots written: classify
        can only fall back to a slot 2 that exists, so a page written once (slot 2
        empty) has nothing to find."""
        live = self._live.get(block_of(first), 0)
        lost = self._lost_counter
        start = entry_start(first)
        entries = memoryview(meta)[start:start + count * ENTRY_SIZE]
        unknown = [page for page, (iv1, iv2) in enumerate(ENTRY_COUNTERS.iter_unpack(entries), first)
                   if iv1 and iv2
                   and not live >> (page % ENTRIES_PER_BLOCK) & 1
                   and page not in lost]
        entries.release()
        if not unknown:
            return
        low = unknown[0]
        span = unknown[-1] - low + 1
        buffer = _read_buffer()[1][:span * PAGE_SIZE]
        raw = buffer[:self._preadv([buffer], page_offset(low, self.base))]
        check = self.cipher.check_pages
        if len(unknown) == span:    # one pass over the run (the usual case)
            verified = check(raw, meta, entry_start(low), low, span, binding_id)
        else:
            verified = None
        for page in unknown:
            ciphertext = raw[(page - low) * PAGE_SIZE:(page - low + 1) * PAGE_SIZE]
            ok = verified[page - low] if verified is not None else \
                check(ciphertext, meta, entry_start(page), page, 1, binding_id)[0]
            if ok is not None:
                continue        # slot 1 authenticates: SUCCESS, nothing to note
            result, _ = self.cipher.classify(self._entry(meta, page), ciphertext, page, binding_id)
            if result is ReadResult.FALLBACK:
                self._note_torn(page, meta)

    def _unreadable(self, page: int, result: ReadResult, ciphertext, lenient: bool) -> bytes:
        """Zeros for the page, or raise: the one place that decides what a failed read means."""
        if result is ReadResult.UNINITIALIZED:
            return ZERO_PAGE
        zero_data = ciphertext == ZERO_PAGE
        if self.realm_layout and zero_data and result is ReadResult.INTERRUPTED_FIRST_WRITE:
            # Realm Core's shrink keeps IV entries and regrows zero pages; it and a crash
            # before a first data write leave exactly this. realmfs never leaves it itself.
            return ZERO_PAGE
        if self.realm_layout and result is ReadResult.STALE_ZERO:
            log.warning("%s page %d: all-zero page with a stale IV entry, read as zeros "
                        "(Realm Core does the same); 'realmfs verify' lists it", self.name, page)
            return ZERO_PAGE
        if lenient:
            log.error("%s page %d: %s; read as zeros", self.name, page, result.value)
            return ZERO_PAGE
        if result is ReadResult.EOF:
            raise Damaged(f"{self.name}: page {page} is cut short (file truncated?)")
        raise IntegrityError(self.name, page, f"{result.value} (tampered, corrupted or torn)")

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

    def _write_group(self, first: int, plaintexts, count: int | None = None, offset: int = 0) -> None:
        """Encrypt and write pages first.. (one metadata block) in crash-safe order.

        ``plaintexts`` is a list of pages, or (with ``count``) one buffer holding
        ``count`` pages from byte ``offset`` on.

        Rewrites: entry first, then data (Realm Core's order): a crash in between
        leaves slot 2 matching the old data, so the old page is served.
        First writes: data first, then entry: a crash in between leaves the entry
        empty and the page reads as never written (zeros) -- its old content --
        instead of an "interrupted first write" that looks like tampering.
        """
        if count is None:
            count = len(plaintexts)
            plaintexts = plaintexts[0] if count == 1 else b"".join(plaintexts)
        block = block_of(first)
        meta = self._meta_block(block)
        binding_id = self._binding_id()
        bits = ((1 << count) - 1) << (first % ENTRIES_PER_BLOCK)
        if self._live.get(block, 0) & bits != bits:
            self._find_torn(first, count, meta, binding_id)
        self._live[block] = self._live.get(block, 0) & ~bits
        start = entry_start(first)
        end = start + count * ENTRY_SIZE
        before = bytes(meta[start:end])
        lost = self._lost_counter
        floors = [lost.pop(page, 0) for page in range(first, first + count)] if lost else None
        # with REALMFS_SEAL_WORKER=1 a large group is sealed on both cores (no floors there)
        splitter = sealworker.splitter() if count >= sealworker.SPLIT_MIN_PAGES and floors is None else None
        with splitter.seal(self.cipher, plaintexts, meta, start, first, count, binding_id, offset,
                           self._counter_floor) if splitter is not None else _NOTHING as sealed:
            ciphertext, first_writes = sealed or self.cipher.seal_pages(
                plaintexts, meta, start, first, count, binding_id, floors, offset, self._counter_floor)
            after = bytes(meta[start:end])
            where = entry_offset(first, self.base)
            try:
                self._write_in_order(first, before, after, ciphertext, first_writes, where)
            except BaseException:
                # the cached entries may now be ahead of the disk: forget them, re-read later
                self._meta.pop(block, None)
                raise
        self._live[block] = self._live.get(block, 0) | bits

    def _write_in_order(self, first: int, before: bytes, after: bytes, ciphertext,
                        first_writes: bool, where: int) -> None:
        """The backing writes of one group, in the order _write_group's docstring gives.
        ``ciphertext`` holds the group's pages, contiguous (or a list of parts of them)."""
        if first_writes:
            # entries of pages being rewritten go first; entries of first writes stay empty
            rewritten = [at for at, (iv1, _) in zip(range(0, len(before), ENTRY_SIZE),
                                                    ENTRY_COUNTERS.iter_unpack(before)) if iv1]
            if rewritten:
                early = bytearray(before)
                for at in rewritten:
                    early[at:at + ENTRY_SIZE] = after[at:at + ENTRY_SIZE]
                self._pwrite(bytes(early), where)     # a rewritten entry always changes
            self._pwrite(ciphertext, page_offset(first, self.base))
            self._pwrite(after, where)
        else:
            self._pwrite(after, where)
            self._pwrite(ciphertext, page_offset(first, self.base))

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
        floor = self._counter_floor if counter_floor is None else counter_floor
        self._sequence += 1
        header = Header(self._file_id, self._sequence, size, floor)
        self._pwrite(fileheader.pack_page(header, self.cipher.mac_message), 0)
        self._size, self._counter_floor = size, floor

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
            self._meta.clear()
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
