"""Conformance of the mount with a plain directory, one operation at a time."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

import pytest

from realmfs.format.layout import PAGE_SIZE

from .conftest import slurp, spit


def test_create_write_read_and_logical_size(mnt):
    path = mnt.m("a.txt")
    with open(path, "wb") as f:
        f.write(b"hello world")
    assert os.path.getsize(path) == 11
    with open(path, "rb") as f:
        assert f.read() == b"hello world"
    assert os.path.getsize(mnt.b("a.txt")) > 11            # header + IV table + page
    assert b"hello" not in slurp(mnt.b("a.txt"))


def test_open_flags(mnt):
    path = mnt.m("flags")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
    os.write(fd, b"0123456789")
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"AB")
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"CD")                      # O_APPEND: still at the end
    os.close(fd)
    assert slurp(path) == b"0123456789ABCD"
    fd = os.open(path, os.O_RDWR | os.O_TRUNC)
    assert os.fstat(fd).st_size == 0
    os.write(fd, b"xy")
    os.close(fd)
    assert slurp(path) == b"xy"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    assert os.path.getsize(path) == 0
    with pytest.raises(FileNotFoundError):
        os.open(mnt.m("missing"), os.O_RDONLY)


def test_pwrite_holes_and_truncate(mnt):
    path = mnt.m("holes.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(fd, b"X", 3 * PAGE_SIZE + 5)
    assert os.fstat(fd).st_size == 3 * PAGE_SIZE + 6
    assert os.pread(fd, 10, 0) == bytes(10)
    os.ftruncate(fd, 100)
    assert os.fstat(fd).st_size == 100
    os.ftruncate(fd, 10000)
    assert os.pread(fd, 10000, 0) == bytes(10000)
    os.close(fd)
    os.truncate(path, 7)
    assert os.path.getsize(path) == 7


def test_rename_replaces_atomically_and_open_files_survive(mnt):
    with open(mnt.m("new"), "wb") as f:
        f.write(b"new")
    with open(mnt.m("old"), "wb") as f:
        f.write(b"old")
    with open(mnt.m("old"), "rb") as reader:
        os.rename(mnt.m("new"), mnt.m("old"))
        assert slurp(mnt.m("old")) == b"new"
        assert reader.read() == b"old"          # the replaced file lives on while open
    fd = os.open(mnt.m("old"), os.O_RDWR)
    os.unlink(mnt.m("old"))
    os.pwrite(fd, b"still here", 0)
    assert os.pread(fd, 100, 0) == b"still here"
    os.close(fd)
    assert sorted(os.listdir(mnt.mountpoint)) == []
    assert sorted(os.listdir(mnt.backing)) == [".realmfs.conf", ".realmfs.lock"]


def test_directories_links_and_metadata(mnt):
    os.mkdir(mnt.m("d"))
    with open(mnt.m("d", "f"), "wb") as f:
        f.write(b"data")
    os.link(mnt.m("d", "f"), mnt.m("d", "g"))
    assert os.stat(mnt.m("d", "g")).st_nlink == 2
    assert slurp(mnt.m("d", "f")) == b"data"              # now in f's page cache
    with open(mnt.m("d", "g"), "r+b") as f:
        f.write(b"DA")
    assert slurp(mnt.m("d", "f")) == b"DAta"              # close-to-open across names
    with open(mnt.m("d", "g"), "ab") as f:
        f.write(b"+more")
    time.sleep(1.1)                                        # attr_timeout: f's size catches up
    assert slurp(mnt.m("d", "f")) == b"DAta+more"
    with pytest.raises(OSError) as info:
        os.link(mnt.m("d", "f"), mnt.m("d", "f.realm"))     # would change the file's layout
    assert info.value.errno == errno.EXDEV
    os.symlink("f", mnt.m("d", "s"))
    assert os.readlink(mnt.m("d", "s")) == "f"
    assert slurp(mnt.m("d", "s")) == b"DAta+more"
    os.chmod(mnt.m("d", "f"), 0o604)
    assert stat.S_IMODE(os.stat(mnt.m("d", "f")).st_mode) == 0o604
    os.utime(mnt.m("d", "f"), ns=(1_000_000_123, 2_000_000_456))
    assert os.stat(mnt.m("d", "f")).st_mtime_ns == 2_000_000_456
    os.chown(mnt.m("d", "f"), 1234, 5678)
    assert (os.stat(mnt.m("d", "f")).st_uid, os.stat(mnt.m("d", "f")).st_gid) == (1234, 5678)
    with pytest.raises(OSError) as info:
        os.rmdir(mnt.m("d"))
    assert info.value.errno == errno.ENOTEMPTY
    for name in ("f", "g", "s"):
        os.unlink(mnt.m("d", name))
    os.rmdir(mnt.m("d"))
    assert os.statvfs(mnt.mountpoint).f_bsize > 0


def test_fifo_passes_through(mnt):
    os.mkfifo(mnt.m("x.realm.note"))
    assert stat.S_ISFIFO(os.stat(mnt.m("x.realm.note")).st_mode)
    assert stat.S_ISFIFO(os.stat(mnt.b("x.realm.note")).st_mode)
    fd = os.open(mnt.m("x.realm.note"), os.O_RDWR | os.O_NONBLOCK)
    os.write(fd, b"ping")
    assert os.read(fd, 4) == b"ping"
    os.close(fd)


def test_reserved_names_hidden_and_refused(mnt):
    assert ".realmfs.conf" not in os.listdir(mnt.mountpoint)
    assert not os.path.exists(mnt.m(".realmfs.conf"))
    for name in (".realmfs.conf", ".realmfs.lock"):
        with pytest.raises(OSError) as info:
            spit(mnt.m(name), b"")
        assert info.value.errno == errno.EPERM
    os.mkdir(mnt.m("sub"))
    with open(mnt.m("sub", ".realmfs.conf"), "wb") as f:     # only the top level is reserved
        f.write(b"ok")


@pytest.mark.daemon_warnings(r"refused \(EXDEV\)")
def test_realm_layout_sizes_and_renames(mnt):
    with open(mnt.m("db.realm"), "wb") as f:
        f.write(b"R" * 10)
    assert os.path.getsize(mnt.m("db.realm")) == PAGE_SIZE     # Realm's layout: whole pages
    assert slurp(mnt.m("db.realm"))[:10] == b"R" * 10
    os.rename(mnt.m("db.realm"), mnt.m("db2.realm"))
    with open(mnt.m("db2.realm"), "rb") as f:                   # open: cannot change layout
        with pytest.raises(OSError) as info:
            os.rename(mnt.m("db2.realm"), mnt.m("db.other"))
        assert info.value.errno == errno.EXDEV
    os.rename(mnt.m("db2.realm"), mnt.m("db.other"))            # closed: re-encrypted
    assert slurp(mnt.m("db.other")) == b"R" * 10 + bytes(PAGE_SIZE - 10)


def test_flock_and_fcntl_between_handles(mnt):
    path = mnt.m("lock")
    spit(path, b"")
    a = os.open(path, os.O_RDWR)
    b = os.open(path, os.O_RDWR)
    fcntl.flock(a, fcntl.LOCK_EX)
    with pytest.raises(BlockingIOError):
        fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(a, fcntl.LOCK_UN)
    fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(a)
    os.close(b)


def test_sealed_files_decrypt_offline(mnt):
    data = os.urandom(300_000)
    with open(mnt.m("big.bin"), "wb") as f:
        f.write(data)
    with open(mnt.m("x.realm"), "wb") as f:
        f.write(data[:8192])
    mnt.unmount()
    assert mnt.decrypt("big.bin") == data
    assert mnt.decrypt("x.realm") == data[:8192]
    mnt.mount()
    assert slurp(mnt.m("big.bin")) == data


def test_read_only_mount(env):
    env.mount()
    with open(env.m("f"), "wb") as f:
        f.write(b"keep")
    env.unmount()
    env.mount(read_only=True)
    assert slurp(env.m("f")) == b"keep"
    with pytest.raises(OSError) as info:
        os.open(env.m("f"), os.O_RDWR)
    assert info.value.errno == errno.EROFS
    with pytest.raises(OSError):
        spit(env.m("g"), b"")


def test_sizes_of_closed_files_are_never_stale(mnt):
    path = mnt.m("sizes")
    spit(path, b"x" * 3000)
    for size in (100, 200, 150, 4000, 1):      # same physical size each time, within one tick
        os.truncate(path, size)
        assert os.path.getsize(path) == size
        assert len(slurp(path)) == size
    mnt.remount()
    assert os.path.getsize(path) == 1


def test_setattr_through_a_handle_reaches_the_open_file(env, monkeypatch):
    """With the kernel's writeback cache (an experiment here, realmfs/fs/fusebinding.py) the
    kernel sets times through the file handle, and libfuse 3 then gives no path: the
    daemon must use the handle (it once took the missing path for a bug: EIO)."""
    from realmfs.fs import fusebinding
    if fusebinding.MAJOR != 3:
        pytest.skip("the writeback cache needs libfuse 3")
    monkeypatch.setenv(fusebinding.WRITEBACK_ENV, "1")
    env.mount()
    data = os.urandom(5 * 4096 + 7)
    fd = os.open(env.m("f.bin"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data) - 7)
        os.fchmod(fd, 0o600)
        os.utime(fd, ns=(1_000_000_000_123, 2_000_000_000_456))
        os.fsync(fd)
    finally:
        os.close(fd)
    st = os.stat(env.m("f.bin"))
    env.unmount()
    backing = os.stat(env.b("f.bin"))
    assert (backing.st_mtime_ns, stat.S_IMODE(backing.st_mode)) == (2_000_000_000_456, 0o600)
    assert (st.st_size, st.st_mtime_ns) == (len(data) - 7, 2_000_000_000_456)
    assert env.decrypt("f.bin") == data[:-7]
