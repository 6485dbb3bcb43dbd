"""Rename between a realm-pattern name and another name: the file is re-encrypted.

A closed regular file changes layout (header <-> Realm) on rename; its plaintext is
the same through the mount and offline, and the backing file of a ``.realm`` name is
Realm Core's layout alone. An open file, or one with other hard links, gets EXDEV
and nothing changes. Realm Core's compaction (write ``X.realm.tmp_compaction_space``,
close, rename it over ``X.realm``) works.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from realmfs.format import fileheader
from realmfs.keys.config import RENAME_TEMP_PREFIX, TOOL_TEMP_SUFFIX
from realmfs.format.layout import HEADER_SIZE, PAGE_SIZE, body_size_is_valid, pages_for
from realmfs.storage.pagefile import open_backing
from realmfs.format.detect import has_realmfs_header

from .conftest import slurp, spit, tree_bytes


def _padded(data: bytes) -> bytes:
    return data + bytes(pages_for(len(data)) * PAGE_SIZE - len(data))


def _realm_backing_plaintext(env, name: str) -> bytes:
    """The backing file must be pure Realm layout: no header, a valid body, and every page
    authenticates with Realm Core's MAC (ciphertext only, no realmfs binding)."""
    path = env.b(name)
    with open(path, "rb") as f:
        raw = f.read()
    assert not has_realmfs_header(raw[:HEADER_SIZE]) and not raw.startswith(fileheader.MAGIC)
    assert body_size_is_valid(len(raw))
    f = open_backing(path, env.cipher, realm_layout=True, read_only=True)   # probes the key on pages
    try:
        return f.read(0, f.size)
    finally:
        f.close()


def _header_backing_plaintext(env, name: str) -> bytes:
    with open(env.b(name), "rb") as f:
        header = fileheader.unpack_page(f.read(HEADER_SIZE), env.cipher.mac_message)
    data = env.decrypt(name)
    assert header.size == len(data)
    return data


def _no_temporaries(env) -> None:
    for _root, _dirs, files in os.walk(env.backing):
        assert not [n for n in files if n.startswith(RENAME_TEMP_PREFIX) or n.endswith(TOOL_TEMP_SUFFIX)]


@pytest.mark.parametrize("length", [0, 5000, 2 * PAGE_SIZE, 300_000, 1_500_000])
def test_header_to_realm_keeps_the_content(mnt, length):
    data = os.urandom(length)
    spit(mnt.m("a.bin"), data)
    os.chmod(mnt.m("a.bin"), 0o640)
    os.utime(mnt.m("a.bin"), ns=(1_000_000_000, 2_000_000_000))
    os.rename(mnt.m("a.bin"), mnt.m("a.realm"))
    assert not os.path.exists(mnt.m("a.bin")) and not os.path.exists(mnt.b("a.bin"))
    assert slurp(mnt.m("a.realm")) == _padded(data)           # Realm's layout: whole pages
    st = os.stat(mnt.m("a.realm"))
    assert st.st_size == len(_padded(data))
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == 2_000_000_000
    assert sorted(os.listdir(mnt.mountpoint)) == ["a.realm"]
    _no_temporaries(mnt)
    mnt.unmount()
    assert _realm_backing_plaintext(mnt, "a.realm") == _padded(data)


@pytest.mark.parametrize("length", [PAGE_SIZE, 10_000, 70 * PAGE_SIZE])
def test_realm_to_header_keeps_the_whole_page_size(mnt, length):
    data = os.urandom(length)
    spit(mnt.m("b.realm"), data)
    os.rename(mnt.m("b.realm"), mnt.m("b.dat"))
    assert slurp(mnt.m("b.dat")) == _padded(data)
    assert os.path.getsize(mnt.m("b.dat")) == len(_padded(data))
    with open(mnt.m("b.dat"), "ab") as f:                      # an ordinary header file now
        f.write(b"tail")
    assert slurp(mnt.m("b.dat")) == _padded(data) + b"tail"
    _no_temporaries(mnt)
    mnt.unmount()
    assert _header_backing_plaintext(mnt, "b.dat") == _padded(data) + b"tail"


@pytest.mark.parametrize("source, target", [("new.tmp", "t.realm"), ("new.realm", "t.txt")])
def test_rename_replaces_an_existing_target(mnt, source, target):
    spit(mnt.m(target), b"old target" * 1000)
    spit(mnt.m(source), b"new content")
    os.rename(mnt.m(source), mnt.m(target))
    assert sorted(os.listdir(mnt.mountpoint)) == [target]
    assert slurp(mnt.m(target)) == _padded(b"new content")      # one of the two is a .realm
    _no_temporaries(mnt)
    mnt.unmount()
    if target.endswith(".realm"):
        assert _realm_backing_plaintext(mnt, target) == _padded(b"new content")
    else:
        assert _header_backing_plaintext(mnt, target) == _padded(b"new content")


