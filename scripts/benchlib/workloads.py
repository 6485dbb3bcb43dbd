"""The workloads: each ``fn(ctx)`` runs once in ``ctx.dir`` and returns its measurements.

A measurement is ``(metric, seconds, amount, unit)`` with unit "B" (bytes moved,
for MB/s) or "op" (operations, for us/op). Only the operations themselves are
timed; making input files, evicting and cleaning up are not.

Invariants:
* cold means the kernel page cache holds none of the file's pages, at the
  mountpoint nor in the backing files: ``ctx.evict`` fsyncs, then
  ``posix_fadvise(DONTNEED)`` on exactly those files; the machine-wide cache is
  never dropped (other work shares it). A daemon's own user-space cache is not
  evicted: it is part of what is being measured.
* every file and connection a workload opens is closed before it returns, so
  repetitions and targets do not share state; random choices are seeded, so every
  target sees the same offsets and keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import mmap
import os
import random
import sqlite3
import time

MiB = 1 << 20
PAGE = 4096
# Warm passes are ~100x faster than cold ones: repeat them so that they last tens of
# milliseconds, well above timer and scheduling noise (a 5 ms cell swings +-50%).
WARM_RANDOM_REPEAT = 5
WARM_SEQ_BYTES = 1 << 30
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Sizes:
    file_mib: int = 512       # sequential file, also the random-read file
    rand_reads: int = 20_000  # 4 KiB preads per pass
    mmap_mib: int = 256
    mmap_ops: int = 32_768    # random 4 KiB page reads + writes (half each)
    db_rows: int = 100_000    # SQLite and LMDB rows written, then point reads
    db_batch: int = 1_000     # rows per transaction
    lmdb_gets: int = 100_000  # cheap everywhere: kept at full size so --quick times it above noise
    engine_commits: int = 1_000  # one object per fsync'ed transaction

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(file_mib=64, rand_reads=5_000, mmap_mib=64, mmap_ops=8_192, db_rows=10_000,
                   engine_commits=200)


class Ctx:
    """What a workload gets: its directory, its sizes, cache eviction, daemon accounting."""

    def __init__(self, directory, target, sizes: Sizes, monitor):
        self.dir = directory
        self.target = target
        self.sizes = sizes
        self.monitor = monitor
        self.daemon: dict[str, dict] = {}  # phase -> cpu_s, bytes, peak_rss
        self.notes: dict[str, int] = {}    # named RSS readings

    def evict(self, path: str) -> None:
        """Make ``path`` cold: its pages at the mountpoint and in every backing file."""
        _fsync_and_drop(path)
        for backing in self.target.backing_dirs:
            for folder, _, files in os.walk(backing):
                for name in files:
                    _fsync_and_drop(os.path.join(folder, name))

    @contextlib.contextmanager
    def phase(self, name: str, nbytes: int = 0):
        """Account the daemon's CPU seconds and peak RSS over the block."""
        if self.monitor is None:
            yield
            return
        self.monitor.reset_peak()
        cpu = self.monitor.cpu_seconds()
        yield
        self.daemon[name] = {"cpu_s": self.monitor.cpu_seconds() - cpu, "bytes": nbytes,
                             "peak_rss": self.monitor.peak()}

    def note_rss(self, name: str) -> None:
        if self.monitor is not None:
            self.notes[name] = self.monitor.rss_now()


