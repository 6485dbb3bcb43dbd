"""Pure on-disk structures: the file header, root slots and page encodings.

File = whole 4096-byte pages. Page 0 is the header:

    0     magic          8 bytes  b"REALMENG"
    8     format version u32
    12    page size      u32
    16    header crc32   u32      over bytes 0..16
    512   root slot 0    SLOT_SIZE bytes, alone in its 512-byte sector
    1024  root slot 1    SLOT_SIZE bytes, alone in its 512-byte sector

A root slot is (txnid u64, npages u64, catalog pgno u64, catalog length u32,
freelist pgno u64, freelist length u32, commit pages u32, commit crc u32,
crc32 u32 over the preceding bytes).  The current commit is the slot with the
larger txnid among those whose crc matches; a writer overwrites the other one.
(commit pages, commit crc) is the commit digest: the number of pages the commit
wrote and a crc over their (pgno, page crc) pairs, so that opening a file can
tell whether every page of the newest commit reached the disk (commitcheck).

Every other page starts with a 16-byte page header
(type u8, flags u8, count u16, crc32 u32, txnid u64).  The crc covers the whole
page except the crc field itself; txnid is the commit that wrote the page, so
(pgno, txnid) identifies page content forever (pages are copy-on-write and a
reused page is always rewritten by a later txn).  Node caches rely on that.

Page types: LEAF and BRANCH nodes of B+trees, CHAIN pages holding blobs
(overflow values, the catalog and the free list).  Node payloads are offset
arrays followed by concatenated keys/values (see encode_leaf/encode_branch),
so encoding and decoding run mostly in C.  Nothing here does I/O.
"""

import struct
import sys
import zlib
from array import array
from itertools import accumulate, chain
from dataclasses import dataclass

PAGE_SIZE = 4096
MAGIC = b"REALMENG"
FORMAT_VERSION = 4                       # 4: compact records (no primary key, narrow lengths), empty index values
OLDEST_UPGRADABLE_VERSION = 2            # `python -m engine upgrade` reads versions 2 .. current

U32 = struct.Struct("<I")
HEADER = struct.Struct("<8sII")          # magic, version, page size
HEADER_CRC = struct.Struct("<I")
HEADER_CRC_OFFSET = 16
SECTOR_SIZE = 512                        # the unit a disk writes atomically (or tears)
SLOT_OFFSETS = (SECTOR_SIZE, 2 * SECTOR_SIZE)
SLOT = struct.Struct("<QQQIQIII")        # txnid npages cat_pg cat_len fl_pg fl_len commit_pages commit_crc
SLOT_CRC = struct.Struct("<I")
SLOT_SIZE = SLOT.size + SLOT_CRC.size
COMMIT_ENTRY = struct.Struct("<QI")      # (pgno, page crc), the unit of the commit digest

PAGE_HEADER = struct.Struct("<BBHIQ")    # type flags count crc txnid
PAGE_HEADER_SIZE = PAGE_HEADER.size      # 16
TXNID_OFFSET = 8
NODE_CAPACITY = PAGE_SIZE - PAGE_HEADER_SIZE

TYPE_LEAF = 1
TYPE_BRANCH = 2
TYPE_CHAIN = 3

MAX_KEY_SIZE = 512
INLINE_VALUE_MAX = 1024                  # larger leaf values go to chain pages

U16 = struct.Struct("<H")
U64 = struct.Struct("<Q")
OVERFLOW_REF = struct.Struct("<QI")
CHAIN_HEAD = struct.Struct("<QI")        # next pgno, bytes used in this page
CHAIN_DATA_OFFSET = PAGE_HEADER_SIZE + CHAIN_HEAD.size
CHAIN_CAPACITY = PAGE_SIZE - CHAIN_DATA_OFFSET


@dataclass(frozen=True)
class RootSlot:
    txnid: int
    npages: int
    catalog_pgno: int
    catalog_len: int
    freelist_pgno: int
    freelist_len: int
    commit_pages: int = 0
    commit_crc: int = 0


def encode_header() -> bytes:
    """A fresh page 0 with both slots empty (callers then write slot 0)."""
    page = bytearray(PAGE_SIZE)
    HEADER.pack_into(page, 0, MAGIC, FORMAT_VERSION, PAGE_SIZE)
    HEADER_CRC.pack_into(page, HEADER_CRC_OFFSET, zlib.crc32(page[:HEADER.size]))
    return bytes(page)


