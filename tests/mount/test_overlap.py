"""Backing directories never overlap while in use (issue 10, item 7).

Two daemons on a directory and one inside it would both write the inner files, each
counting IVs on its own: one (key, IV) for two plaintexts. Both nestings, through
symlinked paths too, and the same directory, are refused with exit 6 naming the other
mount; so are a rekey over a mounted directory inside, a lock that races past the
first check, and ``realmfs init`` inside a backing directory.
"""

from __future__ import annotations

import os

import pytest

from realmfs import api
from realmfs.storage.backinglock import BackingLock
from realmfs.errors import BackingLocked, ExitCode
from realmfs.keys.key import Key

from .conftest import STARTED_MOUNTPOINTS, Env, force_unmount, run_cli, slurp, spit, tree_bytes


def _mount_cli(backing: str, mountpoint: str, key_file: str, log_file: str):
    """``realmfs mount`` expected to be refused; unmounted at once if it was not."""
    STARTED_MOUNTPOINTS.add(mountpoint)
    result = run_cli("mount", "--key-file", key_file, "--log-file", log_file, backing, mountpoint)
    if result.returncode == 0:
        force_unmount(mountpoint)
    return result


def _env(root) -> Env:
    os.makedirs(root, exist_ok=True)
    return Env(root)


@pytest.fixture
def nest(tmp_path):
    """``outer``: an Env; ``inner``: an Env whose BACKING is a subdirectory of outer's."""
    outer = _env(tmp_path / "o")
    inner_root = os.path.join(outer.backing, "sub")
    os.mkdir(inner_root)
    inner = Env(inner_root)
    inner.mountpoint = str(tmp_path / "inner-mnt")     # not inside the outer BACKING
    os.mkdir(inner.mountpoint)
    try:
        yield outer, inner
    finally:
        inner.cleanup()
        outer.cleanup()


