"""plain tree -> realmfs encrypt -> mount -> every file reads back equal (needs FUSE)."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from realmfs import api
from realmfs.fs import fusermount
from realmfs.tools import offline
from realmfs.storage.backinglock import pid_alive
from realmfs.keys.key import Key
from tests.fusecheck import fuse_problem
from tests.offline.conftest import write_tree



@pytest.fixture(autouse=True)
def needs_fuse():
    problem = fuse_problem()
    if problem:
        pytest.fail(f"this test needs FUSE: {problem}", pytrace=False)


@pytest.fixture
def mount_guard():
    """Unmount whatever the test mounted, even after a failure: fusermount -u, -uz, then
    give that mount's own daemon 10 s to seal before SIGKILL (by pid)."""
    mounts = []
    yield mounts.append
    for handle in mounts:
        if not getattr(handle, "active", False):
            continue
        if fusermount.unmount(handle.mountpoint).returncode:
            fusermount.unmount(handle.mountpoint, lazy=True)
        deadline = time.monotonic() + 10
        while pid_alive(handle.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(handle.pid):
            os.kill(handle.pid, signal.SIGKILL)


def mount_in(tmp_path, key):
    """Mount tmp_path/backing on tmp_path/mnt; the daemon's log stays in tmp_path."""
    return api.mounted(str(tmp_path / "backing"), str(tmp_path / "mnt"), key,
                       log_file=str(tmp_path / "daemon.log"))


def test_encrypted_tree_mounts_and_reads_back(tmp_path, mount_guard):
    rnd = random.Random(3)
    tree = {"app/default.realm": rnd.randbytes(40 * 4096), "app/empty.realm": b"",
            "notes.txt": b"hello\n", "big.bin": rnd.randbytes(3 * 262144 + 5), "empty.bin": b""}
    write_tree(tmp_path / "src", tree)
    key = Key.generate()
    offline.encrypt(str(tmp_path / "src"), str(tmp_path / "backing"), key)
    os.mkdir(tmp_path / "mnt")
    with mount_in(tmp_path, key) as m:
        mount_guard(m)
        for rel, data in tree.items():
            with open(m.path(rel), "rb") as f:
                assert f.read() == data, rel
        assert sorted(os.listdir(m.path("app"))) == ["default.realm", "empty.realm"]


def test_rekey_and_mount_exclude_each_other(tmp_path, mount_guard, run):
    from realmfs.keys import config as configmod
    from realmfs.errors import ExitCode, RekeyInProgress
    from realmfs.keys.key import write_key_file
    write_tree(tmp_path / "src", {"a.realm": os.urandom(8192)})
    key = Key.generate()
    write_key_file(str(tmp_path / "k"), key)
    offline.encrypt(str(tmp_path / "src"), str(tmp_path / "backing"), key)
    os.mkdir(tmp_path / "mnt")
    with mount_in(tmp_path, key) as m:
        mount_guard(m)
        refused = run("rekey", tmp_path / "backing", "--key-file", tmp_path / "k",
                      "--new-key-file", tmp_path / "new.key")
        assert refused.code == ExitCode.LOCKED, refused
        assert not (tmp_path / "new.key").exists()
    config = configmod.load(str(tmp_path / "backing"))
    config.rekey = {"new_key_check": "00", "keyslots": [], "key_file": None, "dropped": []}
    configmod.save(str(tmp_path / "backing"), config, key)
    with pytest.raises(RekeyInProgress):
        with mount_in(tmp_path, key) as m:
            mount_guard(m)


def test_init_with_passphrase_then_mount_with_it(tmp_path, run):
    from realmfs.fs import mounttable
    from realmfs.errors import ExitCode
    os.mkdir(tmp_path / "backing")
    os.mkdir(tmp_path / "mnt")
    (tmp_path / "pw").write_text("open sesame\n")
    (tmp_path / "bad").write_text("open barley\n")
    assert run("init", tmp_path / "backing", "--passphrase-file", tmp_path / "pw").code == 0
    refused = run("mount", tmp_path / "backing", tmp_path / "mnt", "--passphrase-file", tmp_path / "bad")
    assert refused.code == ExitCode.WRONG_PASSPHRASE, refused
    mounted = run("mount", tmp_path / "backing", tmp_path / "mnt", "--passphrase-file", tmp_path / "pw")
    try:
        assert mounted.code == 0, mounted
        with open(tmp_path / "mnt" / "x.realm", "wb") as f:
            f.write(b"r" * 8192)
        with open(tmp_path / "mnt" / "y.txt", "wb") as f:
            f.write(b"hello")
    finally:
        if run("unmount", tmp_path / "mnt").code != 0 and mounttable.find_mount(str(tmp_path / "mnt")):
            fusermount.unmount(str(tmp_path / "mnt"), lazy=True)
    out = run("decrypt", tmp_path / "backing", tmp_path / "plain", "--passphrase-file", tmp_path / "pw")
    assert out.code == 0, out
    assert (tmp_path / "plain" / "x.realm").read_bytes() == b"r" * 8192
    assert (tmp_path / "plain" / "y.txt").read_bytes() == b"hello"