def check_header(buf) -> str | None:
    """Return None when the header page is valid, else a problem keyword."""
    if len(buf) < HEADER.size + 4 or bytes(buf[:8]) != MAGIC:
        return "magic"
    magic, version, page_size = HEADER.unpack_from(buf, 0)
    (crc,) = HEADER_CRC.unpack_from(buf, HEADER_CRC_OFFSET)
    if crc != zlib.crc32(bytes(buf[:HEADER.size])):
        return "crc"
    if version != FORMAT_VERSION or page_size != PAGE_SIZE:
        return "version"
    return None


def header_version(buf) -> int:
    return HEADER.unpack_from(buf, 0)[1]


def encode_slot(slot: RootSlot) -> bytes:
    body = SLOT.pack(slot.txnid, slot.npages, slot.catalog_pgno, slot.catalog_len,
                     slot.freelist_pgno, slot.freelist_len, slot.commit_pages, slot.commit_crc)
    return body + SLOT_CRC.pack(zlib.crc32(body))


def slot_fields(buf, offset: int, body_struct=SLOT) -> tuple | None:
    """The fields of a slot at `offset` (body, then its crc32); None if the crc
    does not match or the slot is all zero (torn / empty / erased)."""
    body = bytes(buf[offset:offset + body_struct.size])
    (crc,) = SLOT_CRC.unpack_from(buf, offset + body_struct.size)
    if crc != zlib.crc32(body) or body == bytes(body_struct.size):
        return None
    return body_struct.unpack(body)


def decode_slot(buf, index: int) -> RootSlot | None:
    """Decode root slot `index`; None if its checksum does not match (torn/empty)."""
    fields = slot_fields(buf, SLOT_OFFSETS[index])
    return RootSlot(*fields) if fields else None


def slots_newest_first(head) -> list:
    """[(index, RootSlot)] of the slots whose crc matches, larger txnid first."""
    slots = [(i, decode_slot(head, i)) for i in (0, 1)]
    return sorted(((i, s) for i, s in slots if s is not None), key=lambda item: -item[1].txnid)


HEAD_BYTES = SLOT_OFFSETS[1] + SLOT_SIZE   # up to the end of slot 1


def read_stable_head(read_head) -> bytes:
    """The first HEAD_BYTES of page 0, read while a writer may be updating a slot.

    read_head() returns those bytes.  A writer only writes the slot that is not
    the current one, so a read is trusted once two consecutive reads are
    identical (a slot rewritten between them would differ); a slot caught
    half-written fails its crc and is simply not a candidate."""
    previous = bytes(read_head())
    while True:
        current = bytes(read_head())
        if current == previous:
            return current
        previous = current


def read_current_slot(read_head):
    """(index, RootSlot) of the newest slot whose crc matches, or None if neither does."""
    slots = slots_newest_first(read_stable_head(read_head))
    return slots[0] if slots else None


def commit_digest(page_crcs: dict) -> tuple:
    """(page count, crc over sorted (pgno, page crc) pairs) of one commit's pages."""
    crc = 0
    for pgno in sorted(page_crcs):
        crc = zlib.crc32(COMMIT_ENTRY.pack(pgno, page_crcs[pgno]), crc)
    return len(page_crcs), crc


def pages_digest(pages: dict) -> tuple:
    """commit_digest of {pgno: sealed page bytes}."""
    return commit_digest({pgno: U32.unpack_from(page, 4)[0] for pgno, page in pages.items()})


def page_crc(page) -> int:
    view = memoryview(page)
    return zlib.crc32(view[8:], zlib.crc32(view[:4]))


def seal_page(page: bytearray) -> bytes:
    """Fill in the crc of a fully built page."""
    U32.pack_into(page, 4, page_crc(page))
    return bytes(page)


def page_crc_ok(page) -> bool:
    return U32.unpack_from(page, 4)[0] == page_crc(page)


class Overflow:
    """A leaf value stored in a chain of pages starting at `pgno`."""

    __slots__ = ("pgno", "length")

    def __init__(self, pgno: int, length: int):
        self.pgno = pgno
        self.length = length

    def __eq__(self, other):
        return isinstance(other, Overflow) and (self.pgno, self.length) == (other.pgno, other.length)

    def __repr__(self):
        return f"Overflow({self.pgno}, {self.length})"


def leaf_entry_size(key: bytes, value) -> int:
    if type(value) is Overflow or len(value) > INLINE_VALUE_MAX:
        return 4 + len(key) + OVERFLOW_REF.size
    return 4 + len(key) + len(value)


def branch_entry_size(key: bytes) -> int:
    return 2 + len(key) + 8


