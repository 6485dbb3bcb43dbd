"""Maintenance: stats, verify, dump, compaction (write_copy_to) and upgrade.

verify() checks, on one consistent snapshot:
- header magic/version/crc and the selected root slot's crc;
- every tree page: crc, type, sorted keys within the parent's separator bounds,
  equal leaf depth, no empty non-root node, overflow chains intact;
- page accounting: every page below npages is exactly one of header, tree,
  chain (catalog / free list / overflow) or free; nothing is referenced twice;
- objects: records decode, the catalog count matches, primary keys match their
  record, and each index holds exactly one entry per object.
It returns a list of one-line problem descriptions ([] = clean).
"""

import os

from . import layout
from .commitcheck import commit_is_whole
from .errors import CorruptFileError, EngineError
from .freelist import FreeList
from .layout import PAGE_SIZE
from .legacy import OldFile
from .schema import describe


class _Walker:
    def __init__(self, view, problems):
        self.view = view
        self.problems = problems
        self.owner = {}

    def mark(self, pgno: int, what: str) -> bool:
        if not 0 < pgno < self.view.npages:
            self.problems.append(f"{what}: page {pgno} is outside the file ({self.view.npages} pages)")
            return False
        if pgno in self.owner:
            self.problems.append(f"page {pgno} used twice ({self.owner[pgno]} and {what})")
            return False
        self.owner[pgno] = what
        page = self.view.map[pgno * PAGE_SIZE:(pgno + 1) * PAGE_SIZE]
        if not layout.page_crc_ok(page):
            self.problems.append(f"{what}: page {pgno} checksum mismatch")
            return False
        return True

    def chain(self, pgno: int, what: str):
        try:
            pages = self.view.chain_pages(pgno)
        except CorruptFileError as exc:
            self.problems.append(f"{what}: {exc}")
            return
        for p in pages:
            self.mark(p, what)

    def tree(self, root: int, what: str):
        """Structural walk; returns False if the tree is damaged."""
        if not root:
            return True
        before = len(self.problems)
        depths = set()
        self._node(root, None, None, 0, depths, what, is_root=True)
        if len(depths) > 1:
            self.problems.append(f"{what}: leaves at different depths {sorted(depths)}")
        return len(self.problems) == before

    def _node(self, pgno, low, high, depth, depths, what, is_root=False):
        if not self.mark(pgno, what):
            return
        try:
            node = self.view.load(pgno)
        except CorruptFileError as exc:
            self.problems.append(f"{what}: {exc}")
            return
        keys = node.keys
        if any(a >= b for a, b in zip(keys, keys[1:])):
            self.problems.append(f"{what}: keys not strictly ascending in page {pgno}")
        if keys and ((low is not None and keys[0] < low) or (high is not None and keys[-1] >= high)):
            self.problems.append(f"{what}: page {pgno} has keys outside its parent's bounds")
        if node.leaf:
            depths.add(depth)
            if not keys and not is_root:
                self.problems.append(f"{what}: empty leaf page {pgno}")
            for value in node.vals:
                if isinstance(value, layout.Overflow):
                    self.chain(value.pgno, what + " overflow")
            return
        if not node.vals:
            self.problems.append(f"{what}: branch page {pgno} has no children")
        bounds = [low] + list(keys) + [high]
        for i, child in enumerate(node.vals):
            self._node(child, bounds[i], bounds[i + 1], depth + 1, depths, what)


def _check_objects(snap, name, table_entry, problems):
    table = snap._table(name)
    count = 0
    expected_index = {p: set() for p in table.indexes}
    for key, record in table.tree.items():
        count += 1
        try:
            values = table.decode(key, record)
        except Exception as exc:  # any decoding failure is a corruption report
            problems.append(f"{name}: object {key.hex()} does not decode ({exc})")
            continue
        if table.pk_prop is not None and table.object_key(values[table.pk_pos]) != key:
            problems.append(f"{name}: object {key.hex()} stored under the wrong primary key")
        for prop, index_key in table.index_entries(key, values):
            expected_index[prop].add(index_key)
    if count != table_entry.get("count", 0):
        problems.append(f"{name}: catalog count {table_entry.get('count')} but {count} objects")
    for prop, tree in table.indexes.items():
        actual = {}
        for index_key, stored in tree.items():
            actual[index_key] = stored
            if stored:
                problems.append(f"{name}.{prop}: index entry stores a value (object keys end the index key)")
        if set(actual) != expected_index[prop]:
            missing = len(expected_index[prop] - set(actual))
            extra = len(set(actual) - expected_index[prop])
            problems.append(f"{name}.{prop}: index has {extra} stale and {missing} missing entries")