def _refused(result, other_mountpoint: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == ExitCode.LOCKED, stderr
    assert other_mountpoint in stderr and "overlap" in stderr, stderr
    assert "Traceback" not in stderr


def test_a_directory_inside_a_mounted_one_is_refused(nest, tmp_path):
    outer, inner = nest
    outer.mount()
    spit(outer.m("sub", "x"), b"outer writes")
    before = tree_bytes(inner.backing)
    _refused(_mount_cli(inner.backing, inner.mountpoint, inner.key_file, inner.log_file), outer.mountpoint)
    os.symlink(inner.backing, tmp_path / "alias")          # the same directory under another name
    _refused(_mount_cli(str(tmp_path / "alias"), inner.mountpoint, inner.key_file, inner.log_file),
             outer.mountpoint)
    with pytest.raises(BackingLocked, match="overlap"):
        with api.mounted(inner.backing, inner.mountpoint, inner.key):
            pass
    assert tree_bytes(inner.backing) == before and os.listdir(inner.mountpoint) == []
    assert slurp(outer.m("sub", "x")) == b"outer writes"       # the first mount is untouched


def test_a_parent_of_a_mounted_directory_is_refused(nest, tmp_path):
    outer, inner = nest
    inner.mount()
    spit(inner.m("x"), b"inner writes")
    _refused(_mount_cli(outer.backing, outer.mountpoint, outer.key_file, outer.log_file), inner.mountpoint)
    os.symlink(outer.backing, tmp_path / "alias")
    _refused(_mount_cli(str(tmp_path / "alias"), outer.mountpoint, outer.key_file, outer.log_file),
             inner.mountpoint)
    inner.unmount()                        # a holder further down is found too
    deep = _env(os.path.join(inner.backing, "d1", "d2"))
    deep.mountpoint = str(tmp_path / "deep-mnt")
    os.mkdir(deep.mountpoint)
    try:
        deep.mount()
        _refused(_mount_cli(outer.backing, outer.mountpoint, outer.key_file, outer.log_file), deep.mountpoint)
    finally:
        deep.cleanup()
    outer.mount()                          # nothing held any more: accepted
    assert "backing" in os.listdir(outer.m("sub", "backing", "d1", "d2"))


def test_the_same_directory_is_still_refused_also_through_a_symlink(env, tmp_path):
    env.mount()
    other = tmp_path / "mnt2"
    other.mkdir()
    result = _mount_cli(env.backing, str(other), env.key_file, env.log_file)
    assert result.returncode == ExitCode.LOCKED and env.mountpoint in result.stderr.decode()
    os.symlink(env.backing, tmp_path / "alias")
    result = _mount_cli(str(tmp_path / "alias"), str(other), env.key_file, env.log_file)
    assert result.returncode == ExitCode.LOCKED and env.mountpoint in result.stderr.decode()


def test_rekey_and_repair_locks_count_as_holders(nest, tmp_path):
    outer, inner = nest
    with BackingLock(outer.backing, "(realmfs rekey running)"):
        result = _mount_cli(inner.backing, inner.mountpoint, inner.key_file, inner.log_file)
        assert result.returncode == ExitCode.LOCKED and "rekey running" in result.stderr.decode()
    inner.mount()
    spit(inner.m("f"), b"data")
    result = run_cli("rekey", outer.backing, "--key-file", outer.key_file,
                     "--new-key-file", str(tmp_path / "new.key"))
    assert result.returncode == ExitCode.LOCKED, result.stderr.decode()
    assert inner.mountpoint in result.stderr.decode()
    assert slurp(inner.m("f")) == b"data"


def test_a_lock_that_races_past_the_first_check_gives_up(nest):
    """BackingLock checks again after winning its own flock (two mounts started together)."""
    outer, inner = nest
    with BackingLock(inner.backing, "/somewhere/inner"):
        with pytest.raises(BackingLocked, match="/somewhere/inner"):
            BackingLock(outer.backing, "/somewhere/outer").acquire()
        assert not os.path.exists(outer.b(".realmfs.lock"))     # given up and removed
    with BackingLock(outer.backing, "/somewhere/outer"):
        with pytest.raises(BackingLocked, match="/somewhere/outer"):
            BackingLock(inner.backing, "/somewhere/inner").acquire()
        assert not os.path.exists(inner.b(".realmfs.lock"))


def test_init_inside_a_backing_directory_is_refused(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(Key.generate().hex() + "\n")
    outer = tmp_path / "outer"
    (outer / "a" / "b").mkdir(parents=True)
    assert run_cli("init", str(outer), "--key-file", str(key_file)).returncode == 0
    result = run_cli("init", str(outer / "a" / "b"), "--key-file", str(key_file))
    assert result.returncode == ExitCode.BAD_PATH, result.stderr.decode()
    assert str(outer) in result.stderr.decode() and "config" in result.stderr.decode()
    os.symlink(outer / "a", tmp_path / "alias")
    result = run_cli("init", str(tmp_path / "alias" / "b"), "--key-file", str(key_file))
    assert result.returncode == ExitCode.BAD_PATH
    assert os.listdir(outer / "a" / "b") == []
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    assert run_cli("init", str(sibling), "--key-file", str(key_file)).returncode == 0


def test_init_inside_realm_core_ciphertext_or_a_held_directory_is_refused(tmp_path):
    """A directory of Realm Core files never initialised, and one in use without a config."""
    key = Key.generate()
    key_file = tmp_path / "key"
    key_file.write_text(key.hex() + "\n")
    realm_dir = tmp_path / "realmcore"
    (realm_dir / "sub").mkdir(parents=True)
    env = _env(tmp_path / "e")
    with api.mounted(env.backing, env.mountpoint, env.key, log_file=env.log_file) as m:
        STARTED_MOUNTPOINTS.add(env.mountpoint)
        spit(env.m("db.realm"), os.urandom(3 * 4096))
        del m
    os.rename(env.b("db.realm"), realm_dir / "db.realm")          # Realm Core's own shape
    result = run_cli("init", str(realm_dir / "sub"), "--key-file", str(key_file))
    assert result.returncode == ExitCode.BAD_PATH and "db.realm" in result.stderr.decode()
    held = tmp_path / "held"
    (held / "sub").mkdir(parents=True)
    with BackingLock(str(held), "/somewhere/else"):
        result = run_cli("init", str(held / "sub"), "--key-file", str(key_file))
    assert result.returncode == ExitCode.LOCKED and "in use" in result.stderr.decode()
    assert os.listdir(realm_dir / "sub") == [] and os.listdir(held / "sub") == []