BRANCH_BASE_SIZE = 8   # the leftmost child pointer
LEAF_HAS_OVERFLOW = 1  # page flag: some values are Overflow refs
LEAF_FIXED = 2         # page flag: all keys share one length, all values another
FIXED_HEAD = struct.Struct("<HH")   # key length, value length of a LEAF_FIXED page
FIXED_MIN_ENTRY = 8    # only entries of >= 8 bytes use the fixed layout (see fixed_dims)
OVERFLOW_BIT = 0x8000  # in a leaf's value end offset: that value is an Overflow ref
_BIG_ENDIAN = sys.byteorder == "big"


def _u16_array(values) -> bytes:
    values = list(values)
    return struct.pack("<%dH" % len(values), *values)


def _read_array(code: str, buf, pos: int, count: int) -> array:
    arr = array(code)
    arr.frombytes(buf[pos:pos + count * arr.itemsize])
    if _BIG_ENDIAN:
        arr.byteswap()
    return arr


def _seal_payload(ptype: int, flags: int, count: int, payload: bytes, txnid: int) -> bytes:
    if len(payload) > NODE_CAPACITY:
        raise AssertionError("node overflows its page")
    page = bytearray(PAGE_HEADER.pack(ptype, flags, count, 0, txnid) + payload)
    page.extend(bytes(PAGE_SIZE - len(page)))
    return seal_page(page)


def _split_blob(blob: bytes, ends) -> list:
    return [blob[a:b] for a, b in zip(chain((0,), ends), ends)]


def fixed_dims(keys, values):
    """(key length, value length) if every key has one length and every value
    (all bytes, none an Overflow ref) another, with key + value >= FIXED_MIN_ENTRY;
    else None.  Such a leaf is stored as LEAF_FIXED: no offset arrays, so it
    holds more entries and encodes/decodes with a join and a slice loop.  The
    size floor bounds how far a fixed leaf's variable-layout size can exceed a
    page (at most 1.5x), so a leaf that stops being uniform splits into at most
    three nodes (btree._split)."""
    if not keys:
        return None
    kl, vl = len(keys[0]), values[0]
    if type(vl) is Overflow:
        return None
    vl = len(vl)
    if kl + vl < FIXED_MIN_ENTRY or vl > INLINE_VALUE_MAX:
        return None
    klens = set(map(len, keys))
    if len(klens) != 1:
        return None
    try:
        vlens = set(map(len, values))
    except TypeError:                 # an Overflow ref
        return None
    if len(vlens) != 1:
        return None
    return kl, vl


def leaf_fixed_dims(buf, offset: int):
    """(key length, value length) of a LEAF_FIXED page at `offset`, else None."""
    if buf[offset + 1] & LEAF_FIXED and buf[offset] == TYPE_LEAF:
        return FIXED_HEAD.unpack_from(buf, offset + PAGE_HEADER_SIZE)
    return None


def encode_leaf(keys, values, txnid: int, may_overflow: bool = True, dims="scan") -> bytes:
    """Leaf payload: key end offsets u16[n], value end offsets u16[n] (bit 15 =
    Overflow ref), all keys, all values.  Values must be bytes <=
    INLINE_VALUE_MAX or Overflow refs (callers that know there are none pass
    may_overflow=False).  `dims` may pass what fixed_dims() would return
    (None = use the variable layout, which always fits when the entries do).  Built with C-level joins on purpose: commits
    re-encode every touched leaf."""
    if dims == "scan":
        dims = fixed_dims(keys, values)
    if dims is not None:
        payload = b"".join((FIXED_HEAD.pack(*dims), b"".join(keys), b"".join(values)))
        return _seal_payload(TYPE_LEAF, LEAF_FIXED, len(keys), payload, txnid)
    has_overflow = may_overflow and any(type(v) is Overflow for v in values)
    parts = ([OVERFLOW_REF.pack(v.pgno, v.length) if type(v) is Overflow else v for v in values]
             if has_overflow else values)
    value_ends = array("H", accumulate(map(len, parts)))
    if has_overflow:
        for i, value in enumerate(values):
            if type(value) is Overflow:
                value_ends[i] |= OVERFLOW_BIT
    payload = b"".join((_u16_array(accumulate(map(len, keys))), _u16_array(value_ends),
                        b"".join(keys), b"".join(parts)))
    return _seal_payload(TYPE_LEAF, LEAF_HAS_OVERFLOW if has_overflow else 0, len(keys), payload, txnid)


def encode_branch(keys, children, txnid: int) -> bytes:
    """Branch payload: children u64[n+1], key end offsets u16[n], all keys."""
    kids = array("Q", children)
    if _BIG_ENDIAN:
        kids.byteswap()
    payload = kids.tobytes() + _u16_array(accumulate(map(len, keys))) + b"".join(keys)
    return _seal_payload(TYPE_BRANCH, 0, len(keys), payload, txnid)


