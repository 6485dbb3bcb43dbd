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
once (Store.publish has the crash argument).  Abort just drops the in-memory
nodes: the file is never touched before commit.

Transactions reach the file only through a store.Store (meta, view, catalog,
lock, cache, publish); they know nothing of Database.
"""


from .btree import write_blob
from .codec import INT64_MAX, INT64_MIN, KEY_U64
from .errors import QueryError, TransactionError, ValidationError
from .freelist import FreeList
from .layout import RootSlot, chain_page_count, encode_chain, pages_digest
from .objects import Obj, TableState
from .query import Results
from .schema import encode_catalog

_INT_KEY = KEY_U64.pack


class ObjectAccess:
    """Object-level API shared by snapshots and write transactions."""

    writable = False

    def get(self, class_name: str, key):
        """The object with this primary key (or id), or None."""
        table = self._tables.get(class_name)
        if table is None or self._done:
            table = self._table(class_name)
        if table.int_keys and type(key) is int and INT64_MIN <= key <= INT64_MAX:
            record = table.tree.get(_INT_KEY(key - INT64_MIN))     # point-read fast path
        else:
            try:
                object_key = table.object_key(key)
            except ValidationError as exc:      # a read: the key is a query argument
                raise QueryError(str(exc)) from None
            record = table.tree.get(object_key)
        if record is None:
            return None
        obj = Obj(zip(table.names, table.codec.decode(record, key)))
        obj.key = key
        return obj

    def objects(self, class_name: str):
        return Results(self, self._table(class_name))

    def count(self, class_name: str) -> int:
        return self._table(class_name).count

    def _writer(self, class_name: str) -> TableState:
        if not self.writable:
            raise TransactionError("writes need a write transaction (db.write())")
        return self._table(class_name)

    def create(self, class_name: str, values: dict):
        """Insert an object; returns its primary key value (or new object id)."""
        return self._writer(class_name).insert(values)

    def update(self, class_name: str, key, changes: dict):
        self._writer(class_name).modify(key, changes)

    def delete(self, class_name: str, key):
        self._writer(class_name).remove(key)


class _Txn(ObjectAccess):
    def __init__(self, store):
        self._store = store
        self._done = False

    def __enter__(self):
        return self

    @property
    def txnid(self) -> int:
        return self._meta.txnid

    def _check_open(self):
        if self._done:
            if self._store.closed:
                raise TransactionError(f"{self._store.path}: transaction ended: the database was closed")
            raise TransactionError("transaction already ended")

    def _open_view(self, meta):
        self._meta = meta
        self._view = self._store.view(meta)
        self._catalog = self._store.catalog(self._view, meta)
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

    def __init__(self, store):
        super().__init__(store)
        lock = store.lock
        self._slot = lock.claim_reader_slot()
        try:
            while True:
                meta = store.meta()
                lock.publish_reader_txnid(self._slot, meta.txnid)
                if store.meta().txnid == meta.txnid:
                    break
            self._open_view(meta)
        except BaseException:
            lock.release_reader_slot(self._slot)
            raise

    def close(self):
        if not self._done:
            self._done = True
            self._store.lock.release_reader_slot(self._slot)
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

    def __init__(self, store):
        super().__init__(store)
        store.lock.acquire_writer()
        try:
            meta = store.meta()
            self._open_view(meta)
            self._freelist = FreeList.decode(
                self._view.read_blob(meta.freelist_pgno, meta.freelist_len)
                if meta.freelist_pgno else b"")
            self._new_txnid = meta.txnid + 1
            self._dirty_catalog = False
        except BaseException:
            store.lock.release_writer()
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
            self._store.lock.release_writer()

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
                    self._store.forget_cached_nodes()
                    raise
                return self._new_txnid
            return self._meta.txnid
        finally:
            self._done = True
            self._tables = {}
            self._store.lock.release_writer()

    def _write_commit(self):
        store, meta, txnid, freelist = self._store, self._meta, self._new_txnid, self._freelist
        oldest = store.lock.oldest_reader_txnid()
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
        store.publish(out, slot)

