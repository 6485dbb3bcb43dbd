"""Format detection: what kind of bytes a backing file holds, decided in one place.

* a Realm file in clear: ``T-DB`` at byte 16 of its first page (Realm Core's header);
* a realmfs header page: the header magic at one of its two slots (fileheader.py);
* Realm Core's encrypted layout: a first page that reads as an IV table with plausible
  counters (no key needed, so a heuristic; ``looks_like_realm_ciphertext`` is strict).

The functions on bytes are pure; the ``path`` ones read the file's first page only.
Invariant: every module that asks one of these questions asks it here.
"""

from __future__ import annotations

import os

from .fileheader import has_header_magic
from .layout import COUNTER_MAX, ENTRY_SIZE, HEADER_SIZE, PAGE_SIZE, body_size_is_valid
from .pagecipher import EMPTY_ENTRY, Entry

REALM_MNEMONIC = b"T-DB"
REALM_MNEMONIC_OFFSET = 16
PLAIN_REALM_PROBE = REALM_MNEMONIC_OFFSET + len(REALM_MNEMONIC) + 4   # bytes enough to tell
# Counters in a file Realm Core or realmfs wrote are small; random or text bytes taken
# as IV entries almost never are (ASCII text never: its u32s are >= 0x20202020).
PLAUSIBLE_COUNTER = 1 << 20


def looks_like_plain_realm(first_bytes: bytes) -> bool:
    """True if the bytes start with an unencrypted Realm file header (``T-DB`` in clear)."""
    return first_bytes[REALM_MNEMONIC_OFFSET:REALM_MNEMONIC_OFFSET + len(REALM_MNEMONIC)] == REALM_MNEMONIC


def has_realmfs_header(first: bytes) -> bool:
    """True if ``first`` (the first page) carries a realmfs header, damaged or not."""
    return has_header_magic(first)


def first_page(path: str) -> bytes:
    """The first HEADER_SIZE bytes of ``path`` (fewer if the file is shorter)."""
    with open(path, "rb") as f:
        return f.read(HEADER_SIZE)


def iv_table_entries(meta: bytes) -> list | None:
    """The entries of a first page if it could be Realm Core's IV table (some entry with
    a plausible counter, see PLAUSIBLE_COUNTER, and no plain Realm header), else None."""
    if len(meta) < ENTRY_SIZE or looks_like_plain_realm(meta):
        return None
    whole = len(meta) - len(meta) % ENTRY_SIZE
    entries = [Entry.unpack(meta[i:i + ENTRY_SIZE]) for i in range(0, whole, ENTRY_SIZE)]
    return entries if any(0 < e.iv1 < PLAUSIBLE_COUNTER for e in entries) else None


def has_realm_iv_table(path: str) -> bool:
    return iv_table_entries(first_page(path)) is not None


def looks_like_realm_ciphertext(path: str) -> bool:
    """Realm Core's encrypted shape, strictly (encrypt refuses such a source): whole pages,
    a valid body size, and a first IV table in which most written entries have plausible
    counters and every empty slot 2 is all zero. Random bytes pass with negligible odds."""
    size = os.path.getsize(path)
    if size < 2 * PAGE_SIZE or not body_size_is_valid(size):
        return False
    entries = iv_table_entries(first_page(path))
    if entries is None:
        return False
    written = [e for e in entries if e.iv1]
    plausible = [e for e in written if _plausible(e.iv1) and _plausible(e.iv2)]
    slot2_consistent = all(e.iv2 or not any(e.mac2) for e in entries)
    unwritten_empty = all(e.iv1 or e == EMPTY_ENTRY or e.iv2 for e in entries)
    # at least half: one odd counter in two (a tampered IV, Realm Core's iv_malleable)
    # still counts; random bytes would need 32 of 64 entries with both counters plausible
    return bool(written) and slot2_consistent and unwritten_empty and 2 * len(plausible) >= len(written)


def _plausible(counter: int) -> bool:
    """Small, or just below 2**32: Realm Core's counters wrap from 0xFFFFFFFF to 1."""
    return counter < PLAUSIBLE_COUNTER or counter > COUNTER_MAX - PLAUSIBLE_COUNTER


def detect_realm_layout(path: str) -> bool:
    """Layout of a lone file: realmfs header in front, or Realm Core's bare layout."""
    return not has_realmfs_header(first_page(path))
