"""Differential: random operation sequences on the mount and on a plain directory agree.

Every result (return value or errno) and every final file must be identical; after
unmount every backing file decrypts offline to the bytes read through the mount.
"""

from __future__ import annotations

import mmap
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NAMES = ["a", "b", "c.db"]
FLAG_CHOICES = [
    os.O_RDWR, os.O_RDWR | os.O_CREAT, os.O_RDWR | os.O_CREAT | os.O_EXCL,
    os.O_RDWR | os.O_CREAT | os.O_TRUNC, os.O_RDWR | os.O_TRUNC, os.O_RDWR | os.O_APPEND,
    os.O_RDWR | os.O_CREAT | os.O_APPEND, os.O_RDONLY, os.O_WRONLY | os.O_CREAT,
]
SLOTS = 3
offsets = st.integers(0, 20000)
datas = st.binary(min_size=0, max_size=9000)

operations = st.one_of(
    st.tuples(st.just("open"), st.integers(0, SLOTS - 1), st.sampled_from(NAMES), st.sampled_from(FLAG_CHOICES)),
    st.tuples(st.just("write"), st.integers(0, SLOTS - 1), datas),
    st.tuples(st.just("pwrite"), st.integers(0, SLOTS - 1), offsets, datas),
    st.tuples(st.just("pread"), st.integers(0, SLOTS - 1), offsets, st.integers(0, 10000)),
    st.tuples(st.just("ftruncate"), st.integers(0, SLOTS - 1), offsets),
    st.tuples(st.just("truncate"), st.sampled_from(NAMES), offsets),
    st.tuples(st.just("mmap_write"), st.integers(0, SLOTS - 1), offsets, st.binary(min_size=1, max_size=5000)),
    st.tuples(st.just("close"), st.integers(0, SLOTS - 1)),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("unlink"), st.sampled_from(NAMES)),
    st.tuples(st.just("stat"), st.sampled_from(NAMES)),
    st.tuples(st.just("fsync"), st.integers(0, SLOTS - 1)),
)


class World:
    """One directory and its open descriptors; ``apply`` returns a comparable result."""

    def __init__(self, root: str):
        self.root = root
        self.fds: dict[int, int] = {}

    def apply(self, op):
        try:
            return self._apply(op)
        except OSError as error:
            return ("errno", error.errno)
        except ValueError as error:          # mmap of an empty/short region
            return ("value", str(error)[:20])

    def _fd(self, slot):
        if slot not in self.fds:
            raise OSError(9, "no such slot")
        return self.fds[slot]

    def _apply(self, op):
        kind = op[0]
        if kind == "open":
            _, slot, name, flags = op
            if slot in self.fds:
                os.close(self.fds.pop(slot))
            self.fds[slot] = os.open(os.path.join(self.root, name), flags, 0o644)
            return "ok"
        if kind == "write":
            return os.write(self._fd(op[1]), op[2])
        if kind == "pwrite":
            return os.pwrite(self._fd(op[1]), op[3], op[2])
        if kind == "pread":
            return os.pread(self._fd(op[1]), op[3], op[2])
        if kind == "ftruncate":
            os.ftruncate(self._fd(op[1]), op[2])
            return "ok"
        if kind == "truncate":
            os.truncate(os.path.join(self.root, op[1]), op[2])
            return "ok"
        if kind == "mmap_write":
            _, slot, offset, data = op
            fd = self._fd(slot)
            size = os.fstat(fd).st_size
            if size == 0:
                return "empty"
            offset %= size
            data = data[:size - offset]
            with mmap.mmap(fd, size) as mapping:
                mapping[offset:offset + len(data)] = data
                mapping.flush()
            return len(data)
        if kind == "close":
            os.close(self._fd(op[1]))
            del self.fds[op[1]]
            return "ok"
        if kind == "rename":
            os.rename(os.path.join(self.root, op[1]), os.path.join(self.root, op[2]))
            return "ok"
        if kind == "unlink":
            os.unlink(os.path.join(self.root, op[1]))
            return "ok"
        if kind == "stat":
            return os.stat(os.path.join(self.root, op[1])).st_size
        if kind == "fsync":
            os.fsync(self._fd(op[1]))
            return "ok"
        raise AssertionError(kind)

    def close_all(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def files(self) -> dict:
        result = {}
        for name in sorted(os.listdir(self.root)):
            with open(os.path.join(self.root, name), "rb") as f:
                result[name] = f.read()
        return result


PREFIX = [("open", 0, "a", os.O_RDWR | os.O_CREAT), ("open", 1, "b", os.O_RDWR | os.O_CREAT)]  # every case


def new_case(mnt, plain_base, counter) -> tuple[int, World, World]:
    """The next case's number and its two fresh directories: on the mount, and plain."""
    number = next(counter)
    mount_dir, plain_dir = mnt.m(f"case{number}"), str(plain_base / f"case{number}")
    os.mkdir(mount_dir)
    os.mkdir(plain_dir)
    return number, World(mount_dir), World(plain_dir)


def test_random_sequences_match_a_plain_directory(mnt, tmp_path):
    plain_base = tmp_path / "plain"
    plain_base.mkdir()
    counter = iter(range(10**6))
    expected_files: dict[str, bytes] = {}

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(operations, min_size=1, max_size=40))
    def run(ops):
        number, on_mount, on_plain = new_case(mnt, plain_base, counter)
        try:
            for op in PREFIX + ops:
                assert on_mount.apply(op) == on_plain.apply(op), op
        finally:
            on_mount.close_all()
            on_plain.close_all()
        files = on_plain.files()
        assert on_mount.files() == files
        for name, data in files.items():
            expected_files[f"case{number}/{name}"] = data

    run()
    print(f"{next(counter)} cases, {len(expected_files)} files")
    assert expected_files
    mnt.unmount()
    for name, data in expected_files.items():
        assert mnt.decrypt(name) == data, name


def test_random_sequences_across_remounts(mnt, tmp_path):
    """The same, with remounts in the middle: what a reopen finds is what was left."""
    plain_base = tmp_path / "plain"
    plain_base.mkdir()
    counter = iter(range(10**6))
    with_remount = st.one_of(operations, st.just(("remount",)))

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(with_remount, min_size=1, max_size=40).filter(lambda ops: ("remount",) in ops))
    def run(ops):
        number, on_mount, on_plain = new_case(mnt, plain_base, counter)
        try:
            for op in PREFIX + ops:
                if op == ("remount",):
                    on_mount.close_all()
                    on_plain.close_all()
                    mnt.remount()
                    assert on_mount.files() == on_plain.files()
                    continue
                assert on_mount.apply(op) == on_plain.apply(op), op
        finally:
            on_mount.close_all()
            on_plain.close_all()
        assert on_mount.files() == on_plain.files()

    run()