def _fsync_and_drop(path: str) -> None:
    # DONTNEED only drops clean pages: write back first. A read-only fd can fsync on Linux.
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _write_file(path: str, size: int, on_progress=None) -> None:
    chunk = memoryview(os.urandom(MiB))  # content does not matter to a cipher; cost does
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(size // MiB):
            view = chunk
            while view:
                view = view[os.write(fd, view):]
            if on_progress:
                on_progress(i + 1)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_file(path: str) -> int:
    buf = bytearray(MiB)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _preads(fd: int, offsets: list) -> None:
    for offset in offsets:
        os.pread(fd, PAGE, offset)


def files(ctx: Ctx) -> list:
    """Sequential write + fsync, sequential reads cold and warm, random 4 KiB reads on that file."""
    size = ctx.sizes.file_mib * MiB
    path = os.path.join(ctx.dir, "seq.bin")
    early = max(1, ctx.sizes.file_mib // 8)

    def progress(mib):
        if mib == early:
            ctx.note_rss("write_early")

    with ctx.phase("write", size):
        write_s = _timed(_write_file, path, size, progress)
    ctx.note_rss("write_end")
    ctx.evict(path)
    with ctx.phase("read_cold", size):
        cold_s = _timed(_read_file, path)
    passes = max(1, WARM_SEQ_BYTES // size)
    warm_s = _timed(lambda: [_read_file(path) for _ in range(passes)])  # each a new open

    n = ctx.sizes.rand_reads
    offsets = [PAGE * p for p in random.Random(1).choices(range(size // PAGE), k=n)]
    warm = offsets * WARM_RANDOM_REPEAT
    ctx.evict(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        rand_cold = _timed(_preads, fd, offsets)
        rand_warm_fd = _timed(_preads, fd, warm)
    finally:
        os.close(fd)
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)  # reopened: a FUSE open may invalidate the cache
    try:
        _preads(fd, warm)
    finally:
        os.close(fd)
    rand_warm_reopen = time.perf_counter() - start
    return [("seq_write", write_s, size, "B"), ("seq_read_cold", cold_s, size, "B"),
            ("seq_read_warm", warm_s, size * passes, "B"), ("rand_read_cold", rand_cold, n, "op"),
            ("rand_read_warm_fd", rand_warm_fd, len(warm), "op"),
            ("rand_read_warm_reopen", rand_warm_reopen, len(warm), "op")]


def mmap_rw(ctx: Ctx) -> list:
    """MAP_SHARED file opened cold: random 4 KiB page reads and writes, then msync."""
    size = ctx.sizes.mmap_mib * MiB
    path = os.path.join(ctx.dir, "mmap.bin")
    _write_file(path, size)
    ctx.evict(path)
    pages = random.Random(2).choices(range(size // PAGE), k=ctx.sizes.mmap_ops)
    data = os.urandom(PAGE)
    with ctx.phase("mmap", len(pages) * PAGE):
        start = time.perf_counter()
        fd = os.open(path, os.O_RDWR)
        try:
            with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
                for i, page in enumerate(pages):
                    offset = page * PAGE
                    if i & 1:
                        m[offset:offset + PAGE] = data
                    else:
                        m[offset:offset + PAGE]  # a 4 KiB copy out: faults the page in
                m.flush()  # msync(MS_SYNC) of the whole mapping
        finally:
            os.close(fd)
        seconds = time.perf_counter() - start
    return [("mmap", seconds, len(pages), "op")]


def _rows(ctx: Ctx, seed: int):
    # Keys ascending, as an app appending records writes them (and as the reference figures
    # were measured); random key order would dirty most leaf pages in every transaction and
    # measure a 10x heavier, different workload. Lookups are random.
    rows = ctx.sizes.db_rows
    return list(range(rows)), random.Random(seed).choices(range(rows), k=rows)


def sqlite(ctx: Ctx) -> list:
    """Inserts in transactions of db_batch (default journal, synchronous=FULL), then point selects."""
    ids, lookups = _rows(ctx, 3)
    path = os.path.join(ctx.dir, "bench.sqlite")
    payload = os.urandom(100)
    batch = ctx.sizes.db_batch
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        with ctx.phase("sqlite_insert"):
            start = time.perf_counter()
            for first in range(0, len(ids), batch):
                con.execute("BEGIN")
                con.executemany("INSERT INTO t VALUES (?, ?)",
                                ((i, payload) for i in ids[first:first + batch]))
                con.execute("COMMIT")
            insert_s = time.perf_counter() - start
    finally:
        con.close()
    con = sqlite3.connect(path, isolation_level=None)  # a fresh connection, as a reader would
    try:
        with ctx.phase("sqlite_select"):
            start = time.perf_counter()
            for key in lookups:
                if con.execute("SELECT v FROM t WHERE id = ?", (key,)).fetchone() is None:
                    raise AssertionError(f"row {key} missing")
            select_s = time.perf_counter() - start
    finally:
        con.close()
    return [("sqlite_insert", insert_s, len(ids), "op"), ("sqlite_select", select_s, len(lookups), "op")]


def lmdb_kv(ctx: Ctx) -> list:
    """Puts in write transactions of db_batch (sync on commit), then random gets in one read txn."""
    import lmdb

    ids, _ = _rows(ctx, 4)
    lookups = random.Random(5).choices(range(len(ids)), k=ctx.sizes.lmdb_gets)
    path = os.path.join(ctx.dir, "lmdb")
    payload = os.urandom(100)
    batch = ctx.sizes.db_batch
    env = lmdb.open(path, map_size=1 << 30)
    try:
        with ctx.phase("lmdb_put"):
            start = time.perf_counter()
            for first in range(0, len(ids), batch):
                with env.begin(write=True) as txn:
                    for i in ids[first:first + batch]:
                        txn.put(b"%016d" % i, payload)
            put_s = time.perf_counter() - start
    finally:
        env.close()
    env = lmdb.open(path, map_size=1 << 30)
    try:
        with ctx.phase("lmdb_get"):
            start = time.perf_counter()
            with env.begin() as txn:
                for key in lookups:
                    if txn.get(b"%016d" % key) is None:
                        raise AssertionError(f"key {key} missing")
            get_s = time.perf_counter() - start
    finally:
        env.close()
    return [("lmdb_put", put_s, len(ids), "op"), ("lmdb_get", get_s, len(lookups), "op")]


def _load_bench_engine():
    """scripts/bench_engine.py as a module."""
    spec = importlib.util.spec_from_file_location("bench_engine", os.path.join(REPO, "scripts", "bench_engine.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _engine_own_workload(ctx: Ctx, module) -> list:
    """bench_engine.py's EngineBench: inserts in transactions of 1k (fsync per commit),
    point reads, updates."""
    n = ctx.sizes.db_rows
    rows = module.make_rows(n)
    rng = random.Random(2)
    reads = [rng.randrange(n) for _ in range(n)]
    updates = [rng.randrange(n) for _ in range(n // 5)]
    bench = module.EngineBench(ctx.dir, "full")
    try:
        with ctx.phase("engine_insert"):
            insert_s = _timed(bench.insert, rows)
        with ctx.phase("engine_get"):
            read_s = _timed(bench.point_reads, reads)
        with ctx.phase("engine_update"):
            update_s = _timed(bench.updates, updates)
    finally:
        bench.db.close()
    return [("engine_insert", insert_s, n, "op"), ("engine_get", read_s, n, "op"),
            ("engine_update", update_s, len(updates), "op")]


def engine(ctx: Ctx) -> list:
    """The engine's own benchmark workload (scripts/bench_engine.py), then
    'engine_commits': small transactions, one object each, each fsync'ed."""
    import engine as eng  # ImportError: the engine is not there yet; the row says so

    measured = _engine_own_workload(ctx, _load_bench_engine())
    commits = ctx.sizes.engine_commits
    db = eng.open(os.path.join(ctx.dir, "commits.engine"),
                  schema={"Item": {"id": "int primary_key", "v": "str"}})
    try:
        with ctx.phase("engine_commits"):
            start = time.perf_counter()
            for i in range(commits):
                with db.write() as tx:
                    tx.create("Item", {"id": i, "v": "x" * 100})
            seconds = time.perf_counter() - start
    finally:
        db.close()
    return measured + [("engine_commits", seconds, commits, "op")]


ALL = {"files": files, "mmap": mmap_rw, "sqlite": sqlite, "lmdb": lmdb_kv, "engine": engine}

# Table rows, in order, with what each measures (unknown engine_* rows go last).
METRICS = {
    "seq_write": "sequential write 1 MiB chunks + fsync",
    "seq_read_cold": "sequential read, 1 MiB reads, cold",
    "seq_read_warm": "sequential reads again (new opens), warm",
    "rand_read_cold": "random 4 KiB preads, cold",
    "rand_read_warm_fd": "same offsets again x5, same fd",
    "rand_read_warm_reopen": "same offsets x5, file reopened",
    "mmap": "MAP_SHARED random 4 KiB r/w + msync",
    "sqlite_insert": "SQLite inserts, 1k per transaction",
    "sqlite_select": "SQLite point selects, new connection",
    "lmdb_put": "LMDB puts, 1k per transaction",
    "lmdb_get": "LMDB random gets, reopened env",
    "engine_insert": "engine (bench_engine.py): inserts, 1k per commit",
    "engine_get": "engine (bench_engine.py): point reads",
    "engine_update": "engine (bench_engine.py): updates, 1k per commit",
    "engine_commits": "engine: one fsync'ed commit per object",
}
