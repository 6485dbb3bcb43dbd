"""Is every page of a commit on disk?  The check that lets a commit use one fsync.

A commit pwrites its new pages and its root slot, then fsyncs once
(Store.publish).  Until that fsync returns, a power loss (or, on a FUSE
mount, a killed daemon) may keep any subset of those writes: the slot without
some pages, some pages without the slot, a sector of the slot torn.  The slot
therefore carries the commit digest (layout.commit_digest: how many pages the
commit wrote and a crc over their (pgno, page crc) pairs), and opening a file
accepts the newest slot only if the pages now on disk reproduce it.

Finding the pages without a list of them: a page's header holds the txnid of
the commit that wrote it, pages are copy-on-write, and a page is only ever
pointed to by pages written at the same commit or later.  So the pages commit
T wrote are exactly the pages with txnid T reachable from slot T through pages
with txnid T: its catalog and free-list chains (rewritten by every commit),
the tree nodes it rewrote, and the overflow chains those leaves point to.
A page whose write was lost still holds older content: a smaller txnid (it is
not counted, so the count differs), a torn mix (its crc fails), or content of
an earlier attempt at the same txnid that was itself lost (its crc differs, so
the digest differs).  A page beyond the end of the file (a lost ftruncate) is
missing too.  Any of these makes commit_is_whole() False.

Nothing here writes.
"""

import json

from .layout import (PAGE_SIZE, TXNID_OFFSET, TYPE_BRANCH, TYPE_CHAIN, TYPE_LEAF, U32, U64, Overflow,
                     RootSlot, commit_digest, decode_chain_page, decode_node, page_crc_ok)


class _Walk:
    def __init__(self, buf, file_pages: int, slot: RootSlot):
        self.buf = buf
        self.limit = min(file_pages, slot.npages)
        self.txnid = slot.txnid
        self.crcs = {}                 # pgno -> page crc of the pages this commit wrote

    def take(self, pgno: int, page_type: int):
        """The page's offset if commit `txnid` wrote it intact with this type, else None."""
        if not 0 < pgno < self.limit or pgno in self.crcs:
            return None
        offset = pgno * PAGE_SIZE
        page = self.buf[offset:offset + PAGE_SIZE]
        if (U64.unpack_from(page, TXNID_OFFSET)[0] != self.txnid or page[0] != page_type
                or not page_crc_ok(page)):
            return None
        self.crcs[pgno] = U32.unpack_from(page, 4)[0]
        return offset

    def chain(self, pgno: int) -> bytes | None:
        """The blob of a chain written by this commit, or None if it is not (all) there."""
        parts = []
        while pgno:
            offset = self.take(pgno, TYPE_CHAIN)
            if offset is None:
                return None
            try:
                pgno, data = decode_chain_page(self.buf, offset)
            except ValueError:
                return None
            parts.append(data)
        return b"".join(parts)

    def tree(self, pgno: int):
        stack = [pgno]
        while stack:
            pgno = stack.pop()
            offset = self.take(pgno, self.buf[pgno * PAGE_SIZE] if 0 < pgno < self.limit else 0)
            if offset is None or self.buf[offset] not in (TYPE_LEAF, TYPE_BRANCH):
                continue
            try:
                leaf, _keys, vals, _size = decode_node(self.buf, offset)
            except (ValueError, IndexError):
                continue
            if not leaf:
                stack.extend(vals)
                continue
            for value in vals:
                if type(value) is Overflow:
                    self.chain(value.pgno)


def commit_is_whole(buf, file_pages: int, slot: RootSlot) -> bool:
    """Whether the pages in `buf` (the file's bytes, e.g. its mapping) hold every
    page commit `slot` wrote, exactly as written."""
    walk = _Walk(buf, file_pages, slot)
    catalog = walk.chain(slot.catalog_pgno)
    if catalog is None or len(catalog) != slot.catalog_len:
        return False
    if slot.freelist_pgno and walk.chain(slot.freelist_pgno) is None:
        return False
    try:
        tables = json.loads(catalog.decode())["tables"]
        roots = [root for entry in tables.values()
                 for root in [entry["root"], *entry["indexes"].values()]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    for root in roots:
        if root:
            walk.tree(root)
    return commit_digest(walk.crcs) == (slot.commit_pages, slot.commit_crc)
