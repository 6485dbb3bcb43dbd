"""IvTable: what one EncryptedFile knows of its file's IV table (Realm Core's entries).

Three things, kept per IV block (one metadata page describing 64 data pages):

* ``blocks``: cached metadata pages, least recently used dropped past META_CACHE_BLOCKS;
* ``current``: per block, a bitmask of the pages whose slot 1 is known to match the
  data on disk (it authenticated on a read, or this open wrote the page). A rewrite of a
  page not known current checks the disk first for a torn write (PageStore);
* ``lost``: per page, the slot-1 counter of a write that was torn (slot 2 served the
  page), so that the next write of the page goes above it: the entry no longer shows it.

The read and write paths use the three dicts directly (no call per page); the rest of
the table's rules are methods here, among them what a truncation does to the table.

Invariants
* A cached metadata page equals the disk, except while a write of its block is under
  way; a write that fails forgets the block (``forget``), which is then read again.
* ``clear_from`` leaves every page from the cut on reading as never written; a cleared
  entry keeps its page's last counter in slot 2 (iv1 = 0, MACs zero), so a regrown page
  continues above it instead of reusing IV (1, page).
"""

from __future__ import annotations

from collections import OrderedDict

from ..format.layout import BLOCK_BYTES, ENTRIES_PER_BLOCK, ENTRY_SIZE, PAGE_SIZE, block_of, entry_start, meta_offset
from ..format.pagecipher import ENTRY_COUNTERS, EMPTY_ENTRY, Entry, max_counter

META_CACHE_BLOCKS = 256   # 1 MiB of IV tables per open file: covers 64 MiB of data


class IvTable:
    """Cached IV-table pages, slot-1-matches-disk bits and lost counters of one backing file."""

    def __init__(self, backing, base: int):
        self._backing = backing
        self._pread = backing.pread
        self.base = base
        self.blocks: OrderedDict[int, bytearray] = OrderedDict()
        self.current: dict[int, int] = {}     # block -> bitmask: slot 1 matches the disk
        self.lost: dict[int, int] = {}        # page -> counter of a torn slot 1

    def block(self, block: int) -> bytearray:
        """The metadata page of ``block`` (zeros past the end of the file), cached."""
        meta = self.blocks.get(block)
        if meta is not None:
            self.blocks.move_to_end(block)
            return meta
        raw = self._pread(PAGE_SIZE, meta_offset(block, self.base))
        meta = bytearray(raw) + bytearray(PAGE_SIZE - len(raw))
        self.blocks[block] = meta
        if len(self.blocks) > META_CACHE_BLOCKS:
            self.blocks.popitem(last=False)
        return meta

    def entry(self, page: int) -> Entry:
        start = entry_start(page)
        return Entry.unpack(bytes(self.block(block_of(page))[start:start + ENTRY_SIZE]))

    def forget(self, block: int) -> None:
        """Drop the cached copy of ``block``: the disk may differ from it now."""
        self.blocks.pop(block, None)

    def clear(self) -> None:
        self.blocks.clear()

    # ------------------------------------------------------------------ slot 1 and torn writes
    def set_current(self, page: int) -> None:
        block = block_of(page)
        self.current[block] = self.current.get(block, 0) | 1 << (page % ENTRIES_PER_BLOCK)

    def note_torn(self, page: int) -> bool:
        """Slot 2 served ``page``: its slot-1 counter is lost. True the first time."""
        new = page not in self.lost
        self.lost[page] = self.entry(page).iv1
        return new

    def unsettled(self, first: int, count: int) -> list[int]:
        """Pages first.. (``count``, one block) whose slot 1 may be a torn write: both slots
        written (a page written once has no slot 2 to fall back to), not known current,
        no lost counter noted yet. Only these need a look at the disk before a rewrite."""
        current = self.current.get(block_of(first), 0)
        lost = self.lost
        start = entry_start(first)
        entries = memoryview(self.block(block_of(first)))[start:start + count * ENTRY_SIZE]
        try:
            return [page for page, (iv1, iv2) in enumerate(ENTRY_COUNTERS.iter_unpack(entries), first)
                    if iv1 and iv2 and not current >> (page % ENTRIES_PER_BLOCK) & 1 and page not in lost]
        finally:
            entries.release()

    # ------------------------------------------------------------------ truncation
    def max_counter_of_blocks(self, target: int, body: int) -> int:
        """The highest counter (slot 1 or 2) in the metadata pages a cut of the body from
        ``body`` bytes down to ``target`` removes whole: they take their counters along."""
        top = 0
        for block in range(-(-target // BLOCK_BYTES), -(-body // BLOCK_BYTES)):
            meta = self.blocks.get(block)
            if meta is None:
                meta = self._pread(PAGE_SIZE, meta_offset(block, self.base))
            top = max(top, max_counter(meta))
        return top

    def clear_from(self, page: int) -> None:
        """Clear the entries of ``page`` and the rest of its block (one write, none if
        already clear) and forget everything known past it: regrown pages read as never
        written. Call it after the cut, with the backing file's new length."""
        block = block_of(page)
        for cached in [b for b in self.blocks if b > block]:
            del self.blocks[cached]
        for gone in [p for p in self.lost if p >= page]:
            del self.lost[gone]
        for gone in [b for b in self.current if b > block]:
            del self.current[gone]
        in_block = page % ENTRIES_PER_BLOCK
        self.current[block] = self.current.get(block, 0) & ((1 << in_block) - 1)
        if in_block == 0 and meta_offset(block, self.base) >= self._backing.size():
            self.forget(block)
            return
        meta = self.block(block)
        start = in_block * ENTRY_SIZE
        cleared = bytearray(PAGE_SIZE - start)
        for at, (iv1, iv2) in zip(range(0, len(cleared), ENTRY_SIZE), ENTRY_COUNTERS.iter_unpack(meta[start:])):
            if iv1 or iv2:
                cleared[at:at + ENTRY_SIZE] = Entry(0, EMPTY_ENTRY.mac1, iv1 or iv2, EMPTY_ENTRY.mac2).pack()
        if meta[start:] != cleared:
            meta[start:] = cleared
            self._backing.pwrite(bytes(cleared), meta_offset(block, self.base) + start)
