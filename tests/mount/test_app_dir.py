"""A directory a Realm app wrote works through the mount (issue 11, part 1).

Realm Core encrypts the database and leaves its auxiliary files (``X.realm.lock``, the
``.note`` FIFO, the ``.management`` directory) unencrypted; realmfs must do the same:
plain-pattern files pass through byte for byte (read, write, mmap, truncate, locks),
the same bytes in BACKING and at the mountpoint, with or without a config. After
unmount every ``.realm`` file decrypts offline with the key and every auxiliary file is
plain, and unchanged where nothing wrote it. A directory without a config that holds
files nobody encrypted is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import mmap
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

import engine
from realmfs.keys import config as configmod
from realmfs.format import fileheader
from realmfs.errors import ExitCode, NotRecognized
from realmfs.keys.key import Key
from realmfs.format.layout import HEADER_SIZE, PAGE_SIZE
from realmfs.format.pagecipher import PageCipher
from realmfs.storage.pagefile import open_backing
from realmfs.format.detect import has_realmfs_header

from .conftest import Env, run_cli, slurp, spit, tree_bytes
from .realm_app_dir import KEY_A, SHARED_INFO_SIZE, build_app_dir, copy_vector_dir, shared_info


def _env_with_key(tmp_path, raw: bytes | None, init: bool) -> Env:
    env = Env(tmp_path, init=False)
    if raw is not None:
        env.key = Key(raw)
        env.cipher = PageCipher(raw)
        with open(env.key_file, "w") as f:
            f.write(env.key.hex() + "\n")
    if init:
        configmod.create(env.backing, env.key)
    return env


@pytest.fixture
def vector_env(tmp_path):
    """The shared vector directory (Realm Core's own bytes, key A), no config."""
    env = _env_with_key(tmp_path, KEY_A, init=False)
    env.files = copy_vector_dir(env.backing)
    try:
        yield env
    finally:
        env.cleanup()


def _realm_plaintext(env, name: str) -> bytes:
    """Offline: the backing file is pure Realm layout (no realmfs header) and decrypts."""
    with open(env.b(name), "rb") as f:
        assert not has_realmfs_header(f.read(HEADER_SIZE))
    f = open_backing(env.b(name), env.cipher, realm_layout=True, read_only=True)   # probes the key
    try:
        return f.read(0, f.size)
    finally:
        f.close()


def _specials(root: str) -> dict:
    """{relative path: kind} of every FIFO and directory under ``root``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISDIR(mode):
                found[os.path.relpath(path, root)] = "fifo" if stat.S_ISFIFO(mode) else "dir"
    return found


@contextlib.contextmanager
def _holder(path: str, how: str):
    """Another process holding a lock on ``path`` (flock, or an fcntl range) for the block."""
    code = ("import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "if sys.argv[2] == 'flock': fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "else: fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)\n"
            "print('locked', flush=True); sys.stdin.read()\n")
    with subprocess.Popen([sys.executable, "-c", code, path, how], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "locked"
            yield proc
        finally:
            proc.stdin.close()
            proc.wait(30)


def _initialise_lock_file(path: str, info: bytes) -> None:
    """What Realm Core's DB::open does as the first process: exclusive flock, truncate to 0,
    grow to sizeof(SharedInfo), write it through a shared mapping, then a shared flock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.ftruncate(fd, len(info))
        with mmap.mmap(fd, len(info), mmap.MAP_SHARED) as m:
            m[1:] = info[1:]
            m[0:1] = info[0:1]          # init_complete last
            m.flush()                   # msync(MS_SYNC)
        fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- Realm Core's own directory
def test_realm_core_directory_reads_as_realm_core_reads_it(vector_env):
    env = vector_env
    before = tree_bytes(env.backing)
    env.mount()
    assert sorted(os.listdir(env.mountpoint)) == ["default.realm", "default.realm.lock",
                                                  "default.realm.management"]
    assert slurp(env.m("default.realm")) == env.files["plain"]
    assert slurp(env.m("default.realm.lock")) == env.files["default.realm.lock"]
    assert os.stat(env.m("default.realm.lock")).st_size == SHARED_INFO_SIZE
    assert os.path.isdir(env.m("default.realm.management"))
    env.unmount()
    assert tree_bytes(env.backing) == before       # reading wrote nothing


def test_realm_core_directory_used_as_realm_core_uses_it(vector_env):
    """Locks, the lock file's re-initialisation through mmap, a commit through mmap,
    remount and reopen; after unmount the database decrypts offline and the lock file
    holds exactly the bytes written through the mount."""
    env = vector_env
    env.mount()
    lock = env.m("default.realm.lock")
    for how in ("flock", "lockf"):           # Realm Core flocks; fcntl ranges for other engines
        with _holder(lock, how):
            fd = os.open(lock, os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):
                    if how == "flock":
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    else:
                        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            finally:
                os.close(fd)
    info = shared_info(latest_version=3, initiator_pid=os.getpid(), file_size=20480, top_ref=0x4780)
    _initialise_lock_file(lock, info)
    assert slurp(lock) == info and slurp(env.b("default.realm.lock")) == info

    plain = bytearray(env.files["plain"])
    with open(env.m("default.realm"), "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        m[PAGE_SIZE + 100:PAGE_SIZE + 108] = b"COMMIT-1"
        m.flush()
    plain[PAGE_SIZE + 100:PAGE_SIZE + 108] = b"COMMIT-1"
    env.remount()
    assert slurp(env.m("default.realm")) == plain
    assert slurp(env.m("default.realm.lock")) == info
    env.unmount()
    assert _realm_plaintext(env, "default.realm") == plain
    assert slurp(env.b("default.realm.lock")) == info
    assert os.path.isdir(env.b("default.realm.management"))
    # and the offline tool says the same
    out = os.path.join(env.tmp, "out.realm")
    result = run_cli("decrypt", env.b("default.realm"), out, "--key-file", env.key_file)
    assert result.returncode == 0, result.stderr.decode()
    assert slurp(out) == plain


# ---------------------------------------------------------------------- directories built from the format
@pytest.mark.parametrize("init", [False, True], ids=["no-config", "config"])
@pytest.mark.parametrize("apple", [False, True], ids=["linux", "apple"])
def test_app_directory_passes_auxiliary_files_through(tmp_path, init, apple):
    env = _env_with_key(tmp_path, None, init=init)
    try:
        plain = os.urandom(5 * PAGE_SIZE)
        files = build_app_dir(env.backing, env.cipher, "default.realm", plain, apple=apple)
        os.makedirs(env.b("sub"))
        sub = build_app_dir(env.b("sub"), env.cipher, "other.realm", plain[:PAGE_SIZE], note=False)
        aux = {n: d for n, d in files.items() if d is not None}
        aux.update({f"sub/{n}": d for n, d in sub.items() if d is not None})
        specials = _specials(env.backing)
        env.mount()
        for name, data in aux.items():
            if data == "":
                assert stat.S_ISFIFO(os.stat(env.m(name)).st_mode), name
            else:
                assert slurp(env.m(name)) == data == slurp(env.b(name)), name
        assert slurp(env.m("default.realm")) == plain
        assert slurp(env.m("sub", "other.realm")) == plain[:PAGE_SIZE]
        assert _specials(env.mountpoint) == specials
        fd = os.open(env.m("default.realm.note"), os.O_RDWR | os.O_NONBLOCK)    # the notifier's use
        try:
            os.write(fd, b"\0")
            assert os.read(fd, 1) == b"\0"
        finally:
            os.close(fd)
        env.unmount()
        for name, data in aux.items():
            if data != "":
                assert slurp(env.b(name)) == data, name         # unchanged: nothing wrote it
        assert _specials(env.backing) == specials
        assert _realm_plaintext(env, "default.realm") == plain
        assert _realm_plaintext(env, "sub/other.realm") == plain[:PAGE_SIZE]
    finally:
        env.cleanup()


@pytest.mark.parametrize("init", [False, True], ids=["no-config", "config"])
def test_new_database_created_through_the_mount(tmp_path, init):
    """Create a database and its auxiliary files as Realm Core does, through the mount;
    remount and reopen; after unmount Realm Core could open it directly."""
    env = _env_with_key(tmp_path, None, init=init)
    try:
        if not init:      # an app directory already: the key is checked against it
            build_app_dir(env.backing, env.cipher, "default.realm", os.urandom(2 * PAGE_SIZE))
        env.mount()
        info = shared_info(latest_version=1, initiator_pid=os.getpid(), file_size=3 * PAGE_SIZE, top_ref=64)
        _initialise_lock_file(env.m("new.realm.lock"), info)
        os.mkdir(env.m("new.realm.management"))
        os.mkfifo(env.m("new.realm.note"))
        data = os.urandom(3 * PAGE_SIZE)
        with open(env.m("new.realm"), "wb") as f:
            f.write(data)
            os.fsync(f.fileno())
        spit(env.m("new.realm.management", "access_control.write.mx"), b"")
        env.remount()
        assert slurp(env.m("new.realm")) == data
        with open(env.m("new.realm"), "r+b") as f, mmap.mmap(f.fileno(), 0) as m:   # reopened, written
            m[10:20] = b"0123456789"
            m.flush()
        data = data[:10] + b"0123456789" + data[20:]
        assert slurp(env.m("new.realm.lock")) == info
        env.unmount()
        assert _realm_plaintext(env, "new.realm") == data
        assert slurp(env.b("new.realm.lock")) == info                 # plain, as written
        assert slurp(env.b("new.realm.management", "access_control.write.mx")) == b""
        assert stat.S_ISFIFO(os.lstat(env.b("new.realm.note")).st_mode)
        env.mount()                                                   # and it mounts again
        assert slurp(env.m("new.realm")) == data
        env.unmount()
    finally:
        env.cleanup()


def test_plain_files_are_the_same_bytes_as_a_plain_directory(tmp_path):
    """Differential: the same writes, truncates and mmap stores on a plain-pattern file at
    the mountpoint and on a file in a plain directory give the same bytes, also in BACKING."""
    env = _env_with_key(tmp_path, None, init=True)
    try:
        env.mount()
        reference = os.path.join(env.tmp, "reference.realm.log")
        rng = __import__("random").Random(11)
        paths = [env.m("x.realm.log"), reference]
        fds = [os.open(p, os.O_RDWR | os.O_CREAT, 0o644) for p in paths]
        try:
            for _ in range(200):
                op = rng.choice(["write", "write", "truncate", "mmap"])
                offset, length = rng.randrange(0, 3 * PAGE_SIZE), rng.randrange(1, 9000)
                blob = rng.randbytes(length)
                for fd in fds:
                    if op == "write":
                        os.pwrite(fd, blob, offset)
                    elif op == "truncate":
                        os.ftruncate(fd, offset)
                    elif os.fstat(fd).st_size:
                        with mmap.mmap(fd, os.fstat(fd).st_size) as m:
                            at = offset % len(m)
                            piece = blob[:len(m) - at]
                            m[at:at + len(piece)] = piece
                            m.flush()
            sizes = {os.fstat(fd).st_size for fd in fds}
            assert len(sizes) == 1
        finally:
            for fd in fds:
                os.close(fd)
        assert slurp(env.m("x.realm.log")) == slurp(reference) == slurp(env.b("x.realm.log"))
        env.unmount()
        assert slurp(env.b("x.realm.log")) == slurp(reference)
    finally:
        env.cleanup()


# ---------------------------------------------------------------------- engines in an app directory
DOGS = {"Dog": {"name": "str primary_key", "age": "int"}}


def _engine_session(path: str, first: bool) -> int:
    """One process's use of the engine database; returns its count of dogs. A function of
    its own: the engine's mappings (each with a dup of the fd) go with their last user."""
    with engine.open(path, schema=DOGS) as db:
        with db.write() as tx:
            if first:
                for i in range(50):
                    tx.create("Dog", {"name": f"d{i}", "age": i})
            else:
                tx.update("Dog", "d7", {"age": 70})
        with db.read() as snap:
            count = snap.count("Dog")
            assert snap.get("Dog", "d7")["age"] == (7 if first else 70)
        assert db.verify() == []
    return count


def _sqlite_session(path: str, first: bool) -> tuple:
    db = sqlite3.connect(path)
    try:
        if first:
            db.execute("create table t (k integer primary key, v text)")
            db.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(500)])
            db.commit()
        return db.execute("select count(*), sum(k) from t").fetchone()
    finally:
        db.close()


