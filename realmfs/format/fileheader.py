"""Pure format of the realmfs header page in front of non-``.realm`` files.

Realm's layout stores no length, no identity and no version, so every file that
is not a ``.realm`` file starts with one 4096-byte header page carrying them::

    offset 0     slot A (76 bytes)
    offset 2048  slot B (76 bytes, identical to A after every complete update)
    all other bytes zero

    slot: magic "RLMFSHDR" | version u16 | flags u16 | counter floor u32
          | file id 16 | sequence u64 | plaintext size u64
          | HMAC-SHA224(mac key, "realmfs-header\\0" || the 48 bytes before it)

The counter floor (the field was ``reserved``, always 0, in the first version-1
files, which read as floor 0) is at least every page counter a truncation ever cut
away with whole IV blocks: every page write of the file uses a counter above it, so
pages regrown where blocks were cut never repeat an IV. It only grows, and is
written together with the new size before the cut (pagefile.py).

Both slots are written by one ``pwrite`` of the whole page. A crash cannot tear a
page write, and a torn sector after power loss leaves one slot new and one old:
the higher valid sequence wins. Any other disagreement is damage. No I/O here.
"""

from __future__ import annotations

import hmac
import struct
from typing import NamedTuple

from .layout import HEADER_SIZE, MAC_SIZE

MAGIC = b"RLMFSHDR"
VERSION = 1
FILE_ID_SIZE = 16
SLOT_OFFSETS = (0, HEADER_SIZE // 2)
_BODY = struct.Struct("<8sHHI16sQQ")
SLOT_SIZE = _BODY.size + MAC_SIZE
_MAC_CONTEXT = b"realmfs-header\x00"


class Header(NamedTuple):
    file_id: bytes
    sequence: int
    size: int
    counter_floor: int = 0


class HeaderProblem(Exception):
    """Why a header page cannot be used; ``kind`` is 'foreign', 'key' or 'damaged'."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def pack_page(header: Header, mac) -> bytes:
    """The full header page for ``header``; ``mac(message)`` is the key's HMAC."""
    body = _BODY.pack(MAGIC, VERSION, 0, header.counter_floor, header.file_id, header.sequence, header.size)
    slot = body + mac(_MAC_CONTEXT + body)
    page = bytearray(HEADER_SIZE)
    for offset in SLOT_OFFSETS:
        page[offset:offset + SLOT_SIZE] = slot
    return bytes(page)


def unpack_slot(raw: bytes, mac) -> Header | None:
    """One slot's header if its MAC holds, else None; HeaderProblem for another version."""
    body, tag = raw[:_BODY.size], raw[_BODY.size:SLOT_SIZE]
    if not hmac.compare_digest(mac(_MAC_CONTEXT + body), tag):
        return None
    magic, version, flags, counter_floor, file_id, sequence, size = _BODY.unpack(body)
    if version != VERSION:
        raise HeaderProblem("damaged", f"unsupported header version {version} (this realmfs reads {VERSION})")
    return Header(file_id, sequence, size, counter_floor)


def has_header_magic(page: bytes) -> bool:
    """True if either slot of ``page`` starts with the magic: a header, good or damaged."""
    return any(page[o:o + len(MAGIC)] == MAGIC for o in SLOT_OFFSETS)


def unpack_page(page: bytes, mac) -> Header:
    """Parse and authenticate a header page, or raise HeaderProblem."""
    if not has_header_magic(page):
        raise HeaderProblem("foreign", "no realmfs header")
    if len(page) < HEADER_SIZE:
        raise HeaderProblem("damaged", f"header is {len(page)} bytes, expected {HEADER_SIZE}")
    raws = [page[o:o + SLOT_SIZE] for o in SLOT_OFFSETS]
    slots = [unpack_slot(r, mac) for r in raws]
    valid = [s for s in slots if s is not None]
    if not valid:
        raise HeaderProblem("key", "neither header slot authenticates")
    if len(valid) == 1:
        bad = "A" if slots[0] is None else "B"
        raise HeaderProblem("damaged", f"header slot {bad} fails authentication")
    padding = bytearray(page[:HEADER_SIZE])
    for offset in SLOT_OFFSETS:
        padding[offset:offset + SLOT_SIZE] = bytes(SLOT_SIZE)
    if any(padding):
        raise HeaderProblem("damaged", "header padding is not zero")
    a, b = valid
    if a.file_id != b.file_id:
        raise HeaderProblem("damaged", "header slots name different files")
    if a.sequence == b.sequence and a != b:
        raise HeaderProblem("damaged", "header slots disagree")
    return max(valid, key=lambda h: h.sequence)


def unpack_any_slot(page: bytes, mac) -> Header | None:
    """The header of the first slot that authenticates on its own, or None: what is
    left of a page ``unpack_page`` calls damaged (repair rewrites the page from it)."""
    for offset in SLOT_OFFSETS:
        slot = page[offset:offset + SLOT_SIZE]
        if not slot.startswith(MAGIC):
            continue
        try:
            header = unpack_slot(slot, mac)
        except HeaderProblem:
            continue
        if header is not None:
            return header
    return None
