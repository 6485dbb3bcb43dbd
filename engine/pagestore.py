"""Read access to committed pages of one snapshot, with a decoded-node cache.

A PageView is bound to a mapping that covers every page of its snapshot.  Nodes
are decoded once and cached process-wide per database, keyed by pgno and
validated by the txnid stored in the page header: committed pages are never
modified in place, and a reused page is rewritten by a later commit with a
larger txnid, so (pgno, txnid) identifies the content of every page reachable
from a commit.  (A commit that dies before its commit point may leave pages
carrying the txnid the next commit will reuse; such pages are unreachable and
never cached, and a commit that fails in-process clears the cache because it
already cached its flushed nodes.)  Each PageView also memoises the nodes it
has validated, since nothing reachable from its snapshot can change while the
snapshot lives.  Cached Node objects are shared and must never be mutated
(writers copy them).
"""

import struct

from .errors import CorruptFileError
from .layout import (PAGE_SIZE, Overflow, TXNID_OFFSET, TYPE_CHAIN, U64, decode_chain_page,
                     decode_node, leaf_fixed_dims, page_type)

CACHE_LIMIT = 16384          # decoded nodes kept per database (~64 MiB of pages)


class Node:
    """A B+tree node. Leaf: vals are values; branch: vals are children (len(keys)+1).

    `spill` is True when a leaf may hold values that are, or must become,
    chain blobs (Overflow refs / values over INLINE_VALUE_MAX); False lets
    commits skip scanning every value.

    `size` is the payload size in the variable (offset-array) leaf layout.
    `fixed` is (key length, value length) when the leaf is known to qualify for
    the LEAF_FIXED layout (layout.fixed_dims; exact when set, None may miss a
    uniform leaf); such a leaf may grow past NODE_CAPACITY in `size` as long as
    its fixed payload still fits a page, and is written in the fixed layout."""

    __slots__ = ("leaf", "keys", "vals", "size", "spill", "fixed")

    def __init__(self, leaf: bool, keys: list, vals: list, size: int, spill: bool, fixed=None):
        self.leaf = leaf
        self.keys = keys
        self.vals = vals
        self.size = size
        self.spill = spill
        self.fixed = fixed


class NodeCache:
    def __init__(self):
        self.nodes = {}

    def clear(self):
        self.nodes.clear()


class PageView:
    def __init__(self, mapping, npages: int, cache: NodeCache, path: str):
        self.map = mapping
        self.npages = npages
        self.cache = cache.nodes
        self.path = path
        # Nodes already validated for this snapshot: its pages cannot change
        # while it is alive, so they need no second txnid check.
        self.memo = {}

    def _check_pgno(self, pgno: int):
        if not 0 < pgno < self.npages:
            raise CorruptFileError(f"{self.path}: page reference {pgno} outside file of {self.npages} pages")

    def load(self, pgno: int) -> Node:
        node = self.memo.get(pgno)
        if node is not None:
            return node
        self._check_pgno(pgno)
        if len(self.memo) >= CACHE_LIMIT:
            self.memo.clear()
        offset = pgno * PAGE_SIZE
        cached = self.cache.get(pgno)
        if cached is not None and cached[0] == U64.unpack_from(self.map, offset + TXNID_OFFSET)[0]:
            self.memo[pgno] = cached[1]
            return cached[1]
        txnid = U64.unpack_from(self.map, offset + TXNID_OFFSET)[0]
        try:
            leaf, keys, vals, size = decode_node(self.map, offset)
        except (ValueError, IndexError, struct.error) as exc:
            raise CorruptFileError(f"{self.path}: page {pgno} is not a valid tree node ({exc})") from None
        spill = leaf and any(type(v) is Overflow for v in vals)
        node = Node(leaf, keys, vals, size, spill, leaf_fixed_dims(self.map, offset))
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
        self.cache[pgno] = (txnid, node)
        self.memo[pgno] = node
        return node

    def chain_pages(self, pgno: int) -> list:
        """Page numbers of the chain starting at pgno."""
        pages = []
        seen = set()
        while pgno:
            self._check_pgno(pgno)
            if pgno in seen or page_type(self.map, pgno * PAGE_SIZE) != TYPE_CHAIN:
                raise CorruptFileError(f"{self.path}: broken page chain at page {pgno}")
            seen.add(pgno)
            pages.append(pgno)
            pgno, _ = self._chain_page(pgno)
        return pages

    def _chain_page(self, pgno: int):
        try:
            return decode_chain_page(self.map, pgno * PAGE_SIZE)
        except ValueError as exc:
            raise CorruptFileError(f"{self.path}: chain page {pgno} is damaged ({exc})") from None

    def read_blob(self, pgno: int, length: int) -> bytes:
        parts = []
        total = 0
        while pgno and total < length:
            self._check_pgno(pgno)
            if page_type(self.map, pgno * PAGE_SIZE) != TYPE_CHAIN:
                raise CorruptFileError(f"{self.path}: page {pgno} is not a chain page")
            pgno, data = self._chain_page(pgno)
            parts.append(data)
            total += len(data)
        blob = b"".join(parts)
        if len(blob) != length:
            raise CorruptFileError(f"{self.path}: blob has {len(blob)} bytes, expected {length}")
        return blob
