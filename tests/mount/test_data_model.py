"""Randomized differential data test: file data on the mount against an in-memory model.

Each case is one file (header layout, or a ``.realm`` file in Realm Core's layout) and
a seeded list of operations on it through several descriptors at once: two buffered
O_RDWR fds, one O_RDWR|O_DIRECT fd (page-aligned buffers from an anonymous mmap), the
path (truncate) and whole-file MAP_SHARED mappings (reads; writes then msync). Offsets
are unaligned and lean towards page and IV-block boundaries and the end of the file;
lengths run from 1 byte to 1 MiB, files up to 32 MiB. After every operation the size
(fstat) must be the model's, and every read (pread, O_DIRECT, mmap) the model's bytes.
``remount`` operations close everything, unmount, check every page of the backing
file authenticates (verify.scan_file: no warning, torn page or damage) and that it
decrypts offline to the model, mount again and compare the whole file.

The model knows the layouts (docs/file-format.md): a ``.realm`` file's size is a whole
number of pages, so any size change rounds up to a page and the padding reads as zeros.

On a failure the operation list is shrunk by delta debugging (replayed on fresh files
of the same mount) and printed with the command that replays it:
``REALMFS_DATA_REPLAY='<json>' pytest tests/mount/test_data_model.py -k replay``.
A quick set of seeds runs by default; ``-m slow`` selects the long one.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import time

import pytest

from realmfs.tools import verify
from realmfs.format.layout import PAGE_SIZE

from .conftest import run_cli

BLOCK = 64 * PAGE_SIZE               # data pages per IV block
MAX_SIZE = 32 << 20
MAX_OP = 1 << 20
SLOTS = (0, 1)                       # buffered descriptors; slot 2 is the O_DIRECT one
DIRECT = 2
REPLAY_ENV = "REALMFS_DATA_REPLAY"
SHRINK_SECONDS = 240                 # the most a failure spends on shrinking its list

KINDS = [("write", 20), ("read", 20), ("direct_write", 8), ("direct_read", 10), ("mmap_read", 8),
         ("mmap_write", 8), ("truncate", 3), ("ftruncate", 3), ("fsync", 4), ("reopen", 3)]


# ---------------------------------------------------------------------- operations
def _round(size: int, realm: bool) -> int:
    return -(-size // PAGE_SIZE) * PAGE_SIZE if realm else size


def _length(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.3:
        return rng.randint(1, 64)
    if r < 0.45:
        return PAGE_SIZE + rng.randint(-3, 3)
    if r < 0.6:
        return rng.randint(1, 16) * PAGE_SIZE + rng.randint(-2, 2)
    return max(1, min(MAX_OP, int(2 ** rng.uniform(0, 20))))


def _offset(rng: random.Random, size: int, length: int) -> int:
    r = rng.random()
    if r < 0.3:
        base = rng.randrange(size + 1)
    elif r < 0.5:
        base = rng.randrange(size // PAGE_SIZE + 2) * PAGE_SIZE + rng.randint(-3, 3)
    elif r < 0.6:
        base = rng.randrange(size // BLOCK + 2) * BLOCK + rng.randint(-PAGE_SIZE, PAGE_SIZE)
    elif r < 0.95:
        base = size + rng.randint(-6000, 6000)
    else:
        base = rng.randrange(MAX_SIZE)                   # a far jump: a sparse stretch
    return max(0, min(base, MAX_SIZE - length))


def generate(seed: int, count: int, realm: bool) -> list:
    """``count`` operations, a remount, ``count // 2`` more, a remount."""
    rng = random.Random(seed)
    kinds, weights = zip(*KINDS)
    ops, size = [], 0
    for number in range(count + count // 2):
        if number == count:
            ops.append(("remount",))
        kind = rng.choices(kinds, weights)[0]
        length = _length(rng)
        offset = _offset(rng, size, length)
        slot = rng.choice(SLOTS)
        if kind in ("write", "direct_write"):
            ops.append((kind, slot, offset, length, rng.randrange(1 << 30)))
            size = max(size, _round(offset + length, realm))
        elif kind in ("truncate", "ftruncate"):
            target = 0 if rng.random() < 0.1 else _offset(rng, size, 0)
            ops.append((kind, slot, target))
            size = _round(target, realm)
        elif kind in ("fsync", "reopen"):
            ops.append((kind, rng.choice(SLOTS + (DIRECT,))))
        else:
            ops.append((kind, slot, offset, length, rng.randrange(1 << 30)))
    ops.append(("remount",))
    return ops


def _data(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


class Mismatch(AssertionError):
    pass


class Case:
    """One file on the mount, its descriptors and its model."""

    def __init__(self, env, name: str, realm: bool):
        self.env, self.name, self.realm = env, name, realm
        self.model = bytearray()
        self.fds: dict[int, int] = {}
        self.buffer = mmap.mmap(-1, MAX_OP)          # page-aligned: O_DIRECT's buffer
        self._open(create=True)

    @property
    def path(self) -> str:
        return self.env.m(self.name)

    def _open_slot(self, slot: int, create: bool = False) -> None:
        flags = os.O_RDWR | (os.O_CREAT if create else 0) | (os.O_DIRECT if slot == DIRECT else 0)
        self.fds[slot] = os.open(self.path, flags, 0o644)

    def _open(self, create: bool = False) -> None:
        for slot in SLOTS + (DIRECT,):
            self._open_slot(slot, create)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def finish(self) -> None:
        self.close()
        self.buffer.close()

    # -- the model
    def _resize(self, size: int) -> None:
        size = _round(size, self.realm)
        if size < len(self.model):
            del self.model[size:]
        else:
            self.model.extend(bytes(size - len(self.model)))

    def _write_model(self, offset: int, data: bytes) -> None:
        if offset + len(data) > len(self.model):
            self._resize(offset + len(data))
        self.model[offset:offset + len(data)] = data

    def _expect(self, op, got: bytes, offset: int, length: int) -> None:
        want = bytes(self.model[offset:offset + length])
        if got != want:
            same = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise Mismatch(f"{op}: got {len(got)} bytes, the model has {len(want)}; they differ from "
                           f"offset {offset + same:#x} (file size {len(self.model):#x})")

    # -- one operation
    def apply(self, op) -> None:
        kind = op[0]
        if kind == "remount":
            self.remount_and_check()
            return
        getattr(self, "_" + kind)(op, *op[1:])
        size = os.fstat(self.fds[0]).st_size
        if size != len(self.model):
            raise Mismatch(f"{op}: size {size:#x}, the model has {len(self.model):#x}")

    def _write(self, op, slot, offset, length, seed):
        data = _data(seed, length)
        assert os.pwrite(self.fds[slot], data, offset) == length, op
        self._write_model(offset, data)

    def _direct_write(self, op, slot, offset, length, seed):
        data = _data(seed, length)
        self.buffer[:length] = data
        assert os.pwritev(self.fds[DIRECT], [memoryview(self.buffer)[:length]], offset) == length, op
        self._write_model(offset, data)

    def _read(self, op, slot, offset, length, seed):
        self._expect(op, os.pread(self.fds[slot], length, offset), offset, length)

    def _direct_read(self, op, slot, offset, length, seed):
        count = os.preadv(self.fds[DIRECT], [memoryview(self.buffer)[:length]], offset)
        self._expect(op, self.buffer[:count], offset, length)

    def _mapped(self, slot, offset, length):
        """The file mapped whole (its size is the model's: apply checked it), and the
        operation's range within it."""
        size = len(self.model)
        offset %= size
        return mmap.mmap(self.fds[slot], size), offset, min(length, size - offset)

    def _mmap_read(self, op, slot, offset, length, seed):
        if self.model:
            mapping, offset, length = self._mapped(slot, offset, length)
            with mapping:
                self._expect(op, mapping[offset:offset + length], offset, length)

    def _mmap_write(self, op, slot, offset, length, seed):
        if self.model:
            mapping, offset, length = self._mapped(slot, offset, length)
            data = _data(seed, length)
            with mapping:
                mapping[offset:offset + length] = data
                mapping.flush()                        # msync(MS_SYNC)
            self._write_model(offset, data)

    def _truncate(self, op, slot, size):
        os.truncate(self.path, size)
        self._resize(size)

    def _ftruncate(self, op, slot, size):
        os.ftruncate(self.fds[slot], size)
        self._resize(size)

    def _fsync(self, op, slot):
        os.fsync(self.fds[slot])

    def _reopen(self, op, slot):
        os.close(self.fds.pop(slot))
        self._open_slot(slot)

    # -- whole-file checks
    def check_whole(self, what: str) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)    # this file's cache only
            got = bytearray()
            while chunk := os.pread(fd, MAX_OP, len(got)):
                got += chunk
        finally:
            os.close(fd)
        if got != self.model:
            self._expect((what,), bytes(got), 0, max(len(got), len(self.model)))

    def remount_and_check(self) -> None:
        self.check_whole("before remount")
        self.close()
        self.env.unmount()
        report = verify.scan_file(self.env.b(self.name), self.env.cipher, realm_layout=self.realm)
        problems = [str(p) for p in report.problems if p.severity >= verify.Severity.WARNING]
        if problems or report.size != len(self.model):
            raise Mismatch(f"backing file after unmount: size {report.size:#x} (model {len(self.model):#x}); "
                           + "; ".join(problems[:5]))
        if self.env.decrypt(self.name) != self.model:
            raise Mismatch("backing file decrypted offline differs from the model")
        self.env.mount()
        self._open()
        self.check_whole("after remount")


# ---------------------------------------------------------------------- running, shrinking
def run(env, stem: str, realm: bool, ops: list) -> str | None:
    """Apply ``ops`` to a new file (``stem``, plus ``.realm`` for that layout); the first
    failure as text, or None."""
    case = Case(env, stem + (".realm" if realm else ""), realm)
    try:
        for number, op in enumerate(ops):
            try:
                case.apply(op)
            except (Mismatch, OSError, AssertionError) as error:
                return f"operation {number} {op}: {type(error).__name__}: {error}"
        return None
    finally:
        case.finish()
        if env.current is None:          # a failure inside a remount: mount again for the next
            env.mount()


def shrink(env, stem: str, realm: bool, ops: list) -> list:
    """A shorter list that still fails (ddmin), within SHRINK_SECONDS."""
    deadline = time.monotonic() + SHRINK_SECONDS
    trials = iter(range(10**6))
    granularity = 2
    while len(ops) >= 2 and time.monotonic() < deadline:
        chunk = -(-len(ops) // granularity)
        for start in range(0, len(ops), chunk):
            candidate = ops[:start] + ops[start + chunk:]
            if time.monotonic() > deadline:
                break
            if candidate and run(env, f"{stem}-shrink{next(trials)}", realm, candidate):
                ops, granularity = candidate, max(granularity - 1, 2)
                break
        else:
            if granularity >= len(ops):
                break
            granularity = min(len(ops), granularity * 2)
    return ops


def check(env, stem: str, realm: bool, ops: list) -> None:
    failure = run(env, stem, realm, ops)
    if failure is None:
        return
    short = shrink(env, stem, realm, ops)
    again = run(env, f"{stem}-final", realm, short) or "(the shrunk list passed: a flaky failure?)"
    replay = json.dumps({"realm": realm, "ops": short}, separators=(",", ":"))
    pytest.fail(f"{failure}\nshrunk from {len(ops)} to {len(short)} operations: {again}\n"
                f"replay: {REPLAY_ENV}='{replay}' python -m pytest tests/mount/test_data_model.py -k replay",
                pytrace=False)


def _verify_all(env) -> None:
    env.unmount()
    result = run_cli("verify", env.backing, "--key-file", env.key_file)
    assert result.returncode == 0, result.stdout.decode()[-3000:] + result.stderr.decode()


# ---------------------------------------------------------------------- the tests
LAYOUTS = [False, True]
LAYOUT_IDS = ["header", "realm"]


@pytest.mark.parametrize("realm", LAYOUTS, ids=LAYOUT_IDS)
def test_random_operations_match_the_model(mnt, realm):
    for seed in range(3):
        check(mnt, f"quick{seed}", realm, generate(seed, 60, realm))
    _verify_all(mnt)


@pytest.mark.slow
@pytest.mark.parametrize("realm", LAYOUTS, ids=LAYOUT_IDS)
def test_random_operations_match_the_model_long(mnt, realm):
    for seed in range(1000, 1008):
        check(mnt, f"long{seed}", realm, generate(seed, 200, realm))
    _verify_all(mnt)


@pytest.mark.skipif(not os.environ.get(REPLAY_ENV), reason=f"set {REPLAY_ENV} to a printed operation list")
def test_replay(mnt):
    case = json.loads(os.environ[REPLAY_ENV])
    ops = [tuple(op) for op in case["ops"]]
    failure = run(mnt, "replay", case["realm"], ops)
    assert failure is None, failure
