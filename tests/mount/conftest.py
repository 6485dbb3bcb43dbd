"""Mount fixtures: real FUSE mounts of a fresh BACKING in tmp_path, always unmounted.

* ``env``: an initialised BACKING (config written), an empty MOUNTPOINT, a key
  generated for the test (also as a key file), helpers to run the CLI and to
  mount through ``realmfs.mounted`` or the CLI; nothing mounted yet.
* ``mnt``: ``env`` mounted through the Python API.
* ``cli_mnt``: ``env`` mounted through ``realmfs mount`` (daemonized).
* ``user``: an unprivileged account for the session (unprivileged.py); ``user_env``:
  an ``env`` that belongs to it, in a directory it can reach, whose CLI runs as it.

Teardown always unmounts, even after a failure: ``fusermount -u``, then ``-uz``,
then SIGKILL of the daemon, by pid, and only daemons this suite started. A
session check fails the run if any realmfs mount or daemon started here is left.
A missing /dev/fuse or fusermount is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from realmfs import api
from realmfs.keys import config
from realmfs.fs import fusermount
from realmfs.fs import mounttable
from realmfs.storage.backinglock import pid_alive, read_owner
from realmfs.keys.key import Key
from realmfs.format.pagecipher import PageCipher
from realmfs.storage.pagefile import open_backing
from tests.fusecheck import fuse_problem
from tests.mount.unprivileged import Unprivileged

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STARTED_PIDS: set[int] = set()          # daemons this suite started (killed only by pid)
STARTED_MOUNTPOINTS: set[str] = set()


@pytest.fixture(scope="session", autouse=True)
def fuse_required_and_nothing_left():
    problem = fuse_problem()
    if problem:
        pytest.fail(f"the mount tests need FUSE: {problem}", pytrace=False)
    before = {e.mountpoint for e in mounttable.realmfs_mounts()}
    yield
    left = [e.mountpoint for e in mounttable.realmfs_mounts()
            if e.mountpoint not in before and e.mountpoint in STARTED_MOUNTPOINTS]
    alive = [pid for pid in STARTED_PIDS if pid_alive(pid)]
    for mountpoint in left:
        force_unmount(mountpoint)
    for pid in alive:
        _kill(pid)
    assert not left and not alive, f"left behind: mounts {left}, daemons {alive}"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(200):
        if not pid_alive(pid):
            return
        time.sleep(0.01)


def force_unmount(mountpoint: str, pid: int | None = None) -> None:
    """Unmount by any means; kill the daemon ``pid`` (one we started) if it lingers."""
    if mounttable.find_mount(mountpoint) is not None:
        if fusermount.unmount(mountpoint).returncode:
            fusermount.unmount(mountpoint, lazy=True)
    if pid and pid in STARTED_PIDS:
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(pid):
            _kill(pid)


def run_cli(*args, input: bytes | None = None, env: dict | None = None, timeout: float = 60,
            user: Unprivileged | None = None):
    """``realmfs ARGS`` in a new process (as ``user`` when given)."""
    full_env = dict(os.environ)
    full_env.pop("REALMFS_KEY", None)
    full_env["PYTHONPATH"] = REPO
    full_env.update(env or {})
    command = [sys.executable, "-m", "realmfs", *args]
    if user is not None:
        return user.run(command, input=input, env=full_env, timeout=timeout, cwd="/")
    return subprocess.run(command, input=input, capture_output=True,
                          env=full_env, timeout=timeout, cwd="/")


def tree_bytes(root: str) -> dict:
    """Every entry under ``root`` with its bytes (files) or kind: to prove 'unchanged'."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            result[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                result[os.path.relpath(path, root)] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    result[os.path.relpath(path, root)] = f.read()
            else:
                result[os.path.relpath(path, root)] = "special"
    return result


