"""encrypt, decrypt and rekey keep each file's and directory's owner, mode and times:
the mount shows the backing file's, so a tree looks the same before and after."""

from __future__ import annotations

import os

from realmfs.tools import offline
from realmfs.tools import rekey as rekeymod
from realmfs.keys.key import Key, read_key_file
from tests.offline.conftest import write_tree

# odd modes and old, distinct times, so that defaults (0600, 0755, now) cannot pass
FILES = {"a.bin": (0o640, 1_000_000_000), "db/b.realm": (0o604, 1_100_000_000),
         "db/deep/c.txt": (0o444, 1_200_000_000)}
DIRS = {"db": (0o750, 1_300_000_000), "db/deep": (0o711, 1_400_000_000)}
OWNER = (1234, 5678) if os.geteuid() == 0 else None   # only root can give files away


def make_source(root) -> None:
    write_tree(root, {name: name.encode() * 100 for name in FILES})
    for table in (FILES, DIRS):          # files first: filling a directory moves its mtime
        for name in sorted(table, reverse=True):
            path = os.path.join(root, name)
            if OWNER:
                os.chown(path, *OWNER)
            mode, seconds = table[name]
            os.chmod(path, mode)
            os.utime(path, ns=(seconds * 10**9 + 7, seconds * 10**9 + 123))


def assert_same_metadata(root) -> None:
    for table in (FILES, DIRS):
        for name, (mode, seconds) in table.items():
            st = os.stat(os.path.join(root, name))
            assert (name, st.st_mode & 0o7777) == (name, mode)
            assert (name, st.st_mtime_ns, st.st_atime_ns) == (name, seconds * 10**9 + 123, seconds * 10**9 + 7)
            if OWNER:
                assert (name, st.st_uid, st.st_gid) == (name, *OWNER)


def test_tree_encrypt_rekey_decrypt_keep_owner_mode_and_times(tmp_path):
    key = Key.generate()
    make_source(tmp_path / "src")
    offline.encrypt(str(tmp_path / "src"), str(tmp_path / "backing"), key)
    assert_same_metadata(tmp_path / "backing")
    assert os.stat(tmp_path / "backing").st_mode & 0o777 == 0o700   # the top stays private
    rekeymod.rekey(str(tmp_path / "backing"), key, new_key_file=str(tmp_path / "new.key"))
    assert_same_metadata(tmp_path / "backing")
    offline.decrypt(str(tmp_path / "backing"), str(tmp_path / "out"), read_key_file(str(tmp_path / "new.key")))
    assert_same_metadata(tmp_path / "out")


def test_single_file_encrypt_and_decrypt_keep_mode_and_times(tmp_path):
    key = Key.generate()
    src = tmp_path / "one.bin"
    src.write_bytes(b"x" * 5000)
    os.chmod(src, 0o604)
    os.utime(src, ns=(10**18 + 7, 10**18 + 123))
    offline.encrypt(str(src), str(tmp_path / "enc.bin"), key)
    expected = (0o604, 10**18 + 123, 10**18 + 7)
    st = os.stat(tmp_path / "enc.bin")     # (before decrypt reads it: reads move atime)
    assert (st.st_mode & 0o777, st.st_mtime_ns, st.st_atime_ns) == expected
    offline.decrypt(str(tmp_path / "enc.bin"), str(tmp_path / "out.bin"), key)
    st = os.stat(tmp_path / "out.bin")
    assert (st.st_mode & 0o777, st.st_mtime_ns, st.st_atime_ns) == expected
