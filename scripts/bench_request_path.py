#!/usr/bin/env python3
"""What a Python FUSE daemon can reach here, whatever its crypto: the request-path floor.

    python3 scripts/bench_request_path.py            # about 1.5 minutes
    python3 scripts/bench_request_path.py --quick    # about 40 s

A minimal pass-through daemon (no realmfs code in its request path) is mounted in a child
process under several configurations; a client process of its own runs the workloads, each
beside a plain directory in the same run:

* ``seq_write``: 256 MiB (quick: 64) in 1 MiB writes, then fsync; MB/s. The daemon can charge
  realmfs's real sealing cost to each write (``PageCipher.seal_pages`` on the request's
  pages): ``crypto=seal`` in process, ``crypto=split`` with half of every request sealed by a
  forked worker process in a shared mapping (the only way to use the second core: threads
  lose to the GIL).
* ``sqlite_insert``: 100 (quick: 30) transactions of 1k rows, synchronous=FULL; ``lmdb_put``:
  as many transactions of 1k puts (sync on commit); ``engine_commits``: ten times as many
  one-object commits of the engine (each fsync'ed): ratios to plain.

Configurations: libfuse2 through fusepy (realmfs's binding: 128 KiB writes, one request at a
time) and, when ``mfusepy`` and libfuse3 are installed, libfuse3 with 1 MiB writes, with and
without the kernel's writeback cache; and gocryptfs's seq_write when it is installed.
docs/performance.md explains what the figures prove.
A benchmark, not a test: no thresholds. Run as root (FUSE mounts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from ctypes.util import find_library
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realmfs.fs import fusermount  # noqa: E402
from realmfs.format.layout import ENTRIES_PER_BLOCK, ENTRY_SIZE, PAGE_SIZE  # noqa: E402
from realmfs.durable import fsync_dir  # noqa: E402
from benchlib.targets import Gocryptfs, is_mounted  # noqa: E402

MiB = 1 << 20
FUSE_CAP_WRITEBACK_CACHE = 1 << 16
CONFIGS = [   # (label, binding, max_write, writeback, crypto)
    ("libfuse2 128K, no crypto", 2, 128 << 10, False, "none"),
    ("libfuse2 128K, seal", 2, 128 << 10, False, "seal"),
    ("libfuse2 128K, seal split with a worker", 2, 128 << 10, False, "split"),
    ("libfuse3 1M, no crypto", 3, MiB, False, "none"),
    ("libfuse3 1M, seal", 3, MiB, False, "seal"),
    ("libfuse3 1M, seal split with a worker", 3, MiB, False, "split"),
    ("libfuse3 1M + writeback cache, no crypto", 3, MiB, True, "none"),
]


# ------------------------------------------------------------------ the daemon's crypto
class Sealer:
    """Charges each write the cost of sealing its pages (the ciphertext is thrown away)."""

    def __init__(self, mode: str):
        from realmfs.format.pagecipher import PageCipher
        self.mode = mode
        self.cipher = PageCipher(os.urandom(64))
        self.file_id = os.urandom(16)
        self.meta = bytearray(PAGE_SIZE)
        self.worker = None
        if mode == "split":
            self._start_worker()

    def _start_worker(self) -> None:
        self.shared = mmap.mmap(-1, MiB)
        to_worker_r, self.to_worker = os.pipe()
        self.from_worker, from_worker_w = os.pipe()
        pid = os.fork()
        if pid == 0:        # the worker: seal what it is told, answer one byte
            os.close(self.to_worker)
            os.close(self.from_worker)
            while True:
                message = os.read(to_worker_r, 8)
                if not message:
                    os._exit(0)
                first, end = struct.unpack("<II", message)
                self._seal(self.shared, first, end)
                os.write(from_worker_w, b"\1")
        os.close(to_worker_r)
        os.close(from_worker_w)
        self.worker = pid

    def _seal(self, data, first: int, end: int) -> None:
        """Seal pages first..end-1 of ``data`` one IV block at a time, as EncryptedFile does."""
        low = first
        while low < end:
            high = min(end, (low // ENTRIES_PER_BLOCK + 1) * ENTRIES_PER_BLOCK)
            at = (low % ENTRIES_PER_BLOCK) * ENTRY_SIZE
            _, self.meta[at:at + (high - low) * ENTRY_SIZE], _ = self.cipher.seal_pages(
                data, self.meta[at:at + (high - low) * ENTRY_SIZE], low, self.file_id, offset=low * PAGE_SIZE)
            low = high

    def charge(self, data: bytes) -> None:
        pages = len(data) // PAGE_SIZE
        if self.mode == "seal":
            self._seal(data, 0, pages)
        elif self.mode == "split" and pages > 1:
            half = pages // 2
            self.shared[half * PAGE_SIZE:pages * PAGE_SIZE] = data[half * PAGE_SIZE:pages * PAGE_SIZE]
            os.write(self.to_worker, struct.pack("<II", half, pages))
            self._seal(data, 0, half)
            os.read(self.from_worker, 1)
        elif self.mode == "split":
            self._seal(data, 0, pages)

    def close(self) -> None:
        if self.worker:
            os.close(self.to_worker)
            os.waitpid(self.worker, 0)
            self.worker = None


# ------------------------------------------------------------------ the pass-through
def passthrough_class(fuse_module):
    class Passthrough(fuse_module.Operations):
        use_ns = True

        def __init__(self, root: str, sealer: Sealer, max_write: int, writeback: bool):
            self.root, self.sealer = root, sealer
            self.max_write, self.writeback = max_write, writeback

        def _p(self, path):
            return self.root + path

        def init_with_config(self, conn, config):      # libfuse3 only
            conn.max_write = self.max_write
            if self.writeback:
                conn.want |= FUSE_CAP_WRITEBACK_CACHE
            config.kernel_cache = 1
            config.attr_timeout = config.entry_timeout = config.negative_timeout = 1.0

        def getattr(self, path, fh=None):
            st = os.lstat(self._p(path))
            keys = ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid", "st_atime", "st_mtime", "st_ctime")
            return {key: getattr(st, key) for key in keys}

        def create(self, path, mode, fi=None):
            return os.open(self._p(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)

        def open(self, path, flags):
            return os.open(self._p(path), flags & ~os.O_APPEND)

        def read(self, path, size, offset, fh):
            return os.pread(fh, size, offset)

        def write(self, path, data, offset, fh):
            self.sealer.charge(data)
            return os.pwrite(fh, data, offset)

        def truncate(self, path, length, fh=None):
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self._p(path), length)

        def fsync(self, path, datasync, fh):
            (os.fdatasync if datasync else os.fsync)(fh)
            return 0

        def fsyncdir(self, path, datasync, fh):
            fsync_dir(self._p(path))
            return 0

        def flush(self, path, fh):
            return 0

        def release(self, path, fh):
            os.close(fh)
            return 0

        def unlink(self, path):
            os.unlink(self._p(path))

        def mkdir(self, path, mode):
            os.mkdir(self._p(path), mode)

        def rmdir(self, path):
            os.rmdir(self._p(path))

        def rename(self, old, new, flags=0):
            os.rename(self._p(old), self._p(new))

        def link(self, target, source):     # both bindings: target is the new name
            os.link(self._p(source), self._p(target))

        def readdir(self, path, fh):
            return [".", ".."] + os.listdir(self._p(path))

        def utimens(self, path, times=None, fh=None):
            return 0

        def chmod(self, path, mode, fh=None):
            return 0

        def chown(self, path, uid, gid, fh=None):
            return 0

        def statfs(self, path):
            st = os.statvfs(self._p(path))
            return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize",
                                                      "f_favail", "f_ffree", "f_files", "f_flag",
                                                      "f_frsize", "f_namemax")}
    return Passthrough


def load_binding(version: int):
    """fusepy (libfuse2) or mfusepy pointed at libfuse3; None if not installed."""
    if version == 2:
        import fuse
        return fuse
    library = find_library("fuse3")
    if not library:
        return None
    os.environ["FUSE_LIBRARY_PATH"] = library
    try:
        import mfusepy
    except (ImportError, OSError):
        return None
    return mfusepy if mfusepy.fuse_version_major == 3 else None


# ------------------------------------------------------------------ workloads
def seq_write(directory: str, mib: int) -> float:
    chunk = os.urandom(MiB)
    path = os.path.join(directory, "seq.bin")
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for _ in range(mib):
            f.write(chunk)
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    os.unlink(path)
    return mib * MiB / seconds / 1e6


def _batches(transactions: int, transaction, put) -> float:
    """Seconds for ``transactions`` transactions (``transaction()``: a context manager) of
    1000 ``put(handle, key)`` each, keys ascending."""
    key = 0
    start = time.perf_counter()
    for _ in range(transactions):
        with transaction() as handle:
            for _ in range(1000):
                put(handle, key)
                key += 1
    return time.perf_counter() - start


def sqlite_insert(directory: str, transactions: int) -> float:
    path = os.path.join(directory, "bench.sqlite")
    for leftover in (path, path + "-journal"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    payload = os.urandom(100)

    @contextlib.contextmanager
    def transaction():
        db.execute("BEGIN")
        yield db
        db.execute("COMMIT")

    seconds = _batches(transactions, transaction,
                       lambda handle, key: handle.execute("INSERT INTO t VALUES (?, ?)", (key, payload)))
    db.close()
    os.unlink(path)
    return seconds


def lmdb_put(directory: str, transactions: int) -> float:
    import lmdb
    path = os.path.join(directory, "lmdb")
    shutil.rmtree(path, ignore_errors=True)
    env = lmdb.open(path, map_size=1 << 30)
    payload = os.urandom(100)
    seconds = _batches(transactions, lambda: env.begin(write=True),     # sync on commit
                       lambda txn, key: txn.put(b"%016d" % key, payload))
    env.close()
    shutil.rmtree(path)
    return seconds


def engine_commits(directory: str, transactions: int) -> float:
    import engine
    path = os.path.join(directory, "commits.engine")
    db = engine.open(path, schema={"Item": {"id": "int primary_key", "v": "str"}})
    start = time.perf_counter()
    for number in range(transactions * 10):     # one object per fsync'ed commit
        with db.write() as tx:
            tx.create("Item", {"id": number, "v": "x" * 100})
    seconds = time.perf_counter() - start
    db.close()
    for name in os.listdir(directory):
        if name.startswith("commits.engine"):
            os.unlink(os.path.join(directory, name))
    return seconds


TIMED = {"sqlite_insert": sqlite_insert, "lmdb_put": lmdb_put, "engine_commits": engine_commits}


def run_workloads(config: dict) -> dict:
    """The client: every workload on the mount and on plain, alternating; then unmount.
    A process of its own: a client thread inside the daemon deadlocks on any C library that
    holds the GIL across file I/O (py-lmdb does)."""
    mountpoint, plain = config["mountpoint"], config["plain"]
    deadline = time.monotonic() + 30
    while not is_mounted(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.02)
    if not is_mounted(mountpoint):      # never time the bare directory as if it were the mount
        return {"error": "not mounted within 30 s"}
    try:
        samples: dict = {}
        for _ in range(3):
            for where, directory in (("mount", mountpoint), ("plain", plain)):
                samples.setdefault(f"write_mbs_{where}", []).append(seq_write(directory, config["mib"]))
                for name, workload_fn in TIMED.items():
                    seconds = workload_fn(directory, config["transactions"])
                    samples.setdefault(f"{name}_{where}", []).append(seconds)
        return {key: statistics.median(values) for key, values in samples.items()}
    except Exception as error:      # reported; the mount still comes down
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        fusermount.unmount(mountpoint)


def run_daemon(config: dict) -> dict:
    """Mount one configuration and serve it until the client process unmounts it."""
    binding = load_binding(config["binding"])
    if binding is None:
        return {"skipped": "mfusepy or libfuse3 missing"}
    base = config["base"]
    backing, mountpoint, plain = (os.path.join(base, name) for name in ("backing", "mnt", "plain"))
    for directory in (backing, mountpoint, plain):
        os.makedirs(directory, exist_ok=True)
    sealer = Sealer(config["crypto"])
    client = subprocess.Popen([sys.executable, __file__, "--client",
                               json.dumps(dict(config, mountpoint=mountpoint, plain=plain))],
                              stdout=subprocess.PIPE, text=True)
    operations = passthrough_class(binding)(backing, sealer, config["max_write"], config["writeback"])
    options = {"foreground": True, "nothreads": True}
    if config["binding"] == 2:
        options.update(big_writes=True, max_write=config["max_write"], kernel_cache=True,
                       attr_timeout=1, entry_timeout=1, negative_timeout=1)
    try:
        binding.FUSE(operations, mountpoint, **options)
    except BaseException:
        client.kill()           # it must not go on loading the disk under the next configuration
        client.wait()
        raise
    finally:
        sealer.close()
    out, _ = client.communicate(timeout=60)
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"error": "the client said nothing"}


def gocryptfs_row(base: str, mib: int) -> dict:
    """gocryptfs's seq_write in the same run (bench.py's peer target mounts it)."""
    peer = Gocryptfs(base)
    why = peer.unavailable()
    if why:
        return {"skipped": why}
    plain = os.path.join(base, "plain-beside-gocryptfs")
    os.makedirs(plain)
    writes = {"mount": [], "plain": []}
    try:
        peer.start()
        for _ in range(3):
            writes["mount"].append(seq_write(peer.dir, mib))
            writes["plain"].append(seq_write(plain, mib))
    finally:
        peer.stop()
    return {"write_mbs_mount": statistics.median(writes["mount"]),
            "write_mbs_plain": statistics.median(writes["plain"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB writes, 30 transactions")
    parser.add_argument("--daemon", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.daemon or args.client:
        run = run_daemon if args.daemon else run_workloads
        print(json.dumps(run(json.loads(args.daemon or args.client))), flush=True)
        return 0
    if os.geteuid() != 0:
        print("bench_request_path: run as root (it mounts FUSE file systems)", file=sys.stderr)
        return 2
    base = tempfile.mkdtemp(prefix="realmfs-request-path-", dir="/var/tmp")
    rows = []
    try:
        for label, binding, max_write, writeback, crypto in CONFIGS:
            work = os.path.join(base, f"c{len(rows)}")
            config = {"binding": binding, "max_write": max_write, "writeback": writeback,
                      "crypto": crypto, "base": work, "mib": 64 if args.quick else 256,
                      "transactions": 30 if args.quick else 100}
            try:
                out = subprocess.run([sys.executable, __file__, "--daemon", json.dumps(config)],
                                     capture_output=True, text=True, timeout=600)
                lines = out.stdout.strip().splitlines()
                result = json.loads(lines[-1]) if lines else {"error": out.stderr.strip()[-300:]}
            except subprocess.TimeoutExpired:
                result = {"error": "timed out"}
            finally:
                mountpoint = os.path.join(work, "mnt")
                if is_mounted(mountpoint):
                    fusermount.unmount(mountpoint, lazy=True)
            rows.append((label, result))
            print(f"  {label}: {_describe(result)}", flush=True)
        peer_base = os.path.join(base, "peer")
        os.makedirs(peer_base)
        try:
            rows.append(("gocryptfs (seq write only)", gocryptfs_row(peer_base, 64 if args.quick else 256)))
        except (subprocess.CalledProcessError, RuntimeError) as error:
            rows.append(("gocryptfs (seq write only)", {"error": f"gocryptfs failed: {error}"}))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n{'configuration':<44}seq write MB/s (plain)   " + "  ".join(f"{n} / plain" for n in TIMED))
    for label, result in rows:
        print(f"{label:<44}{_describe(result)}")
    return 0


def _describe(result: dict) -> str:
    if "skipped" in result or "error" in result:
        return result.get("skipped") or f"error: {result['error']}"
    ratios = "  ".join(
        f"{result[f'{name}_mount'] / result[f'{name}_plain']:{len(name) + 7}.2f}x" if f"{name}_mount" in result
        else f"{'-':>{len(name) + 8}}" for name in TIMED)
    return f"{result['write_mbs_mount']:7.0f} ({result['write_mbs_plain']:5.0f})          {ratios}"


if __name__ == "__main__":
    sys.exit(main())
