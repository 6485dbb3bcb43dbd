"""Opening, creating and validating a database file; the Database handle.

Invariants:
- A new file is built completely in a temporary file, fsynced, then linked
  into place, so no half-created database is ever visible under `path`.
- open() validates the file read-only (magic, size, header crc, version, root
  slots, the newest commit's pages, catalog, schema compatibility) before
  creating the lock file or writing anything; a failed open leaves the disk
  unchanged.
- The only writes are commits (Store.publish) and, after a successful
  validation, an additive schema migration or erasing the slot of a commit
  whose pages did not all reach the disk (see commitcheck).
"""

import errno
import os
import threading
import weakref

from . import layout, tools
from .errors import (CorruptFileError, EngineError, NotAnEngineFileError, TruncatedFileError,
                     UnsupportedVersionError)
from .layout import PAGE_SIZE, RootSlot
from .lockfile import LockFile
from .mmapfile import PagedFile, pwrite_all
from .schema import describe, encode_catalog, migrate, parse_schema
from .commitcheck import commit_is_whole
from .store import Store
from .txn import ReadTxn, WriteTxn

DURABILITY_MODES = ("full", "none")


def _validate_header(path: str, fd: int):
    """Check magic, size, header crc and version of an open file (read-only)."""
    size = os.fstat(fd).st_size
    page0 = os.pread(fd, PAGE_SIZE, 0)
    if len(page0) < len(layout.MAGIC) or page0[:len(layout.MAGIC)] != layout.MAGIC:
        raise NotAnEngineFileError(f"{path}: not an engine database (bad magic)")
    if size < PAGE_SIZE or size % PAGE_SIZE:
        raise TruncatedFileError(f"{path}: size {size} is not a whole number of {PAGE_SIZE}-byte pages")
    problem = layout.check_header(page0)
    if problem == "crc":
        raise CorruptFileError(f"{path}: header checksum mismatch")
    if problem == "version":
        version = layout.header_version(page0)
        if layout.OLDEST_UPGRADABLE_VERSION <= version < layout.FORMAT_VERSION:
            raise UnsupportedVersionError(
                f"{path}: format version {version} is older than this engine's ({layout.FORMAT_VERSION}); "
                f"convert it with: python -m engine upgrade {path} NEW_PATH")
        raise UnsupportedVersionError(
            f"{path}: format version {version} is not supported "
            f"(this engine reads version {layout.FORMAT_VERSION})")


def _choose_commit(path: str, paged_file: PagedFile):
    """-> (current RootSlot, index of a newer slot whose commit is not whole, or None).

    The newest slot with a good crc is current if every page of its commit is
    on disk (commitcheck); otherwise the commit was cut by a crash before its
    fsync returned and the other slot, whose pages were all synced first, is.
    The file size is taken after the slots: a writer grows the file before it
    writes a slot, and the file never shrinks."""
    head = layout.read_stable_head(lambda: paged_file.remap(1)[:layout.HEAD_BYTES])
    slots = layout.slots_newest_first(head)
    file_pages = paged_file.file_pages()
    mapping = paged_file.remap(file_pages)
    if not slots:
        raise CorruptFileError(f"{path}: both root slots are damaged")
    for rank, (_index, slot) in enumerate(slots):
        if slot.npages <= file_pages and commit_is_whole(mapping, file_pages, slot):
            return slot, (slots[0][0] if rank else None)
    newest = slots[0][1]
    if newest.npages > file_pages:
        raise TruncatedFileError(f"{path}: file has {file_pages} pages, header needs {newest.npages}")
    raise CorruptFileError(f"{path}: the pages of the last commit(s) are damaged (txn {newest.txnid})")


