"""Pure on-disk structures: the file header, root slots and page encodings.

File = whole 4096-byte pages. Page 0 is the header:

    0   magic          8 bytes  b"REALMENG"
    8   format version u32
    12  page size      u32
    16  header crc32   u32      over bytes 0..16
    32  selector       u8       0 or 1: which root slot is current
    64  root slot 0    64 bytes
    128 root slot 1    64 bytes

A root slot is (txnid u64, npages u64, catalog pgno u64, catalog length u32,
freelist pgno u64, freelist length u32, crc32 u32 over the preceding bytes).

Every other page starts with a 16-byte page header
(type u8, flags u8, count u16, crc32 u32, txnid u64).  The crc covers the whole
page except the crc field itself; txnid is the commit that wrote the page, so
(pgno, txnid) identifies page content forever (pages are copy-on-write and a
reused page is always rewritten by a later txn).  Node caches rely on that.

Page types: LEAF and BRANCH nodes of B+trees, CHAIN pages holding blobs
(overflow values, the catalog and the free list).  Nothing here does I/O.
"""

import struct
import zlib
from bisect import bisect_left
from dataclasses import dataclass

PAGE_SIZE = 4096
MAGIC = b"REALMENG"
FORMAT_VERSION = 1

HEADER = struct.Struct("<8sII")          # magic, version, page size
HEADER_CRC = struct.Struct("<I")
HEADER_CRC_OFFSET = 16
SELECTOR_OFFSET = 32
SLOT_OFFSETS = (64, 128)
SLOT = struct.Struct("<QQQIQI")          # txnid npages cat_pg cat_len fl_pg fl_len
SLOT_CRC = struct.Struct("<I")

PAGE_HEADER = struct.Struct("<BBHIQ")    # type flags count crc txnid
PAGE_HEADER_SIZE = PAGE_HEADER.size      # 16
TXNID_OFFSET = 8
NODE_CAPACITY = PAGE_SIZE - PAGE_HEADER_SIZE

TYPE_LEAF = 1
TYPE_BRANCH = 2
TYPE_CHAIN = 3

MAX_KEY_SIZE = 512
INLINE_VALUE_MAX = 1024                  # larger leaf values go to chain pages
OVERFLOW_FLAG = 0x80000000

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
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
                     slot.freelist_pgno, slot.freelist_len)
    return body + SLOT_CRC.pack(zlib.crc32(body))


def decode_slot(buf, index: int) -> RootSlot | None:
    """Decode root slot `index`; None if its checksum does not match (torn/empty)."""
    offset = SLOT_OFFSETS[index]
    body = bytes(buf[offset:offset + SLOT.size])
    (crc,) = SLOT_CRC.unpack_from(buf, offset + SLOT.size)
    if crc != zlib.crc32(body) or body == bytes(SLOT.size):
        return None
    return RootSlot(*SLOT.unpack(body))


def read_selector(buf) -> int:
    return buf[SELECTOR_OFFSET] & 1


def page_crc(page) -> int:
    return zlib.crc32(bytes(page[8:]), zlib.crc32(bytes(page[:4])))


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
    if isinstance(value, Overflow) or len(value) > INLINE_VALUE_MAX:
        return 2 + len(key) + 4 + OVERFLOW_REF.size
    return 2 + len(key) + 4 + len(value)


def branch_entry_size(key: bytes) -> int:
    return 2 + len(key) + 8


BRANCH_BASE_SIZE = 8   # the leftmost child pointer


def encode_leaf(keys, values, txnid: int) -> bytes:
    """Values must already be bytes (<= INLINE_VALUE_MAX) or Overflow refs."""
    page = bytearray(PAGE_SIZE)
    PAGE_HEADER.pack_into(page, 0, TYPE_LEAF, 0, len(keys), 0, txnid)
    pos = PAGE_HEADER_SIZE
    for key, value in zip(keys, values):
        U16.pack_into(page, pos, len(key))
        pos += 2
        page[pos:pos + len(key)] = key
        pos += len(key)
        if isinstance(value, Overflow):
            U32.pack_into(page, pos, OVERFLOW_FLAG)
            OVERFLOW_REF.pack_into(page, pos + 4, value.pgno, value.length)
            pos += 4 + OVERFLOW_REF.size
        else:
            U32.pack_into(page, pos, len(value))
            pos += 4
            page[pos:pos + len(value)] = value
            pos += len(value)
    if pos > PAGE_SIZE:
        raise AssertionError("leaf overflows its page")
    return seal_page(page)


def encode_branch(keys, children, txnid: int) -> bytes:
    page = bytearray(PAGE_SIZE)
    PAGE_HEADER.pack_into(page, 0, TYPE_BRANCH, 0, len(keys), 0, txnid)
    U64.pack_into(page, PAGE_HEADER_SIZE, children[0])
    pos = PAGE_HEADER_SIZE + 8
    for key, child in zip(keys, children[1:]):
        U16.pack_into(page, pos, len(key))
        pos += 2
        page[pos:pos + len(key)] = key
        pos += len(key)
        U64.pack_into(page, pos, child)
        pos += 8
    if pos > PAGE_SIZE:
        raise AssertionError("branch overflows its page")
    return seal_page(page)


def decode_node(buf, offset: int):
    """Decode the node page at `offset` of `buf` -> (is_leaf, keys, values_or_children)."""
    ptype, _flags, count, _crc, _txnid = PAGE_HEADER.unpack_from(buf, offset)
    pos = offset + PAGE_HEADER_SIZE
    keys = []
    vals = []
    u16, u32, u64 = U16.unpack_from, U32.unpack_from, U64.unpack_from
    if ptype == TYPE_LEAF:
        for _ in range(count):
            (klen,) = u16(buf, pos)
            pos += 2
            keys.append(buf[pos:pos + klen])
            pos += klen
            (vlen,) = u32(buf, pos)
            pos += 4
            if vlen & OVERFLOW_FLAG:
                vals.append(Overflow(*OVERFLOW_REF.unpack_from(buf, pos)))
                pos += OVERFLOW_REF.size
            else:
                vals.append(buf[pos:pos + vlen])
                pos += vlen
        return True, keys, vals
    if ptype == TYPE_BRANCH:
        vals.append(u64(buf, pos)[0])
        pos += 8
        for _ in range(count):
            (klen,) = u16(buf, pos)
            pos += 2
            keys.append(buf[pos:pos + klen])
            pos += klen
            vals.append(u64(buf, pos)[0])
            pos += 8
        return False, keys, vals
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


def find_index(keys, key) -> int:
    return bisect_left(keys, key)
