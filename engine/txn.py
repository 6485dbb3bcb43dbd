"""Read snapshots and write transactions.

ReadTxn: registers in the reader table (txnid 0 first, then the txnid it is
about to read, then re-reads the header; if a commit slipped in between it
retries), so the writer never recycles a page the snapshot can reach.  Why:
the writer building commit C+1 on C reads the table once (at t_w, after C was
published) and reuses only pages freed at <= min(C, every txnid it saw).  A
snapshot of R reaches only pages freed after R.  If the writer saw the
reader's slot holding R (or 0), R bounds what it reuses.  If not, the reader
published R after t_w and re-read the header later still, when C was already
current: so R == C (and C bounds the reuse) or R < C and the reader retries.
This needs a slot in use never to look free or change owner (lockfile.py).
Opening a database checks its newest commit under such a slot too (txnid 0).

WriteTxn: holds the cross-process writer lock from begin to commit/abort.  All
changes are copy-on-write nodes in memory; commit allocates pages (reused ones
only when freed at txnid <= min(oldest live reader, current), so no page of the
current commit is touched), pwrites them and the other root slot, then fsyncs
once (publish_commit has the crash argument).  Abort just drops the in-memory
nodes: the file is never touched before commit.
"""


from .btree import write_blob
from .errors import TransactionError
from .freelist import FreeList
from .layout import (SLOT_OFFSETS, RootSlot, chain_page_count, encode_chain, encode_slot,
                     pages_digest, read_current_slot, HEAD_BYTES)
from .objects import TableState, ObjectAccess
from .schema import encode_catalog


class _Txn(ObjectAccess):
    def __init__(self, db):
        self._db = db
        self._done = False

    def __enter__(self):
        return self

    @property
    def txnid(self) -> int:
        return self._meta.txnid

    def _check_open(self):
        if self._done:
            if self._db._file is None or self._db._file.fd < 0:
                raise TransactionError(f"{self._db.path}: transaction ended: the database was closed")
            raise TransactionError("transaction already ended")

    def _open_view(self, meta):
        self._meta = meta
        self._view = self._db._view(meta)
        self._catalog = self._db._catalog(self._view, meta)
        self.classes = self._catalog.classes
        self._tables = {}

    def _table(self, name: str) -> TableState:
        self._check_open()
        table = self._tables.get(name)
        if table is None:
            table = TableState.from_catalog(self.classes, self._catalog.tables, name,
                                            self._view, self._write_context())
            self._tables[name] = table
        return table

    def _write_context(self):
        return None


class ReadTxn(_Txn):
    """A consistent snapshot of the last commit at the time it was opened."""

    def __init__(self, db):
        super().__init__(db)
        lock = db._lock
        self._slot = lock.claim_reader_slot()
        try:
            while True:
                meta = db._read_meta()
                lock.publish_reader_txnid(self._slot, meta.txnid)
                if db._read_meta().txnid == meta.txnid:
                    break
            self._open_view(meta)
        except BaseException:
            lock.release_reader_slot(self._slot)
            raise

    def close(self):
        if not self._done:
            self._done = True
            self._db._lock.release_reader_slot(self._slot)
            self._tables = {}

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class WriteTxn(_Txn):
    """The single writer. Commits on clean `with` exit, aborts on exception."""

    writable = True

    def __init__(self, db):
        super().__init__(db)
        db._lock.acquire_writer()
        try:
            meta = db._read_meta()
            self._open_view(meta)
            self._freelist = FreeList.decode(
                self._view.read_blob(meta.freelist_pgno, meta.freelist_len)
                if meta.freelist_pgno else b"")
            self._new_txnid = meta.txnid + 1
            self._dirty_catalog = False
        except BaseException:
            db._lock.release_writer()
            raise

    def _write_context(self):
        return self

    # -- called by trees while copying-on-write -------------------------------

    def free_page(self, pgno: int):
        self._freelist.free(pgno, self._new_txnid)

    def free_blob(self, overflow):
        for pgno in self._view.chain_pages(overflow.pgno):
            self.free_page(pgno)

    def mark_catalog_dirty(self):
        self._dirty_catalog = True

    # -- end -----------------------------------------------------------------

    def __exit__(self, exc_type, exc, tb):
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def abort(self):
        if not self._done:
            self._done = True
            self._tables = {}
            self._db._lock.release_writer()

    def commit(self) -> int:
        """Make the transaction durable and visible; returns the new txnid."""
        self._check_open()
        try:
            if self._dirty_catalog or any(t.dirty for t in self._tables.values()):
                try:
                    self._write_commit()
                except BaseException:
                    # Flushed nodes were cached under this txnid, which the next
                    # writer will reuse for different pages.
                    self._db._cache.clear()
                    raise
                return self._new_txnid
            return self._meta.txnid
        finally:
            self._done = True
            self._tables = {}
            self._db._lock.release_writer()

    def _write_commit(self):
        db, meta, txnid, freelist = self._db, self._meta, self._new_txnid, self._freelist
        oldest = db._lock.oldest_reader_txnid()
        # Pages freed at V are part of snapshots older than V only.  The current
        # commit (meta) must survive this one's failure, and its slot is the one
        # not overwritten (each slot has its own sector, so writing one cannot
        # tear the other): pages freed at <= meta.txnid are free to reuse.
        limit = meta.txnid if oldest is None else min(meta.txnid, oldest)
        freelist.prepare(limit)
        npages = meta.npages

        def alloc():
            nonlocal npages
            pgno = freelist.take()
            if pgno is None:
                pgno, npages = npages, npages + 1
            return pgno

        out = {}
        tables = dict(self._catalog.tables)
        for name, table in self._tables.items():
            if table.dirty:
                tables[name] = table.flush(alloc, out, txnid)
        for pgno in self._view.chain_pages(meta.catalog_pgno):
            self.free_page(pgno)
        catalog_blob = encode_catalog(self.classes, tables)
        catalog_ref = write_blob(catalog_blob, alloc, out, txnid)
        if meta.freelist_pgno:
            for pgno in self._view.chain_pages(meta.freelist_pgno):
                self.free_page(pgno)
        freelist_pages = []
        while True:
            data = freelist.encode()
            needed = chain_page_count(len(data)) if data else 0
            if len(freelist_pages) >= needed:
                break
            freelist_pages.append(alloc())
        out.update(encode_chain(data, freelist_pages, txnid))
        slot = RootSlot(txnid, npages, catalog_ref.pgno, catalog_ref.length,
                        freelist_pages[0] if freelist_pages else 0, len(data), *pages_digest(out))
        db._publish(out, slot)


def publish_commit(paged_file, out: dict, slot: RootSlot, durable: bool):
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
    paged_file.ensure_size(slot.npages)
    paged_file.write_pages(out)
    current = read_current_slot(lambda: paged_file.remap(1)[:HEAD_BYTES])
    target = 1 - current[0] if current is not None else 0
    paged_file.write_at(SLOT_OFFSETS[target], encode_slot(slot))
    if durable:
        paged_file.sync()