def _create_file(path: str, classes: dict):
    """Write an empty database to a temp file and link it into place atomically."""
    catalog = encode_catalog(classes, {})
    pgnos = list(range(1, 1 + layout.chain_page_count(len(catalog))))
    chain = dict(layout.encode_chain(catalog, pgnos, 1))
    slot = RootSlot(1, 1 + len(pgnos), pgnos[0], len(catalog), 0, 0, *layout.pages_digest(chain))
    header = bytearray(layout.encode_header())
    header[layout.SLOT_OFFSETS[0]:layout.SLOT_OFFSETS[0] + layout.SLOT_SIZE] = layout.encode_slot(slot)
    pages = [bytes(header)] + [chain[pgno] for pgno in pgnos]
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        pwrite_all(fd, b"".join(pages), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        _publish_new_file(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass                      # some filesystems (e.g. FUSE) cannot fsync a directory


def _publish_new_file(tmp: str, path: str):
    """Move a finished temp file to `path` without ever replacing an existing file."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return                    # another process created it first: open theirs
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK,
                             errno.EXDEV):
            raise
        # No hard links on this filesystem (or none between these two names: an encrypting
        # filesystem may store them differently): rename is still atomic; the window
        # in which a concurrent creator could be replaced is the exists() check.
        if not os.path.exists(path):
            os.rename(tmp, path)


class Database:
    """An open database file. Use read() for snapshots and write() to change it."""

    def __init__(self, path, schema=None, durability: str = "full"):
        if durability not in DURABILITY_MODES:
            raise EngineError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
        self.path = os.fspath(path)
        self.durable = durability == "full"
        self._snapshots = weakref.WeakSet()
        self._writers = weakref.WeakSet()
        wanted = parse_schema(schema) if schema is not None else None
        if not os.path.exists(self.path):
            if wanted is None:
                raise EngineError(f"{self.path}: no such database (pass a schema to create one)")
            _create_file(self.path, wanted)
        fd = os.open(self.path, os.O_RDWR)
        self._store = None
        try:
            _validate_header(self.path, fd)
            self._store = store = Store(self.path, PagedFile(self.path, fd), self.durable)
            fd = -1
            # No lock file: no process has the database open, and creating one
            # now would change the disk before the file is known to be good.
            store.lock = LockFile.existing(self.path)
            stored, broken = self._check_newest_commit()
            changed = migrate(stored.classes, wanted)[2] if wanted else False
            if store.lock is None:
                store.lock = LockFile(self.path)
                # Another process may have opened the file and committed since:
                # check what is newest now, this time pinned.
                stored, broken = self._check_newest_commit()
            if broken is not None:
                self._erase_cut_commit()
            if changed:
                self._migrate(wanted)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            self.close()
            raise

    def _check_newest_commit(self):
        """-> (catalog of the current commit, index of a newer slot whose commit is
        not whole, or None).  Holds a reader slot at txnid 0 ("pins every page")
        while it reads, when there is a lock file: a writer in another process
        may commit meanwhile and, without it, reuse the very pages being checked
        (pages freed by commit C are reusable from C + 1 on)."""
        store = self._store
        index = store.lock.claim_reader_slot() if store.lock is not None else None
        try:
            slot, broken = _choose_commit(self.path, store.file)
            return store.catalog(store.view(slot), slot), broken
        finally:
            if index is not None:
                store.lock.release_reader_slot(index)

    def _erase_cut_commit(self):
        """After a crash cut a commit short (its slot arrived, a page did not), zero
        that slot so no reader takes it; the next commit reuses the sector."""
        store = self._store
        store.lock.acquire_writer()
        try:
            _slot, broken = _choose_commit(self.path, store.file)
            if broken is not None:           # still so, now that no writer can be mid-commit
                store.file.write_at(layout.SLOT_OFFSETS[broken], bytes(layout.SLOT_SIZE))
                store.file.sync()
        finally:
            store.lock.release_writer()

    def _migrate(self, wanted: dict):
        with self.write() as tx:
            merged, new_indexes, changed = migrate(tx.classes, wanted)
            if not changed:
                return
            tx.classes = merged
            tx.mark_catalog_dirty()
            for class_name, prop in new_indexes:
                table = tx._table(class_name)
                table.add_index(prop, tx._view, tx)

    # -- public API ----------------------------------------------------------------

    @property
    def schema(self) -> dict:
        with self.read() as snapshot:       # one commit, its pages held while read
            return describe(snapshot.classes)

    def read(self) -> ReadTxn:
        """A consistent snapshot of the latest commit (use as a context manager)."""
        self._store.check_open()
        snapshot = ReadTxn(self._store)
        self._snapshots.add(snapshot)
        return snapshot

    def write(self) -> WriteTxn:
        """The write transaction; blocks while another process/thread writes."""
        self._store.check_open()
        txn = WriteTxn(self._store)
        self._writers.add(txn)
        return txn

    def stats(self) -> dict:
        readers = self._store.lock.live_readers()   # before stats' own snapshot registers
        return tools.stats(self, readers)

    def verify(self) -> list:
        """[] when every invariant holds, else one line per problem found."""
        return tools.verify(self)

    def write_copy_to(self, path):
        """Write a compacted copy of the latest commit to a new file at `path`."""
        tools.write_copy_to(self, os.fspath(path), Database)

    def close(self):
        """Close the handle; snapshots still open are ended (their reader slots freed) and
        an open write transaction is aborted (else the write lock would stay taken)."""
        for snapshot in list(getattr(self, "_snapshots", ())):
            snapshot.close()
        for writer in list(getattr(self, "_writers", ())):
            writer.abort()
        if self._store is not None:
            self._store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_database(path, schema=None, durability: str = "full") -> Database:
    return Database(path, schema, durability)
