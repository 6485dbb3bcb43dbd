"""kill -9 of the daemon under load, and a flipped backing byte: old-or-new, or EIO for one page."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from realmfs.fs import fusermount
from realmfs.format.layout import HEADER_BASE, PAGE_SIZE, page_offset

from .conftest import kill_daemon, slurp, spit

PAGES = 96                      # > 64: two IV-table blocks

LOOP = textwrap.dedent("""
    import os, sys
    root, pages = sys.argv[1], int(sys.argv[2])
    def page(name, p, g):
        return (b"." * 100 + b"%s P%06d G%06d|" % (name.encode(), p, g)).ljust(4096, b".")
    fds = {n: os.open(os.path.join(root, n), os.O_RDWR) for n in ("loop.bin", "loop.realm")}
    print("go", flush=True)
    g = 1
    try:
        while True:
            for p in range(pages):
                for n, fd in fds.items():
                    os.pwrite(fd, page(n, p, g), p * 4096)
            # a partial write across a page boundary too
            os.pwrite(fds["loop.bin"], b"X" * 100, 4096 * 5 - 50)
            g += 1
    except OSError:
        pass
""")


def _page(name: str, p: int, g: int) -> bytes:
    # the identity sits at byte 100, clear of the cross-page write at the page boundary
    return (b"." * 100 + b"%s P%06d G%06d|" % (name.encode(), p, g)).ljust(PAGE_SIZE, b".")


@pytest.mark.daemon_warnings(r"taking over a stale lock")
@pytest.mark.parametrize("after", [0.3, 1.7])
def test_kill_9_daemon_during_write_loop(mnt, after):
    for name in ("loop.bin", "loop.realm"):
        spit(mnt.m(name), b"".join(_page(name, p, 0) for p in range(PAGES)))
    writer = subprocess.Popen([sys.executable, "-c", LOOP, mnt.mountpoint, str(PAGES)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert writer.stdout.readline() == b"go\n"
        time.sleep(after)
        kill_daemon(mnt.current.pid)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    dead_pid = mnt.current.pid
    mnt.forget_mount()
    fusermount.unmount(mnt.mountpoint, check=True)
    mnt.mount()                          # the stale lock is taken over
    generations = set()
    for name in ("loop.bin", "loop.realm"):
        assert os.path.getsize(mnt.m(name)) == PAGES * PAGE_SIZE
        fd = os.open(mnt.m(name), os.O_RDONLY)
        try:
            for p in range(PAGES):
                data = os.pread(fd, PAGE_SIZE, p * PAGE_SIZE)     # EIO would raise here
                head = re.match(rb"(\S+) P(\d{6}) G(\d{6})\|", data[100:])
                assert head and head.group(1) == name.encode() and int(head.group(2)) == p, (name, p, data[:40])
                generation = int(head.group(3))
                expected = _page(name, p, generation)
                if name == "loop.bin" and p in (4, 5) and generation > 0:
                    # the cross-page partial write may or may not have landed on top
                    lo, hi = (4046, 4096) if p == 4 else (0, 50)
                    patched = expected[:lo] + b"X" * (hi - lo) + expected[hi:]
                    assert data in (expected, patched), (name, p)
                else:
                    assert data == expected, (name, p)
                generations.add(generation)
        finally:
            os.close(fd)
    assert max(generations) >= 1, "the loop never wrote"
    assert dead_pid != mnt.current.pid


@pytest.mark.daemon_warnings(r"integrity failure: page 3 of /f.bin")
def test_flipped_byte_gives_eio_for_that_page_only(mnt):
    data = b"".join(bytes([65 + p]) * PAGE_SIZE for p in range(10))
    spit(mnt.m("f.bin"), data)
    mnt.unmount()
    with open(mnt.b("f.bin"), "r+b") as f:
        where = page_offset(3, HEADER_BASE) + 100
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 0x01]))
    mnt.mount()
    fd = os.open(mnt.m("f.bin"), os.O_RDONLY)
    try:
        for p in range(10):
            if p == 3:
                try:
                    os.pread(fd, PAGE_SIZE, p * PAGE_SIZE)
                except OSError as error:
                    assert error.errno == errno.EIO
                else:
                    raise AssertionError("the damaged page was served")
            else:
                assert os.pread(fd, PAGE_SIZE, p * PAGE_SIZE) == bytes([65 + p]) * PAGE_SIZE, p
    finally:
        os.close(fd)
    log_file = mnt.current.log_file
    mnt.unmount()
    lines = [l for l in slurp(log_file).decode().splitlines() if "integrity failure" in l]
    assert lines and all("page 3 of" in l and "f.bin" in l for l in lines)


@pytest.mark.daemon_warnings(r"taking over a stale lock", r"removed 1 unlinked-but-open file")
def test_unlinked_open_file_left_by_a_killed_daemon_is_swept(mnt):
    spit(mnt.m("keep"), b"keep")
    fd = os.open(mnt.m("tmpfile"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"scratch")
        os.unlink(mnt.m("tmpfile"))
        assert os.fstat(fd).st_size == 7                      # fstat of an unlinked open file
        assert sorted(os.listdir(mnt.mountpoint)) == ["keep"]
        hidden = [n for n in os.listdir(mnt.backing) if n.startswith(".fuse_hidden")]
        assert len(hidden) == 1
        kill_daemon(mnt.current.pid)
    finally:
        try:
            os.close(fd)
        except OSError as error:             # the daemon is gone: the close cannot be sent
            assert error.errno in (errno.ECONNABORTED, errno.ENOTCONN), error
    mnt.forget_mount()
    fusermount.unmount(mnt.mountpoint, check=True)
    mnt.mount()
    assert not [n for n in os.listdir(mnt.backing) if n.startswith(".fuse_hidden")]
    assert slurp(mnt.m("keep")) == b"keep"


def test_umask_of_the_caller_is_kept(mnt):
    old = os.umask(0o002)
    try:
        fd = os.open(mnt.m("shared"), os.O_RDWR | os.O_CREAT, 0o666)
        os.close(fd)
        os.mkdir(mnt.m("dir"), 0o777)
    finally:
        os.umask(old)
    assert os.stat(mnt.m("shared")).st_mode & 0o777 == 0o664
    assert os.stat(mnt.m("dir")).st_mode & 0o777 == 0o775