def test_engine_and_sqlite_in_an_app_directory(vector_env):
    """The engine (its database a .realm file: Realm layout, its lock file plain) and SQLite
    beside Realm Core's files; fcntl locks on the plain lock file from two processes."""
    env = vector_env
    env.mount()
    assert _engine_session(env.m("dogs.realm"), first=True) == 50
    assert _sqlite_session(env.m("notes.sqlite"), first=True) == (500, sum(range(500)))
    with _holder(env.m("dogs.realm.lock"), "lockf"):     # another process has the writer lock
        fd = os.open(env.m("dogs.realm.lock"), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        finally:
            os.close(fd)
    gc.collect()
    env.remount()
    assert _engine_session(env.m("dogs.realm"), first=False) == 50
    assert _sqlite_session(env.m("notes.sqlite"), first=False) == (500, sum(range(500)))
    gc.collect()
    lock_bytes = slurp(env.m("dogs.realm.lock"))
    assert slurp(env.m("default.realm")) == env.files["plain"]
    env.unmount()
    assert slurp(env.b("dogs.realm.lock")) == lock_bytes            # plain: the same bytes
    assert slurp(env.b("default.realm.lock")) == env.files["default.realm.lock"]   # nothing wrote it
    assert slurp(env.b("default.realm")) == env.files["default.realm"]
    assert len(_realm_plaintext(env, "dogs.realm")) % PAGE_SIZE == 0
    with open(env.b("notes.sqlite"), "rb") as f:
        assert fileheader.unpack_page(f.read(HEADER_SIZE), env.cipher.mac_message).size > 0
    assert not env.backing_contains(b"SQLite format 3")
    env.mount()                                                     # Realm-layout engine file reopens
    assert _engine_session(env.m("dogs.realm"), first=False) == 50
    gc.collect()
    env.unmount()


# ---------------------------------------------------------------------- renames across kinds
@pytest.mark.daemon_warnings(r"refused \(EXDEV\)")
def test_rename_between_plain_and_encrypted_names(tmp_path):
    env = _env_with_key(tmp_path, None, init=True)
    try:
        env.mount()
        data = os.urandom(10_000)
        spit(env.m("a.bin"), data)
        os.rename(env.m("a.bin"), env.m("a.realm.lock"))            # header -> plain
        assert slurp(env.b("a.realm.lock")) == data == slurp(env.m("a.realm.lock"))
        os.rename(env.m("a.realm.lock"), env.m("a.realm"))          # plain -> realm
        padded = data + bytes(-len(data) % PAGE_SIZE)
        assert slurp(env.m("a.realm")) == padded
        os.rename(env.m("a.realm"), env.m("b.realm.log"))           # realm -> plain
        assert slurp(env.b("b.realm.log")) == padded
        os.rename(env.m("b.realm.log"), env.m("b.bin"))             # plain -> header
        assert slurp(env.m("b.bin")) == padded
        assert env.decrypt("b.bin") == padded
        # a directory whose files would change kind is copied by mv, not renamed
        os.mkdir(env.m("d"))
        spit(env.m("d", "f"), b"secret")
        with pytest.raises(OSError) as caught:
            os.rename(env.m("d"), env.m("x.realm.management"))
        assert caught.value.errno == errno.EXDEV
        os.mkdir(env.m("empty"))
        os.rename(env.m("empty"), env.m("y.realm.management"))      # empty: nothing changes kind
        spit(env.m("y.realm.management", "lock.fifo.data"), b"plain")
        assert slurp(env.b("y.realm.management", "lock.fifo.data")) == b"plain"
        with open(env.m("b.bin"), "rb"):                             # open: EXDEV, nothing moves
            with pytest.raises(OSError) as caught:
                os.rename(env.m("b.bin"), env.m("c.realm.lock"))
            assert caught.value.errno == errno.EXDEV
        env.unmount()
        assert not env.backing_contains(data[:64]) and not env.backing_contains(b"secret")
    finally:
        env.cleanup()


# ---------------------------------------------------------------------- config and refusals
def test_plain_patterns_come_from_the_config(tmp_path):
    env = Env(tmp_path, init=False)
    try:
        configmod.create(env.backing, env.key, plain_patterns=["*.txt"])
        loaded = configmod.load(env.backing)
        configmod.unlock(loaded, env.key)
        assert loaded.plain_globs == ["*.txt"]
        env.mount()
        spit(env.m("readme.txt"), b"hello")
        spit(env.m("x.realm.lock"), b"not plain here")
        env.unmount()
        assert slurp(env.b("readme.txt")) == b"hello"
        assert has_realmfs_header(slurp(env.b("x.realm.lock"))[:HEADER_SIZE])
    finally:
        env.cleanup()


def test_default_config_stays_readable_by_its_mac(tmp_path):
    """A config with the default patterns stores none, so configs written before plain
    patterns existed keep their MAC and get the default."""
    env = Env(tmp_path)
    with open(configmod.config_path(env.backing)) as f:
        assert "plain_patterns" not in f.read()
    loaded = configmod.load(env.backing)
    configmod.unlock(loaded, env.key)
    assert loaded.kind_of("/a/b.realm.management/lock.fifo") == configmod.KIND_PLAIN


@pytest.mark.parametrize("how", ["api", "cli"])
def test_a_directory_without_config_holding_unencrypted_files_is_refused(vector_env, how):
    env = vector_env
    spit(env.b("notes.txt"), b"a plain note\n")
    os.makedirs(env.b("deep"))
    spit(env.b("deep", "photo.jpg"), os.urandom(3 * PAGE_SIZE))
    spit(env.b("x.realm.log"), b"plain by its name: accepted\n")
    before = tree_bytes(env.backing)
    if how == "api":
        with pytest.raises(NotRecognized) as caught:
            env.mount()
        message = str(caught.value)
    else:
        result = env.mount_cli()
        assert result.returncode == ExitCode.NOT_RECOGNIZED, result
        message = result.stderr.decode().strip()
        assert len(message.splitlines()) == 1 and message.startswith("realmfs: ")
    assert "notes.txt" in message and "deep/photo.jpg" in message and "x.realm.log" not in message, message
    assert "realmfs encrypt" in message and "realmfs init" in message
    assert env.current is None and tree_bytes(env.backing) == before


def test_verify_says_not_encrypted_for_plain_files(vector_env):
    env = vector_env
    spit(env.b("notes.txt"), b"a plain note\n")
    for name in ("notes.txt", "default.realm.lock"):
        result = run_cli("verify", env.b(name), "--key-file", env.key_file)
        assert result.returncode == ExitCode.NOT_RECOGNIZED, result
        assert "not encrypted" in result.stderr.decode()
    os.unlink(env.b("notes.txt"))
    result = run_cli("verify", env.backing, "--key-file", env.key_file)   # the lock file is not checked
    assert result.returncode == 0, result
    assert "default.realm.lock" not in result.stdout.decode()


def test_offline_tools_keep_auxiliary_files_as_they_are(vector_env):
    """decrypt of an app directory copies its lock file as it is; encrypt of a plain app
    directory leaves it plain and the result mounts with the same bytes."""
    env = vector_env
    lock = env.files["default.realm.lock"]
    out, enc = os.path.join(env.tmp, "out"), os.path.join(env.tmp, "enc")
    result = run_cli("decrypt", env.backing, out, "--key-file", env.key_file)
    assert result.returncode == 0, result.stderr.decode()
    assert slurp(os.path.join(out, "default.realm")) == env.files["plain"]
    assert slurp(os.path.join(out, "default.realm.lock")) == lock
    assert os.path.isdir(os.path.join(out, "default.realm.management"))
    result = run_cli("encrypt", out, enc, "--key-file", env.key_file)
    assert result.returncode == 0, result.stderr.decode()
    assert slurp(os.path.join(enc, "default.realm.lock")) == lock
    env.backing = enc
    assert _realm_plaintext(env, "default.realm") == env.files["plain"]
    env.mount()
    assert slurp(env.m("default.realm.lock")) == lock
    assert slurp(env.m("default.realm")) == env.files["plain"]
    env.unmount()


@pytest.mark.daemon_warnings(r"was encrypted by an older realmfs: decrypted it in place")
def test_plain_names_an_older_realmfs_encrypted_are_decrypted_at_mount(tmp_path):
    """Before plain patterns, realmfs stored X.realm.lock in the header layout; the next
    mount decrypts it in place (mode and times kept), a read-only mount leaves it alone,
    and Realm Core's own plain bytes are never touched."""
    env = _env_with_key(tmp_path, None, init=True)
    try:
        old = shared_info(latest_version=9, initiator_pid=77, file_size=PAGE_SIZE, top_ref=64)
        f = open_backing(env.b("x.realm.lock"), env.cipher, realm_layout=False, create=True)
        try:
            f.write(0, old)
            f.fsync()
        finally:
            f.close()
        os.chmod(env.b("x.realm.lock"), 0o640)
        os.utime(env.b("x.realm.lock"), ns=(1_000_000_000, 2_000_000_000))
        mine = shared_info(latest_version=2, initiator_pid=78, file_size=PAGE_SIZE, top_ref=64)
        spit(env.b("y.realm.lock"), mine)
        env.mount(read_only=True)
        assert has_realmfs_header(slurp(env.b("x.realm.lock"))[:HEADER_SIZE])
        env.unmount()
        env.mount()
        assert slurp(env.m("x.realm.lock")) == old == slurp(env.b("x.realm.lock"))
        assert slurp(env.m("y.realm.lock")) == mine == slurp(env.b("y.realm.lock"))
        st = os.stat(env.b("x.realm.lock"))
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == 2_000_000_000
        assert [n for n in os.listdir(env.backing) if n.startswith(".realmfs-rename-")] == []
        env.unmount()
    finally:
        env.cleanup()


def test_init_takes_plain_patterns(tmp_path):
    env = Env(tmp_path, init=False)
    try:
        result = run_cli("init", "--key-file", env.key_file, "--plain-pattern", "*.txt",
                         "--plain-pattern", "cache", env.backing)
        assert result.returncode == 0, result.stderr.decode()
        assert "*.txt cache stay unencrypted" in result.stdout.decode()
        config = configmod.load(env.backing)
        configmod.unlock(config, env.key)
        assert config.kind_of("a/b.txt") == config.kind_of("cache/x.bin") == configmod.KIND_PLAIN
        assert config.kind_of("x.realm.lock") == configmod.KIND_HEADER
        other = os.path.join(env.tmp, "none")
        os.mkdir(other)
        result = run_cli("init", "--key-file", env.key_file, "--plain-pattern", "", other)
        assert result.returncode == 0 and "no files stay unencrypted" in result.stdout.decode()
        config = configmod.load(other)
        assert config.kind_of("x.realm.management/lock.fifo") == configmod.KIND_HEADER
    finally:
        env.cleanup()