class Env:
    """One test's BACKING, MOUNTPOINT and key, and ways to mount them."""

    def __init__(self, tmp_path, realm_pattern: str = "*.realm", init: bool = True,
                 user: Unprivileged | None = None):
        self.tmp = str(tmp_path)
        self.backing = os.path.join(self.tmp, "backing")
        self.mountpoint = os.path.join(self.tmp, "mnt")
        os.mkdir(self.backing)
        os.mkdir(self.mountpoint)
        self.key = Key.generate()
        self.key_file = os.path.join(self.tmp, "key")
        with open(self.key_file, "w") as f:
            f.write(self.key.hex() + "\n")
        os.chmod(self.key_file, 0o600)
        self.cipher = PageCipher(self.key.raw)
        self.log_file = os.path.join(self.tmp, "daemon.log")
        self.realm_pattern = realm_pattern
        if init:
            config.create(self.backing, self.key, realm_pattern=realm_pattern)
        self.current: api.Mount | None = None
        self._context = None
        self.pids: list[int] = []
        self.user = user           # the CLI runs as this user, who owns every file here
        if user is not None:
            open(self.log_file, "a").close()    # the daemon runs as the user: its log too
            for path in (self.tmp, self.backing, self.mountpoint, self.key_file, self.log_file):
                os.chown(path, user.uid, user.gid)
            for name in os.listdir(self.backing):
                os.chown(self.b(name), user.uid, user.gid)

    # -- paths
    def m(self, *parts) -> str:
        return os.path.join(self.mountpoint, *parts)

    def b(self, *parts) -> str:
        return os.path.join(self.backing, *parts)

    # -- mounting
    def mount(self, **kwargs) -> api.Mount:
        assert self.current is None, "already mounted"
        STARTED_MOUNTPOINTS.add(self.mountpoint)
        kwargs.setdefault("log_file", self.log_file)
        context = api.mounted(self.backing, self.mountpoint, self.key, **kwargs)
        self.current = context.__enter__()
        self._context = context
        self._track(self.current.pid)
        return self.current

    def mount_cli(self, *extra) -> subprocess.CompletedProcess:
        assert self.current is None, "already mounted"
        STARTED_MOUNTPOINTS.add(self.mountpoint)
        result = run_cli("mount", "--key-file", self.key_file, "--log-file", self.log_file, *extra,
                         self.backing, self.mountpoint, user=self.user)
        if result.returncode == 0:
            owner = read_owner(self.backing)
            pid = int(owner["pid"])
            self._track(pid)
            self.current = api.Mount(self.backing, self.mountpoint, pid, self.log_file)
        return result

    def _track(self, pid: int) -> None:
        STARTED_PIDS.add(pid)
        self.pids.append(pid)

    def unmount(self) -> None:
        """Clean unmount through realmfs (seals); asserts the daemon is gone."""
        assert self.current is not None
        mount, self.current = self.current, None
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(None, None, None)
        else:
            mount.unmount()
        assert not pid_alive(mount.pid)
        assert mounttable.find_mount(self.mountpoint) is None

    def remount(self, **kwargs) -> api.Mount:
        self.unmount()
        return self.mount(**kwargs)

    def forget_mount(self) -> None:
        """The mount went away by other means (killed daemon, fusermount): clean up state."""
        if self.current is not None:
            self.current.active = False
        if self._context is not None:
            self._context.gen.close()
        self.current, self._context = None, None

    def cleanup(self) -> None:
        pid = self.current.pid if self.current else None
        if self.current is not None:
            self.current.active = False       # the context's own unmount becomes a no-op
        if self._context is not None:
            self._context.gen.close()
        self.current, self._context = None, None
        if mounttable.find_mount(self.mountpoint) is not None:
            force_unmount(self.mountpoint, pid)
        for pid in self.pids:
            force_unmount(self.mountpoint, pid)

    # -- offline views of BACKING
    def decrypt(self, name: str) -> bytes:
        """Plaintext of a backing file, decrypted offline (no FUSE)."""
        path = self.b(name)
        realm = config.Config(realm_pattern=self.realm_pattern).is_realm_file(name)
        f = open_backing(path, self.cipher, realm_layout=realm, read_only=True, key_checked=True)
        try:
            return f.read(0, f.size)
        finally:
            f.close()

    def backing_contains(self, marker: bytes) -> list[str]:
        hits = []
        for dirpath, _dirs, files in os.walk(self.backing):
            for name in files:
                path = os.path.join(dirpath, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        if marker in f.read():
                            hits.append(path)
        return hits


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.cleanup()


@pytest.fixture(scope="session")
def user():
    """An unprivileged user who can mount (see unprivileged.py); removed after the session."""
    with Unprivileged(REPO) as account:
        yield account


@pytest.fixture
def user_env(user):
    """An Env that belongs to ``user`` (its CLI runs as the user), not yet mounted."""
    top = tempfile.mkdtemp(prefix="realmfs-user-")     # pytest's tmp_path is root's alone
    os.chmod(top, 0o755)
    e = Env(top, user=user)
    try:
        yield e
    finally:
        e.cleanup()
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def mnt(env):
    env.mount()
    return env


@pytest.fixture
def cli_mnt(env):
    result = env.mount_cli()
    assert result.returncode == 0, result.stderr.decode()
    return env


def slurp(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def spit(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def kill_daemon(pid: int, timeout: float = 20) -> None:
    """SIGKILL a daemon this suite started and wait until it is really gone (its flock too)."""
    assert pid in STARTED_PIDS
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(pid)