def decode_node(buf, offset: int):
    """Decode the node page at `offset` of `buf` -> (is_leaf, keys, values_or_children, size).

    size is the encoded payload length (what btree.node_size computes)."""
    ptype, flags, count, _crc, _txnid = PAGE_HEADER.unpack_from(buf, offset)
    pos = offset + PAGE_HEADER_SIZE
    if ptype == TYPE_LEAF and flags & LEAF_FIXED:
        kl, vl = FIXED_HEAD.unpack_from(buf, pos)
        keys_len, values_len = kl * count, vl * count
        if FIXED_HEAD.size + keys_len + values_len > NODE_CAPACITY or kl + vl < FIXED_MIN_ENTRY:
            raise ValueError("fixed leaf entries run past the page")
        pos += FIXED_HEAD.size
        blob = buf[pos:pos + keys_len]
        keys = [blob[i:i + kl] for i in range(0, keys_len, kl)] if kl else [b""] * count
        blob = buf[pos + keys_len:pos + keys_len + values_len]
        vals = [blob[i:i + vl] for i in range(0, values_len, vl)] if vl else [b""] * count
        # size stays the variable-layout size, which is what btree accounts in.
        return True, keys, vals, 4 * count + keys_len + values_len
    if ptype == TYPE_LEAF:
        key_ends = _read_array("H", buf, pos, count)
        value_ends = _read_array("H", buf, pos + 2 * count, count)
        if flags & LEAF_HAS_OVERFLOW:
            value_ends = array("H", (e & ~OVERFLOW_BIT for e in value_ends))
        keys_len = key_ends[-1] if count else 0
        values_len = value_ends[-1] if count else 0
        size = 4 * count + keys_len + values_len
        if size > NODE_CAPACITY:
            raise ValueError("leaf entries run past the page")
        pos += 4 * count
        keys = _split_blob(buf[pos:pos + keys_len], key_ends)
        vals = _split_blob(buf[pos + keys_len:pos + keys_len + values_len], value_ends)
        if flags & LEAF_HAS_OVERFLOW:
            flagged = _read_array("H", buf, offset + PAGE_HEADER_SIZE + 2 * count, count)
            for i, end in enumerate(flagged):
                if end & OVERFLOW_BIT:
                    vals[i] = Overflow(*OVERFLOW_REF.unpack(vals[i]))
        return True, keys, vals, size
    if ptype == TYPE_BRANCH:
        children = _read_array("Q", buf, pos, count + 1).tolist()
        key_ends = _read_array("H", buf, pos + 8 * (count + 1), count)
        keys_len = key_ends[-1] if count else 0
        size = 8 * (count + 1) + 2 * count + keys_len
        if size > NODE_CAPACITY:
            raise ValueError("branch entries run past the page")
        start = pos + 8 * (count + 1) + 2 * count
        return False, _split_blob(buf[start:start + keys_len], key_ends), children, size
    raise ValueError(f"page type {ptype} is not a tree node")


def page_type(buf, offset: int) -> int:
    return buf[offset]


def encode_chain_page(data: bytes, next_pgno: int, txnid: int) -> bytes:
    page = bytearray(PAGE_SIZE)
    PAGE_HEADER.pack_into(page, 0, TYPE_CHAIN, 0, 0, 0, txnid)
    CHAIN_HEAD.pack_into(page, PAGE_HEADER_SIZE, next_pgno, len(data))
    page[CHAIN_DATA_OFFSET:CHAIN_DATA_OFFSET + len(data)] = data
    return seal_page(page)


def chain_page_count(length: int) -> int:
    return max(1, -(-length // CHAIN_CAPACITY))


def encode_chain(data: bytes, pgnos, txnid: int):
    """Split `data` over the given pages; yields (pgno, page bytes)."""
    for i, pgno in enumerate(pgnos):
        chunk = data[i * CHAIN_CAPACITY:(i + 1) * CHAIN_CAPACITY]
        next_pgno = pgnos[i + 1] if i + 1 < len(pgnos) else 0
        yield pgno, encode_chain_page(chunk, next_pgno, txnid)


def decode_chain_page(buf, offset: int):
    """-> (next pgno, data bytes) of one chain page."""
    next_pgno, used = CHAIN_HEAD.unpack_from(buf, offset + PAGE_HEADER_SIZE)
    if used > CHAIN_CAPACITY:
        raise ValueError("chain page length out of range")
    start = offset + CHAIN_DATA_OFFSET
    return next_pgno, bytes(buf[start:start + used])
