"""Truncation of an EncryptedFile, and the tidying that makes a cut crash-safe.

A mixin of EncryptedFile (pagefile.py), kept apart so each module stays small; it
uses the file's state and its write primitives and holds none of its own.

Invariants
* ``.realm`` layout: the size lives in the physical length, so the cut comes
  first; the IV entries it leaves in the last metadata block are cleared after.
* header layout: the new size (and the counter floor of every IV block the cut
  removes) is committed in one header write first; everything after that is
  tidying that ``_tidy_beyond_size`` redoes at the next writable open if a crash
  stops it.
* A cleared entry keeps its page's last counter in slot 2, and a removed block's
  counters survive in the header's floor (header layout only): regrown pages read
  as never written and never reuse an IV.
"""

from __future__ import annotations

from .layout import (
    BLOCK_BYTES,
    ENTRIES_PER_BLOCK,
    ENTRY_SIZE,
    HEADER_SIZE,
    PAGE_SIZE,
    block_of,
    meta_offset,
    pages_for,
)
from .pagecipher import EMPTY_ENTRY, Entry, max_counter


class Truncation:
    """``truncate`` and its helpers; mixed into EncryptedFile."""

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
                self._clear_entries_from(pages_for(self._size))
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
            floor = self._counter_floor if floor_known else self._floor_after_cut(body, target)
            if floor != self._counter_floor:
                # only a file cut by a realmfs that kept no floor gets here: record it
                # before the counters it stands for are gone
                self._write_header(self._size, floor)
            self.backing.truncate(HEADER_SIZE + target)
            self._clear_entries_from(keep_pages)
        tail = self._size % PAGE_SIZE
        if tail:
            page = keep_pages - 1
            current = self._read_pages(page, page)
            if any(current[tail:]):
                self._write_group(page, [current[:tail] + bytes(PAGE_SIZE - tail)])

    def _floor_after_cut(self, body: int, target: int) -> int:
        """The counter floor once a body of ``body`` bytes is cut to ``target``: at least
        every counter (slot 1 and slot 2) of the IV blocks whose metadata page goes.

        Entries of the block the cut ends in stay on disk and keep their counters
        (_clear_entries_from); whole blocks take theirs with them, so the header keeps
        their maximum."""
        floor = self._counter_floor
        for block in range(-(-target // BLOCK_BYTES), -(-body // BLOCK_BYTES)):
            meta = self._meta.get(block)
            if meta is None:
                meta = self._pread(PAGE_SIZE, meta_offset(block, self.base))
            floor = max(floor, max_counter(meta))
        return floor

    def _clear_entries_from(self, page: int) -> None:
        """Clear the IV entries of ``page`` and the rest of its metadata block, and forget
        cached blocks past it: a regrown page must read as never written.

        A cleared entry keeps the page's last counter in slot 2 (iv1 = 0, macs zero), so
        that a regrown page continues above it instead of reusing IV (1, page)."""
        block = block_of(page)
        for cached in [b for b in self._meta if b > block]:
            del self._meta[cached]
        self._lost_counter = {p: c for p, c in self._lost_counter.items() if p < page}
        self._live = {b: m for b, m in self._live.items() if b < block}
        self._live[block] = self._live.get(block, 0) & ((1 << (page % ENTRIES_PER_BLOCK)) - 1)
        in_block = page % ENTRIES_PER_BLOCK
        if in_block == 0 and meta_offset(block, self.base) >= self.backing.size():
            self._meta.pop(block, None)
            return
        meta = self._meta_block(block)
        start = in_block * ENTRY_SIZE
        cleared = bytearray(PAGE_SIZE - start)
        for at in range(0, len(cleared), ENTRY_SIZE):
            entry = Entry.unpack(bytes(meta[start + at:start + at + ENTRY_SIZE]))
            last = entry.iv1 or entry.iv2
            if last:
                cleared[at:at + ENTRY_SIZE] = Entry(0, EMPTY_ENTRY.mac1, last, EMPTY_ENTRY.mac2).pack()
        if meta[start:] != cleared:
            meta[start:] = cleared
            self._pwrite(bytes(cleared), meta_offset(block, self.base) + start)
