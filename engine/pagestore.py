"""Read access to committed pages of one snapshot, with a decoded-node cache.

A PageView is bound to a mapping that covers every page of its snapshot.  Nodes
are decoded once and cached process-wide per database, keyed by pgno and
validated by the txnid stored in the page header: committed pages are never
modified in place, and a reused page is rewritten by a later commit with a
larger txnid, so (pgno, txnid) always identifies the same content.
Cached Node objects are shared and must never be mutated (writers copy them).
"""

from .errors import CorruptFileError
from .layout import (PAGE_SIZE, TXNID_OFFSET, TYPE_CHAIN, U64, decode_chain_page,
                     decode_node, page_type)

CACHE_LIMIT = 20000


class Node:
    """A B+tree node. Leaf: vals are values; branch: vals are children (len(keys)+1)."""

    __slots__ = ("leaf", "keys", "vals", "size", "dirty")

    def __init__(self, leaf: bool, keys: list, vals: list, size: int, dirty: bool):
        self.leaf = leaf
        self.keys = keys
        self.vals = vals
        self.size = size
        self.dirty = dirty


class NodeCache:
    def __init__(self):
        self.nodes = {}

    def clear(self):
        self.nodes.clear()


class PageView:
    def __init__(self, mapping, npages: int, cache: NodeCache, path: str, size_of):
        self.map = mapping
        self.npages = npages
        self.cache = cache.nodes
        self.path = path
        self._size_of = size_of   # computes a node's encoded size (btree knows how)

    def _check_pgno(self, pgno: int):
        if not 0 < pgno < self.npages:
            raise CorruptFileError(f"{self.path}: page reference {pgno} outside file of {self.npages} pages")

    def load(self, pgno: int) -> Node:
        offset = pgno * PAGE_SIZE
        cached = self.cache.get(pgno)
        if cached is not None:
            try:
                txnid = U64.unpack_from(self.map, offset + TXNID_OFFSET)[0]
            except Exception:
                txnid = None
            if cached[0] == txnid:
                return cached[1]
        self._check_pgno(pgno)
        txnid = U64.unpack_from(self.map, offset + TXNID_OFFSET)[0]
        try:
            leaf, keys, vals = decode_node(self.map, offset)
        except (ValueError, IndexError) as exc:
            raise CorruptFileError(f"{self.path}: page {pgno} is not a valid tree node ({exc})") from None
        node = Node(leaf, keys, vals, 0, False)
        node.size = self._size_of(node)
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
        self.cache[pgno] = (txnid, node)
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
            pgno, _ = decode_chain_page(self.map, pgno * PAGE_SIZE)
        return pages

    def read_blob(self, pgno: int, length: int) -> bytes:
        parts = []
        total = 0
        while pgno and total < length:
            self._check_pgno(pgno)
            if page_type(self.map, pgno * PAGE_SIZE) != TYPE_CHAIN:
                raise CorruptFileError(f"{self.path}: page {pgno} is not a chain page")
            pgno, data = decode_chain_page(self.map, pgno * PAGE_SIZE)
            parts.append(data)
            total += len(data)
        blob = b"".join(parts)
        if len(blob) != length:
            raise CorruptFileError(f"{self.path}: blob has {len(blob)} bytes, expected {length}")
        return blob