def verify(db) -> list:
    problems = []
    with db.read() as snap:
        view, meta = snap._view, snap._meta
        page0 = view.map[:PAGE_SIZE]
        if layout.check_header(page0):
            problems.append(f"header: {layout.check_header(page0)} check failed")
        if not commit_is_whole(view.map, view.npages, meta):
            problems.append(f"header: the pages of commit {meta.txnid} do not match its root slot's digest")
        walker = _Walker(view, problems)
        walker.chain(meta.catalog_pgno, "catalog")
        free = {}
        if meta.freelist_pgno:
            walker.chain(meta.freelist_pgno, "free list")
            try:
                free = FreeList.decode(view.read_blob(meta.freelist_pgno, meta.freelist_len)).pages
            except (CorruptFileError, ValueError) as exc:      # reported, not raised
                problems.append(f"free list: unreadable ({exc})")
        for pgno, freed_at in free.items():
            if not 0 < pgno < meta.npages:
                problems.append(f"free list: page {pgno} outside the file")
            if freed_at > meta.txnid:
                problems.append(f"free list: page {pgno} freed by future txn {freed_at}")
        intact = True
        for name, entry in sorted(snap._catalog.tables.items()):
            intact &= walker.tree(entry["root"], f"{name} objects")
            for prop, root in sorted(entry["indexes"].items()):
                intact &= walker.tree(root, f"{name}.{prop} index")
        for pgno in sorted(set(walker.owner) & set(free)):
            problems.append(f"page {pgno} is both in use ({walker.owner[pgno]}) and free")
        leaked = set(range(1, meta.npages)) - set(walker.owner) - set(free)
        if leaked:
            problems.append(f"{len(leaked)} pages neither used nor free (first: {min(leaked)})")
        if intact:
            for name, entry in sorted(snap._catalog.tables.items()):
                _check_objects(snap, name, entry, problems)
    return problems


def stats(db, readers: list) -> dict:
    """`readers`: the live (pid, txnid) reader slots, taken before this snapshot."""
    problems = []
    with db.read() as snap:
        view, meta = snap._view, snap._meta
        walker = _Walker(view, problems)
        for entry in snap._catalog.tables.values():
            walker.tree(entry["root"], "objects")
            for root in entry["indexes"].values():
                walker.tree(root, "index")
        free = (FreeList.decode(view.read_blob(meta.freelist_pgno, meta.freelist_len))
                if meta.freelist_pgno else FreeList())
        return {
            "path": db.path,
            "file_size": os.path.getsize(db.path),
            "page_size": PAGE_SIZE,
            "pages_total": os.path.getsize(db.path) // PAGE_SIZE,
            "pages_allocated": meta.npages,
            "pages_in_trees": len(walker.owner),
            "pages_free": len(free),
            "pages_free_reusable_now": free.reusable_count(min([meta.txnid] + [t for _, t in readers])),
            "version": meta.txnid,
            "pages_written_by_last_commit": meta.commit_pages,   # from its commit digest
            "live_snapshots": len(readers),
            "oldest_snapshot": min((t for _, t in readers), default=None),
            "objects": {name: snap.count(name) for name in sorted(snap.classes)},
        }


def dump(db, class_name: str):
    """Yield every object of a class as a dict (with its key under '_key')."""
    with db.read() as snap:
        for obj in snap.objects(class_name):
            yield {"_key": obj.key, **obj}


def _write_new_file(path: str, classes: dict, fill, database_class):
    """Build a database at `path` (which must not exist) through a temp file:
    fill(table name, TableState) stores each class's objects, one commit per
    class (each fsynced: a handful), then the rename makes it whole.
    `database_class` is db.Database (passed in: db imports this module)."""
    if os.path.exists(path):
        raise EngineError(f"{path}: already exists; it is never overwritten")
    tmp = f"{path}.copying-{os.getpid()}"
    target = database_class(tmp, describe(classes))
    try:
        for name in classes:
            with target.write() as tx:
                table = tx._table(name)
                fill(name, table)
                table.dirty = True
    finally:
        target.close()
    os.rename(tmp, path)
    os.unlink(tmp + ".lock")


def write_copy_to(db, path: str, database_class):
    """Copy the latest commit into a new, compact file (fails if `path` exists)."""
    with db.read() as snap:
        def fill(name, table):
            source = snap._table(name)
            for key, value in source.tree.items():
                table.tree.put(key, value)
            for prop, tree in source.indexes.items():
                for key, value in tree.items():
                    table.indexes[prop].put(key, value)
            table.count, table.next_id = source.count, source.next_id
        _write_new_file(path, snap.classes, fill, database_class)


def upgrade(source: str, path: str, database_class):
    """Write the objects of an older-format file `source` into a new file at `path`."""
    old = OldFile(source)
    try:
        def fill(name, table):
            for key, values in old.objects(name):
                table.restore(key, values)
            table.next_id = old.next_id(name)
        _write_new_file(path, old.classes, fill, database_class)
    finally:
        old.close()