@pytest.mark.daemon_warnings(r"refused \(EXDEV\): the file is open")
def test_rename_of_an_open_file_is_exdev_and_changes_nothing(mnt):
    spit(mnt.m("x.realm"), b"target")
    spit(mnt.m("busy.bin"), b"source data")
    before = tree_bytes(mnt.backing)
    fd = os.open(mnt.m("busy.bin"), os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            os.rename(mnt.m("busy.bin"), mnt.m("x.realm"))
        assert info.value.errno == errno.EXDEV
        assert os.pread(fd, 100, 0) == b"source data"
    finally:
        os.close(fd)
    assert tree_bytes(mnt.backing) == before
    assert slurp(mnt.m("x.realm")) == _padded(b"target")
    with open(mnt.log_file) as f:
        assert "rename /busy.bin -> /x.realm refused (EXDEV): the file is open" in f.read()
    os.rename(mnt.m("busy.bin"), mnt.m("x.realm"))             # closed now: converted
    assert slurp(mnt.m("x.realm")) == _padded(b"source data")


@pytest.mark.daemon_warnings(r"refused \(EXDEV\): the file has other hard links")
def test_hard_links_never_cross_layouts(mnt):
    spit(mnt.m("f"), b"linked")
    os.link(mnt.m("f"), mnt.m("g"))
    with pytest.raises(OSError) as info:
        os.link(mnt.m("f"), mnt.m("f.realm"))
    assert info.value.errno == errno.EXDEV
    with pytest.raises(OSError) as info:                       # two names, one file: one layout
        os.rename(mnt.m("f"), mnt.m("f.realm"))
    assert info.value.errno == errno.EXDEV
    assert sorted(os.listdir(mnt.mountpoint)) == ["f", "g"]
    os.unlink(mnt.m("g"))
    os.rename(mnt.m("f"), mnt.m("f.realm"))
    assert slurp(mnt.m("f.realm")) == _padded(b"linked")


def test_realm_compaction_renames_its_temporary_over_the_database(mnt):
    """Realm Core's DB::compact: write X.realm.tmp_compaction_space (a header-layout name
    here), close it, detach from X.realm, then File::move it over X.realm."""
    old = os.urandom(5 * PAGE_SIZE)
    spit(mnt.m("X.realm"), old)
    spit(mnt.m("X.realm.lock"), b"")
    os.mkfifo(mnt.m("X.realm.note"))
    compacted = os.urandom(3 * PAGE_SIZE + 123)
    with open(mnt.m("X.realm.tmp_compaction_space"), "wb") as f:
        f.write(compacted)
        os.fsync(f.fileno())
    os.rename(mnt.m("X.realm.tmp_compaction_space"), mnt.m("X.realm"))
    assert slurp(mnt.m("X.realm")) == _padded(compacted)
    assert sorted(os.listdir(mnt.mountpoint)) == ["X.realm", "X.realm.lock", "X.realm.note"]
    with open(mnt.m("X.realm"), "r+b") as f:                    # the database goes on being used
        f.seek(PAGE_SIZE)
        f.write(b"after compaction")
    mnt.unmount()
    expected = bytearray(_padded(compacted))
    expected[PAGE_SIZE:PAGE_SIZE + 16] = b"after compaction"
    assert _realm_backing_plaintext(mnt, "X.realm") == bytes(expected)


def test_directories_rename_plainly_and_their_files_keep_layouts(mnt):
    os.mkdir(mnt.m("d"))
    spit(mnt.m("d", "in.realm"), b"realm file")
    spit(mnt.m("d", "plain"), b"header file")
    os.rename(mnt.m("d"), mnt.m("d.realm"))
    assert slurp(mnt.m("d.realm", "in.realm")) == _padded(b"realm file")
    assert slurp(mnt.m("d.realm", "plain")) == b"header file"
    mnt.unmount()
    assert _realm_backing_plaintext(mnt, "d.realm/in.realm") == _padded(b"realm file")
    assert _header_backing_plaintext(mnt, "d.realm/plain") == b"header file"


def test_rename_onto_a_directory_is_eisdir_before_any_copy(mnt):
    spit(mnt.m("f.realm"), b"x")
    os.mkdir(mnt.m("d"))
    with pytest.raises(OSError) as info:
        os.rename(mnt.m("f.realm"), mnt.m("d"))
    assert info.value.errno == errno.EISDIR
    assert sorted(os.listdir(mnt.mountpoint)) == ["d", "f.realm"]
    _no_temporaries(mnt)


@pytest.mark.daemon_warnings(r"removed 2 unlinked-but-open file")
def test_rename_temporaries_are_reserved_hidden_and_swept(mnt):
    name = f"{RENAME_TEMP_PREFIX}0123{TOOL_TEMP_SUFFIX}"
    with pytest.raises(OSError) as info:
        spit(mnt.m(name), b"")
    assert info.value.errno == errno.EPERM
    os.mkdir(mnt.m("sub"))
    mnt.unmount()
    for where in (mnt.b(name), mnt.b("sub", name)):            # what a crash mid-rename leaves
        spit(where, b"leftover")
    spit(mnt.b(RENAME_TEMP_PREFIX + "not-ours"), b"kept")       # without the suffix: never swept
    mnt.mount()
    assert os.listdir(mnt.mountpoint) == ["sub"] and os.listdir(mnt.m("sub")) == []
    assert not os.path.exists(mnt.m("sub", name))
    assert slurp(mnt.b(RENAME_TEMP_PREFIX + "not-ours")) == b"kept"
    os.unlink(mnt.b(RENAME_TEMP_PREFIX + "not-ours"))
    _no_temporaries(mnt)
