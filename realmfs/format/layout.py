"""Pure geometry of the on-disk format: constants and offset/size arithmetic.

Every number of the format lives here and nowhere else. No I/O, no crypto.

A Realm-layout body is a run of *blocks*: one metadata page holding 64 IV-table
entries of 64 bytes each, followed by up to 64 data pages of 4096 bytes::

    [meta 0][data 0]...[data 63][meta 1][data 64]...[data 127][meta 2]...

A ``.realm`` file is exactly such a body (Realm Core's layout, byte-compatible).
Every other file has one 4096-byte realmfs header page in front of the body, so
``base`` (the physical offset at which the body starts) is 0 or HEADER_SIZE.

Invariants: all functions are pure and total on non-negative integers; logical
(data) offsets never include metadata pages; physical offsets always include
``base``.
"""

from __future__ import annotations

PAGE_SIZE = 4096                                   # data bytes per page, fixed by Realm Core
ZERO_PAGE = bytes(PAGE_SIZE)                       # what a never-written page reads as
COUNTER_SIZE = 4                                   # u32 LE write counter of a slot
MAC_SIZE = 28                                      # HMAC-SHA224 output, stored whole
SLOT_SIZE = COUNTER_SIZE + MAC_SIZE                # 32: one (counter, mac) slot
ENTRY_SIZE = 2 * SLOT_SIZE                         # 64: one IV-table entry, two slots
ENTRIES_PER_BLOCK = PAGE_SIZE // ENTRY_SIZE        # 64 data pages described by one metadata page
BLOCK_PAGES = ENTRIES_PER_BLOCK + 1                # metadata page + its data pages
BLOCK_DATA_BYTES = ENTRIES_PER_BLOCK * PAGE_SIZE   # 262144 logical bytes per block
BLOCK_BYTES = BLOCK_PAGES * PAGE_SIZE              # 266240 physical bytes per full block

AES_KEY_SIZE = 32
MAC_KEY_SIZE = 32
KEY_SIZE = AES_KEY_SIZE + MAC_KEY_SIZE             # 64: bytes 0-31 AES-256, 32-63 HMAC
AES_BLOCK = 16
COUNTER_NEVER_WRITTEN = 0                          # counter 0 means "page never written"
COUNTER_MAX = 0xFFFFFFFF

HEADER_SIZE = PAGE_SIZE                            # realmfs header page in front of non-realm bodies
REALM_BASE = 0
HEADER_BASE = HEADER_SIZE


def pages_for(size: int) -> int:
    """Number of data pages needed to hold ``size`` logical bytes."""
    return -(-size // PAGE_SIZE)


def block_of(page: int) -> int:
    return page // ENTRIES_PER_BLOCK


def meta_offset(block: int, base: int = 0) -> int:
    """Physical offset of metadata page ``block``."""
    return base + block * BLOCK_BYTES


def entry_start(page: int) -> int:
    """Offset of page ``page``'s entry inside its metadata page."""
    return (page % ENTRIES_PER_BLOCK) * ENTRY_SIZE


def entry_offset(page: int, base: int = 0) -> int:
    """Physical offset of the IV-table entry of data page ``page``."""
    return meta_offset(block_of(page), base) + entry_start(page)


def layout_base(realm_layout: bool) -> int:
    """Where the body starts: at 0 in Realm's layout, after the header page in realmfs's."""
    return REALM_BASE if realm_layout else HEADER_BASE


def page_offset(page: int, base: int = 0) -> int:
    """Physical offset of data page ``page``."""
    return base + (page + page // ENTRIES_PER_BLOCK + 1) * PAGE_SIZE


def data_to_file(offset: int, base: int = 0) -> int:
    """Physical offset of logical byte ``offset``."""
    return base + offset + (offset // BLOCK_DATA_BYTES + 1) * PAGE_SIZE


def file_to_data(offset: int, base: int = 0) -> int:
    """Logical offset of a physical offset that lies inside a data page."""
    f = offset - base
    return f - ((f // PAGE_SIZE + ENTRIES_PER_BLOCK) // BLOCK_PAGES) * PAGE_SIZE


def body_to_data_size(body_size: int) -> int:
    """Realm Core's ``encrypted_size_to_data_size`` for a body of ``body_size`` bytes."""
    if body_size <= 0:
        return 0
    return body_size - ((body_size // PAGE_SIZE + ENTRIES_PER_BLOCK) // BLOCK_PAGES) * PAGE_SIZE


def data_to_body_size(data_size: int) -> int:
    """Body size Realm Core's ``File::resize(data_size)`` produces: P + P/64 + 1 pages.

    ``data_size`` is rounded up to whole pages first. Realm keeps a lone metadata
    page for ``resize(0)``; callers that want an empty file for size 0 say so.
    """
    rounded = pages_for(data_size) * PAGE_SIZE
    return data_to_file(rounded)


def written_body_size(pages: int) -> int:
    """Body size of a file grown by page writes alone: P + ceil(P/64) pages."""
    return (pages + -(-pages // ENTRIES_PER_BLOCK)) * PAGE_SIZE


def body_size_is_valid(body_size: int) -> bool:
    """True for both shapes Realm produces (whole pages, not a bare trailing metadata page
    unless it is the resize shape)."""
    if body_size == 0:
        return True
    if body_size % PAGE_SIZE:
        return False
    pages = body_to_data_size(body_size) // PAGE_SIZE
    return body_size in (written_body_size(pages), data_to_body_size(pages * PAGE_SIZE))


def page_runs(offset: int, length: int):
    """Split a logical range into per-page pieces.

    Yields ``(page, start_in_page, end_in_page)`` for every page the range touches.
    """
    end = offset + length
    page = offset // PAGE_SIZE
    while offset < end:
        page_start = page * PAGE_SIZE
        stop = min(end, page_start + PAGE_SIZE)
        yield page, offset - page_start, stop - page_start
        offset = stop
        page += 1


def contiguous_page_groups(first: int, last: int):
    """Split pages ``first..last`` (inclusive) into runs that share one metadata block.

    Within a run both the IV entries and the data pages are contiguous on disk,
    so each run costs one read (or write) of entries and one of data.
    """
    page = first
    while page <= last:
        stop = min(last, (block_of(page) + 1) * ENTRIES_PER_BLOCK - 1)
        yield page, stop
        page = stop + 1
