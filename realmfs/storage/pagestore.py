"""PageStore: groups of encrypted pages of one backing file, read and written whole.

A group is a run of pages within one IV block (``layout.contiguous_page_groups``): its
entries are one slice of one metadata page and its data one contiguous run on disk, so
a group is one read, or two or three writes. EncryptedFile (pagefile.py) turns byte
ranges, sizes and the header into groups; this module knows nothing of sizes.

Invariants
* A page is returned only if it authenticates in slot 1 or slot 2; every other outcome
  is zeros or an error, as the damage rulebook (damage.judge_page) decides.
* Every page write uses ``pagecipher.next_counter``: above every counter seen for the
  page (lost counters of torn writes included) and above ``counter_floor``.
* The order of the backing writes of a group is decided in ``write_group`` alone:
  a crash at any point leaves each page reading as its old or its new content.
* ``binding_id`` and ``counter_floor`` are the file's (set by EncryptedFile from its
  header); the caller holds the file's lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading

from . import sealworker
from ..format.damage import Outcome, Verdict, judge_page, read_error
from .ivtable import IvTable
from ..format.layout import (
    BLOCK_DATA_BYTES,
    ENTRIES_PER_BLOCK,
    ENTRY_SIZE,
    PAGE_SIZE,
    ZERO_PAGE,
    block_of,
    contiguous_page_groups,
    entry_offset,
    entry_start,
    page_offset,
)
from ..format.pagecipher import ENTRY_COUNTERS, PageCipher, ReadResult, page_iv

log = logging.getLogger(__name__)

KEY_PROBE_PAGES = 16      # written pages tried before a .realm file is said to have another key
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


class PageStore:
    """Verified reads and crash-safe writes of page groups over a BackingFile and an IvTable."""

    def __init__(self, backing, cipher: PageCipher, table: IvTable, *, realm_layout: bool, name: str):
        self.cipher = cipher
        self.table = table
        self.base = table.base
        self.realm_layout = realm_layout
        self.name = name
        self.binding_id: bytes | None = None   # header layout: the file id the MACs bind
        self.counter_floor = 0                 # header layout: no counter at or below it is used again
        self._pread, self._preadv, self._pwrite = backing.pread, backing.preadv, backing.pwrite

    # ------------------------------------------------------------------ reading
    def read_group(self, first: int, last: int, salvage: bool) -> memoryview:
        """Plaintext of pages first..last of one block, as a view of this thread's read
        buffer: valid until the thread's next ``read_group``."""
        count = last - first + 1
        table = self.table
        meta = table.block(block_of(first))
        array, whole = _read_buffer()
        buffer = whole[:count * PAGE_SIZE]
        view = buffer[:self._preadv([buffer], page_offset(first, self.base))]
        ivs = self.cipher.slot1_ivs(view, meta, entry_start(first), first, count, self.binding_id)
        if None not in ivs:     # every page authenticates in slot 1: the common case
            block, current = block_of(first), table.current
            current[block] = current.get(block, 0) | ((1 << count) - 1) << (first % ENTRIES_PER_BLOCK)
            self.cipher.decrypt_in_place(array, ivs)
            return buffer
        zeros = []
        for index in range(count):
            page = first + index
            if ivs[index] is not None:
                table.set_current(page)
                continue
            ciphertext = view[index * PAGE_SIZE:(index + 1) * PAGE_SIZE]
            entry = table.entry(page)
            result, counter = self.cipher.classify(entry, ciphertext, page, self.binding_id)
            verdict = judge_page(result, entry, ciphertext, self.realm_layout)
            if verdict.outcome is Outcome.DATA:
                table.set_current(page)
                ivs[index] = page_iv(counter, page)
            elif verdict.outcome is Outcome.PREVIOUS:
                self._note_torn(page)
                ivs[index] = page_iv(counter, page)
            else:
                self._unreadable(page, verdict, salvage)   # zeros, or raises
                zeros.append(index)
        for index in zeros:     # after every check: a raise leaves no page half-done
            buffer[index * PAGE_SIZE:(index + 1) * PAGE_SIZE] = ZERO_PAGE
        for index in range(count):
            if ivs[index] is not None:
                self.cipher.decrypt_in_place(array, [ivs[index]], index * PAGE_SIZE)
        return buffer

    def _note_torn(self, page: int) -> None:
        """Slot 2 served the page: slot 1's counter was used by a write that never landed.
        Remember it so the next write does not use it again (Realm Core would)."""
        if self.table.note_torn(page):
            log.info("%s page %d: last write was torn, serving the previous version", self.name, page)

    def _unreadable(self, page: int, verdict: Verdict, salvage: bool) -> None:
        """Raise for a page the rulebook says fails (in ``salvage`` mode: zeros, logged);
        log a page read as zeros if the rulebook says so."""
        if verdict.fails:
            if not salvage:
                raise read_error(verdict, self.name, page)
            log.error("%s page %d: %s; read as zeros", self.name, page, verdict.kind.value)
        elif verdict.log_level is not None:
            log.log(verdict.log_level, "%s page %d: %s, read as zeros (Realm Core does the same); "
                    "'realmfs verify' lists it", self.name, page, verdict.kind.value)

    def key_opens(self, pages: int) -> bool | None:
        """Of a ``.realm`` file of ``pages`` pages (no key check of its own): True if a
        written page authenticates, False if none of the first KEY_PROBE_PAGES written
        pages does, None if no page is written. Usually only the first page is read."""
        tried = 0
        for first, last in contiguous_page_groups(0, pages - 1):
            for page in range(first, last + 1):
                entry = self.table.entry(page)
                if not entry.written:
                    continue
                if tried == KEY_PROBE_PAGES:
                    return False
                tried += 1
                ciphertext = self._pread(PAGE_SIZE, page_offset(page, self.base))
                result, _ = self.cipher.classify(entry, ciphertext, page, None)
                if result in (ReadResult.SUCCESS, ReadResult.FALLBACK):
                    return True
        return False if tried else None

    # ------------------------------------------------------------------ writing
    def write_group(self, first: int, plaintexts, count: int | None = None, offset: int = 0) -> None:
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
        table = self.table
        block = block_of(first)
        meta = table.block(block)
        current = table.current
        bits = ((1 << count) - 1) << (first % ENTRIES_PER_BLOCK)
        if current.get(block, 0) & bits != bits:
            self._find_torn(first, count)
        current[block] = current.get(block, 0) & ~bits
        start = entry_start(first)
        before = bytes(meta[start:start + count * ENTRY_SIZE])
        lost = table.lost
        lost = [lost.pop(page, 0) for page in range(first, first + count)] if lost else None
        # with REALMFS_SEAL_WORKER=1 a large group is sealed on both cores (no lost counters there)
        splitter = sealworker.splitter() if count >= sealworker.SPLIT_MIN_PAGES and lost is None else None
        with splitter.seal(self.cipher, plaintexts, before, first, self.binding_id, offset,
                           self.counter_floor) if splitter is not None else _NOTHING as sealed:
            ciphertext, after, first_writes = sealed or self.cipher.seal_pages(
                plaintexts, before, first, self.binding_id, offset=offset,
                counter_floor=self.counter_floor, lost=lost)
            try:
                self._write_in_order(first, before, after, ciphertext, first_writes)
            except BaseException:
                table.forget(block)     # the disk may hold some of the new entries: re-read it
                raise
        meta[start:start + count * ENTRY_SIZE] = after
        current[block] = current.get(block, 0) | bits

    def _write_in_order(self, first: int, before: bytes, after, ciphertext, first_writes: bool) -> None:
        """The backing writes of one group, in the order write_group's docstring gives.
        ``ciphertext`` holds the group's pages, contiguous (or a list of parts of them)."""
        where = entry_offset(first, self.base)
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

    def _find_torn(self, first: int, count: int) -> None:
        """Before rewriting pages whose slot 1 is not known to match the disk, check it there.

        A whole-page rewrite does not read the page, but it must know which slot holds
        the live version: after a torn write (a crash in an earlier session) that is
        slot 2, and moving the dead slot 1 over it would leave a second crash between
        entry and data with no version that authenticates. One pread per group, once
        per page and session, and only for pages ``IvTable.unsettled`` names."""
        unsettled = self.table.unsettled(first, count)
        if not unsettled:
            return
        low = unsettled[0]
        span = unsettled[-1] - low + 1
        buffer = _read_buffer()[1][:span * PAGE_SIZE]
        raw = buffer[:self._preadv([buffer], page_offset(low, self.base))]
        meta = self.table.block(block_of(first))
        check = self.cipher.slot1_ivs
        if len(unsettled) == span:    # one pass over the run (the usual case)
            verified = check(raw, meta, entry_start(low), low, span, self.binding_id)
        else:
            verified = None
        for page in unsettled:
            ciphertext = raw[(page - low) * PAGE_SIZE:(page - low + 1) * PAGE_SIZE]
            ok = verified[page - low] if verified is not None else \
                check(ciphertext, meta, entry_start(page), page, 1, self.binding_id)[0]
            if ok is not None:
                continue        # slot 1 authenticates: SUCCESS, nothing to note
            result, _ = self.cipher.classify(self.table.entry(page), ciphertext, page, self.binding_id)
            if result is ReadResult.FALLBACK:
                self._note_torn(page)
