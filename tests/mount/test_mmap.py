"""MAP_SHARED through the mount: across processes, growing, and surviving kill -9 after msync."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import textwrap

from realmfs.format.layout import PAGE_SIZE

from .conftest import slurp

WRITER = textwrap.dedent("""
    import mmap, os, sys
    path, size = sys.argv[1], int(sys.argv[2])
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, size)
    m = mmap.mmap(fd, size)
    for i in range(0, size, 4096):
        m[i:i + 16] = b"MMAPMARK%08d" % (i // 4096)
    m.flush()                       # msync(MS_SYNC)
    print("synced", flush=True)
    sys.stdin.readline()            # wait: the test kills us here, mapping still live
""")


def _start_writer(path: str, size: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path, str(size)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"synced\n"
    return proc


def _expected(size: int) -> bytes:
    data = bytearray(size)
    for i in range(0, size, 4096):
        data[i:i + 16] = b"MMAPMARK%08d" % (i // 4096)
    return bytes(data)


def test_mapping_in_one_process_read_in_another(mnt):
    size = 40 * PAGE_SIZE + 100
    writer = _start_writer(mnt.m("shared.bin"), size)
    try:
        assert slurp(mnt.m("shared.bin")) == _expected(size)      # read() in this process
        # and the other way round: write() here, the live mapping there sees it
        with open(mnt.m("shared.bin"), "r+b") as f:
            f.seek(5)
            f.write(b"XYZ")
    finally:
        writer.stdin.close()
        writer.wait()
        writer.stdout.close()
    data = slurp(mnt.m("shared.bin"))
    assert data[5:8] == b"XYZ"
    assert not mnt.backing_contains(b"MMAPMARK")                   # ciphertext after msync


def test_grow_with_ftruncate_and_remap(mnt):
    fd = os.open(mnt.m("grow.bin"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, PAGE_SIZE)
        with mmap.mmap(fd, PAGE_SIZE) as m:
            m[:5] = b"first"
        for size in (3 * PAGE_SIZE, 70 * PAGE_SIZE, 300 * PAGE_SIZE + 7):
            os.ftruncate(fd, size)
            with mmap.mmap(fd, size) as m:
                m[size - 6:size] = b"tail%02d" % (size % 100)
                m.flush()
            assert os.fstat(fd).st_size == size
            assert os.pread(fd, 6, size - 6) == b"tail%02d" % (size % 100)
        assert os.pread(fd, 5, 0) == b"first"
    finally:
        os.close(fd)
    mnt.remount()
    data = slurp(mnt.m("grow.bin"))
    assert len(data) == 300 * PAGE_SIZE + 7 and data[:5] == b"first" and data[-6:] == b"tail07"
    assert data[3 * PAGE_SIZE - 6:3 * PAGE_SIZE] == b"tail88"


def test_msync_then_kill_9_the_writer_data_survives_remount(mnt):
    size = 130 * PAGE_SIZE          # crosses two IV-table blocks
    writer = _start_writer(mnt.m("killed.bin"), size)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdin.close()
    writer.stdout.close()
    assert not mnt.backing_contains(b"MMAPMARK")
    mnt.remount()
    assert slurp(mnt.m("killed.bin")) == _expected(size)
    mnt.unmount()
    assert mnt.decrypt("killed.bin") == _expected(size)


def test_realm_file_mapping(mnt):
    """A .realm file (Realm Core's layout) mapped and grown like Realm Core does."""
    fd = os.open(mnt.m("db.realm"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 16 * PAGE_SIZE)
        with mmap.mmap(fd, 16 * PAGE_SIZE) as m:
            m[PAGE_SIZE:PAGE_SIZE + 9] = b"realmdata"
            m.flush()
    finally:
        os.close(fd)
    mnt.unmount()
    assert mnt.decrypt("db.realm")[PAGE_SIZE:PAGE_SIZE + 9] == b"realmdata"
    assert not mnt.backing_contains(b"realmdata")
