"""The Store: what a transaction needs of an open database file, and nothing more.

Transactions (txn.py) read and commit through this seam only: the current root
slot (`meta`), a `view` of one commit's pages, that commit's `catalog`, the
`lock` file (writer lock and reader table), the shared node `cache`, and
`publish` (a commit's writes and its one fsync).  Database (db.py) opens and
validates the file, builds the Store and hands it to each transaction, so a
commit goes txn -> store and never back through Database.

Invariants:
- `meta()` returns a slot whose crc matched, retrying while a concurrent commit
  is writing the other slot; it is the newest commit readers may use.
- A catalog is cached per (txnid, catalog page, length): a commit's catalog
  never changes once written.
- `publish` writes only pages no snapshot of the current commit or later can
  reach, then the root slot not holding the current commit (the crash
  argument is on `publish`).
"""

import json
import time
from dataclasses import dataclass

from . import layout
from .errors import CorruptFileError, DatabaseClosedError, SchemaError
from .layout import RootSlot
from .mmapfile import PagedFile
from .pagestore import NodeCache, PageView
from .schema import schema_from_json

META_RETRIES = 10000


@dataclass
class Catalog:
    classes: dict
    tables: dict


class Store:
    def __init__(self, path: str, paged_file: PagedFile, durable: bool):
        self.path = path
        self.file = paged_file
        self.durable = durable
        self.lock = None                  # the LockFile, once the file is validated
        self.cache = NodeCache()
        self._catalogs = {}

    @property
    def closed(self) -> bool:
        return self.file is None or self.file.fd < 0

    def check_open(self):
        if self.closed:
            raise DatabaseClosedError(f"{self.path}: database is closed")

    def meta(self) -> RootSlot:
        """The current root slot; retries while a concurrent commit tears it."""
        self.check_open()
        mapping = self.file.remap(1)
        for attempt in range(META_RETRIES):
            current = layout.read_current_slot(lambda: mapping[:layout.HEAD_BYTES])
            if current is not None:
                return current[1]
            time.sleep(0.0001 if attempt > 10 else 0)
        raise CorruptFileError(f"{self.path}: current root slot is damaged")

    def view(self, slot: RootSlot) -> PageView:
        return PageView(self.file.remap(slot.npages), slot.npages, self.cache, self.path)

    def catalog(self, view: PageView, slot: RootSlot) -> Catalog:
        cached = self._catalogs.get(slot.txnid)
        if cached is not None and cached[0] == (slot.catalog_pgno, slot.catalog_len):
            return cached[1]
        try:
            doc = json.loads(view.read_blob(slot.catalog_pgno, slot.catalog_len).decode())
            catalog = Catalog(schema_from_json(doc["schema"].encode()), doc["tables"])
        except (ValueError, KeyError, TypeError, SchemaError) as exc:
            raise CorruptFileError(f"{self.path}: catalog is unreadable ({exc})") from None
        if len(self._catalogs) > 64:
            self._catalogs.clear()
        self._catalogs[slot.txnid] = ((slot.catalog_pgno, slot.catalog_len), catalog)
        return catalog

    def forget_cached_nodes(self):
        """After a failed commit: it cached flushed nodes under a txnid the next
        writer will reuse for different pages."""
        self.cache.clear()

    def publish(self, out: dict, slot: RootSlot):
        """Write the commit's pages and root slot, then fsync once.

        Crash argument.  Before this call the file holds commit C (the newest slot
        whose crc matches) and every page C reaches is on disk (C's own fsync
        returned).  This writes only (a) pages no snapshot of C or later can reach
        (taken from the free list up to C, or past C's npages), and (b) the slot
        sector that does not hold C.  So whatever subset of these writes a crash
        keeps, C's slot and tree are intact.
        - Process killed (the kernel keeps every write already made): either the
          slot write was made, after all pages, and the new commit is whole, or it
          was not (or is half made: its crc fails) and C is current.
        - Power lost / FUSE daemon killed before the fsync returned (any subset of
          the writes may be lost, a slot sector may be torn): if the new slot did
          not survive intact its crc fails and C is current; if it did but a page
          did not, opening the file sees that the pages do not reproduce the slot's
          commit digest (commitcheck), erases the slot and uses C.
        - After the fsync returns, every write is on disk: the commit is durable.
        So the fsync is the commit point, and it is the only one.  Readers in
        other processes may see the new slot as soon as it is written (all its
        pages were written before it); only a power loss can take back such a
        commit, and it then takes back nothing a durable commit promised.
        durability="none" skips the fsync (safe against process death only).
        """
        paged_file = self.file
        paged_file.ensure_size(slot.npages)
        paged_file.write_pages(out)
        current = layout.read_current_slot(lambda: paged_file.remap(1)[:layout.HEAD_BYTES])
        target = 1 - current[0] if current is not None else 0
        paged_file.write_at(layout.SLOT_OFFSETS[target], layout.encode_slot(slot))
        if self.durable:
            paged_file.sync()

    def close(self):
        if self.lock is not None:
            self.lock.close()
            self.lock = None
        if self.file is not None:
            self.file.close()
