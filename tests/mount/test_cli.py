"""The lifecycle through the real command line: refusals, exit codes, messages, sealing."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from realmfs.fs import fusermount
from realmfs.fs import launcher, mounttable
from realmfs.storage.backinglock import pid_alive, read_owner
from realmfs.errors import ExitCode
from realmfs.keys.key import Key
from realmfs.format.pagecipher import PageCipher
from realmfs.storage.pagefile import open_backing

from .conftest import REPO, STARTED_MOUNTPOINTS, STARTED_PIDS, Env, kill_daemon, run_cli, slurp, spit, tree_bytes


def _err(result) -> str:
    return result.stderr.decode()


def _wait_gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not pid_alive(pid)


def test_init_refuses_twice_and_bad_paths(tmp_path):
    env = Env(tmp_path, init=False)
    result = run_cli("init", env.backing, "--key-file", env.key_file)
    assert result.returncode == 0, _err(result)
    assert os.path.exists(env.b(".realmfs.conf"))
    result = run_cli("init", env.backing, "--key-file", env.key_file)
    assert result.returncode == ExitCode.EXISTS
    result = run_cli("init", str(tmp_path / "nope"), "--key-file", env.key_file)
    assert result.returncode == ExitCode.BAD_PATH and "does not exist" in _err(result)
    os.mkdir(env.backing + "2")
    result = run_cli("init", env.backing + "2")                   # no key given
    assert result.returncode == ExitCode.BAD_KEY
    assert os.listdir(env.backing + "2") == []


def test_cli_mount_unmount_and_key_sources(env):
    result = env.mount_cli()
    assert result.returncode == 0, _err(result)
    spit(env.m("f.txt"), b"via cli")
    result = run_cli("status")
    assert result.returncode == 0
    line = [l for l in result.stdout.decode().splitlines() if env.mountpoint in l]
    assert line and str(env.current.pid) in line[0] and env.backing in line[0]
    env.unmount()
    # $REALMFS_KEY, then --key-stdin
    result = run_cli("mount", "--log-file", env.log_file, env.backing, env.mountpoint,
                     env={"REALMFS_KEY": env.key.hex()})
    assert result.returncode == 0, _err(result)
    env._track(int(read_owner(env.backing)["pid"]))
    assert slurp(env.m("f.txt")) == b"via cli"
    result = run_cli("umount", env.mountpoint)
    assert result.returncode == 0, _err(result)
    result = run_cli("mount", "--key-stdin", "--log-file", env.log_file, env.backing, env.mountpoint,
                     input=env.key.hex().encode())
    assert result.returncode == 0, _err(result)
    env._track(int(read_owner(env.backing)["pid"]))
    result = run_cli("unmount", env.mountpoint)
    assert result.returncode == 0, _err(result)
    assert mounttable.find_mount(env.mountpoint) is None
    result = run_cli("unmount", env.mountpoint)
    assert result.returncode == ExitCode.BAD_PATH and "not a realmfs mount" in _err(result)


def test_wrong_key_refused_backing_unchanged(env):
    env.mount()
    spit(env.m("data.bin"), b"secret" * 1000)
    env.unmount()
    before = tree_bytes(env.backing)
    other = os.path.join(env.tmp, "other.key")
    spit(other, Key.generate().hex().encode())
    os.chmod(other, 0o600)
    result = run_cli("mount", "--key-file", other, env.backing, env.mountpoint)
    assert result.returncode == ExitCode.WRONG_KEY, _err(result)
    assert "wrong key" in _err(result) and len(_err(result).strip().splitlines()) == 1
    assert tree_bytes(env.backing) == before
    assert mounttable.find_mount(env.mountpoint) is None


def test_wrong_key_without_config_checks_page_zero(tmp_path):
    env = Env(tmp_path, init=False)           # a directory made by Realm Core: no config
    f = open_backing(env.b("app.realm"), PageCipher(env.key.raw), realm_layout=True, create=True)
    f.write(0, b"realm page zero" * 300)
    f.close()
    before = tree_bytes(env.backing)
    other = os.path.join(env.tmp, "other.key")
    spit(other, Key.generate().hex().encode())
    os.chmod(other, 0o600)
    try:
        result = run_cli("mount", "--key-file", other, env.backing, env.mountpoint)
        assert result.returncode == ExitCode.WRONG_KEY, _err(result)
        assert tree_bytes(env.backing) == before
        result = env.mount_cli()
        assert result.returncode == 0, _err(result)
        assert slurp(env.m("app.realm")).startswith(b"realm page zero")
        env.unmount()
    finally:
        env.cleanup()


def test_plain_realm_file_refused_and_named(env):
    plain = bytearray(4096)
    plain[16:20] = b"T-DB"
    spit(env.b("plain.realm"), bytes(plain))
    before = tree_bytes(env.backing)
    result = env.mount_cli()
    assert result.returncode == ExitCode.NOT_ENCRYPTED, _err(result)
    assert "plain.realm" in _err(result) and "realmfs encrypt" in _err(result)
    assert tree_bytes(env.backing) == before


def test_bad_paths(env, tmp_path):
    cases = [
        (str(tmp_path / "missing"), env.mountpoint, "does not exist"),
        (env.key_file, env.mountpoint, "not a directory"),
        (env.backing, str(tmp_path / "missing-mp"), "does not exist"),
        (env.backing, env.key_file, "not a directory"),
    ]
    for backing, mountpoint, words in cases:
        result = run_cli("mount", "--key-file", env.key_file, backing, mountpoint)
        assert result.returncode == ExitCode.BAD_PATH, (backing, mountpoint, _err(result))
        assert words in _err(result)
    spit(env.m("junk"), b"x")
    before = tree_bytes(env.backing)
    result = env.mount_cli()
    assert result.returncode == ExitCode.BAD_PATH and "not empty" in _err(result)
    assert tree_bytes(env.backing) == before
    os.unlink(env.m("junk"))
    result = run_cli("mount", "--key-file", env.key_file, env.backing, env.b("sub"))
    assert result.returncode == ExitCode.BAD_PATH


def test_double_mount_refused_with_owner_pid(env, tmp_path):
    env.mount()
    second = str(tmp_path / "mnt2")
    os.mkdir(second)
    STARTED_MOUNTPOINTS.add(second)
    spit(env.m("f"), b"data")
    before = tree_bytes(env.backing)
    result = run_cli("mount", "--key-file", env.key_file, env.backing, second)
    assert result.returncode == ExitCode.LOCKED, _err(result)
    assert f"pid {env.current.pid}" in _err(result) and env.mountpoint in _err(result)
    assert len(_err(result).strip().splitlines()) == 1
    assert mounttable.find_mount(second) is None
    assert tree_bytes(env.backing) == before


def test_busy_unmount_names_the_process_then_lazy(env):
    assert env.mount_cli().returncode == 0
    spit(env.m("held"), b"x")
    with open(env.m("held"), "rb") as held:
        holder = subprocess.Popen(["sleep", "60"], stdin=held)
    try:
        before = tree_bytes(env.backing)
        result = run_cli("unmount", env.mountpoint)
        assert result.returncode == ExitCode.BUSY, _err(result)
        assert tree_bytes(env.backing) == before
        assert slurp(env.m("held")) == b"x"                          # still mounted and serving
        assert f"pid {holder.pid}" in _err(result) and "sleep" in _err(result)
        assert mounttable.find_mount(env.mountpoint) is not None
        result = run_cli("unmount", "--lazy", env.mountpoint)
        assert result.returncode == 0, _err(result)
        assert mounttable.find_mount(env.mountpoint) is None
        assert pid_alive(env.current.pid)        # still serving the open file
    finally:
        holder.kill()
        holder.wait()
    assert _wait_gone(env.current.pid)           # last user gone: sealed and exited
    env.forget_mount()


def test_fusermount_by_hand_seals(env):
    assert env.mount_cli().returncode == 0
    pid = env.current.pid
    data = os.urandom(50_000)
    spit(env.m("f.bin"), data)
    assert fusermount.unmount(env.mountpoint).returncode == 0
    assert _wait_gone(pid)
    env.forget_mount()
    assert not os.path.exists(env.b(".realmfs.lock"))      # clean exit releases the lock
    assert env.decrypt("f.bin") == data


def test_sigterm_seals_even_while_mapped(env):
    import mmap
    assert env.mount_cli().returncode == 0
    pid = env.current.pid
    fd = os.open(env.m("f.bin"), os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, 8192)
    with mmap.mmap(fd, 8192) as m:
        m[100:110] = b"sigtermok!"
    os.close(fd)
    os.kill(pid, signal.SIGTERM)
    assert _wait_gone(pid)
    env.forget_mount()
    assert mounttable.find_mount(env.mountpoint) is None
    assert env.decrypt("f.bin")[100:110] == b"sigtermok!"


@pytest.mark.daemon_warnings(r"taking over a stale lock")
def test_mount_onto_a_dead_mount_clears_it_and_says_so(env):
    assert env.mount_cli().returncode == 0
    pid = env.current.pid
    spit(env.m("f"), b"before kill")
    kill_daemon(pid)
    env.forget_mount()
    result = env.mount_cli()                       # mountpoint is a dead mount of the same backing
    assert result.returncode == 0, _err(result)
    assert "dead realmfs mount" in _err(result) and f"realmfs verify {env.backing}" in _err(result)
    assert "sealed" not in _err(result)
    assert slurp(env.m("f")) == b"before kill"
    env.unmount()


@pytest.mark.daemon_warnings(r"taking over a stale lock")
def test_mount_elsewhere_after_a_killed_daemon_takes_the_lock_over(env, tmp_path):
    assert env.mount_cli().returncode == 0
    pid = env.current.pid
    spit(env.m("f"), b"before kill")
    kill_daemon(pid)
    env.forget_mount()
    old_mountpoint = env.mountpoint
    try:
        env.mountpoint = str(tmp_path / "mnt2")
        os.mkdir(env.mountpoint)
        result = env.mount_cli()
        assert result.returncode == 0, _err(result)
        assert "took over the lock" in _err(result) and str(pid) in _err(result)
        assert "realmfs verify" in _err(result)
        assert slurp(env.m("f")) == b"before kill"
        env.unmount()
    finally:
        env.mountpoint = old_mountpoint
    result = run_cli("unmount", old_mountpoint)    # the dead mount left at the first mountpoint
    assert result.returncode == 0 and "detached the dead mount" in result.stdout.decode()


def test_api_mount_is_a_context_manager(tmp_path):
    import realmfs.api as api
    env = Env(tmp_path)
    STARTED_MOUNTPOINTS.add(env.mountpoint)
    try:
        with api.mounted(env.backing, env.mountpoint, env.key.hex(), log_file=env.log_file) as m:
            STARTED_PIDS.add(m.pid)
            spit(m.path("x"), b"api")
        assert mounttable.find_mount(env.mountpoint) is None and not pid_alive(m.pid)
        with pytest.raises(Exception) as info:
            with api.mounted(env.backing, env.mountpoint, Key.generate()):
                pass
        assert getattr(info.value, "exit_code", None) == ExitCode.WRONG_KEY
    finally:
        env.cleanup()


def test_key_never_on_the_daemon_command_line_or_environment(env):
    result = run_cli("mount", "--log-file", env.log_file, env.backing, env.mountpoint,
                     env={"REALMFS_KEY": env.key.hex()})
    assert result.returncode == 0, _err(result)
    pid = int(read_owner(env.backing)["pid"])
    env._track(pid)
    env.current = __import__("realmfs.api", fromlist=["Mount"]).Mount(env.backing, env.mountpoint, pid, env.log_file)
    for name in ("cmdline", "environ"):
        with open(f"/proc/{pid}/{name}", "rb") as f:
            assert env.key.hex().encode() not in f.read().lower(), name
    env.unmount()


def test_options_read_only_and_allow_other_pass_through(env):
    result = env.mount_cli("--read-only", "-o", "allow_other")
    assert result.returncode == 0, _err(result)
    options = mounttable.find_mount(env.mountpoint).options.split(",")
    assert "ro" in options and "allow_other" in options
    with pytest.raises(OSError):
        spit(env.m("x"), b"no")
    env.unmount()
    result = run_cli("mount", "--key-file", env.key_file, "-o", "direct_io", env.backing, env.mountpoint)
    assert result.returncode == ExitCode.BAD_PATH and "direct_io" in _err(result)


@pytest.mark.daemon_warnings(r"is busy: detached lazily")
def test_sigterm_while_busy_detaches_and_seals_at_last_close(env):
    assert env.mount_cli().returncode == 0
    pid = env.current.pid
    fd = os.open(env.m("held.bin"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while mounttable.find_mount(env.mountpoint) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mounttable.find_mount(env.mountpoint) is None         # detached from the namespace
        os.pwrite(fd, b"written after SIGTERM", 0)                  # still served
        assert pid_alive(pid)
    finally:
        os.close(fd)
    assert _wait_gone(pid)
    env.forget_mount()
    assert env.decrypt("held.bin") == b"written after SIGTERM"


def test_foreground_mount_and_ctrl_c(env):
    from .conftest import REPO
    import sys
    STARTED_MOUNTPOINTS.add(env.mountpoint)
    proc = subprocess.Popen([sys.executable, "-m", "realmfs", "mount", "-f", "--key-file", env.key_file,
                             env.backing, env.mountpoint], cwd="/", env=dict(os.environ, PYTHONPATH=REPO),
                            stderr=subprocess.PIPE)
    STARTED_PIDS.add(proc.pid)
    try:
        deadline = time.monotonic() + 20
        while mounttable.find_mount(env.mountpoint) is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        spit(env.m("fg.txt"), b"foreground")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert mounttable.find_mount(env.mountpoint) is None
    assert env.decrypt("fg.txt") == b"foreground"


def test_status_and_unmount_of_a_dead_daemon_say_what_happened(env):
    assert env.mount_cli().returncode == 0
    pid = env.current.pid
    kill_daemon(pid)
    env.forget_mount()
    result = run_cli("status")
    row = [l for l in result.stdout.decode().splitlines() if env.mountpoint in l]
    assert row and "disconnected" in row[0] and "realmfs unmount" in row[0]
    result = run_cli("unmount", env.mountpoint)
    out = result.stdout.decode()
    assert result.returncode == 0, _err(result)
    assert "detached the dead mount" in out and f"realmfs verify {env.backing}" in out, out
    assert "sealed" not in out.replace("nothing could be written back or sealed", "")
    assert mounttable.find_mount(env.mountpoint) is None


@pytest.mark.parametrize("library", ["missing package", "missing libfuse"])
def test_missing_binding_or_libfuse_is_one_line_saying_what_to_install(env, tmp_path, library):
    """A stand-in for the binding in use (mfusepy, or fusepy with REALMFS_FUSE=2) that fails
    to import the way it does without itself (ImportError) or without libfuse (OSError):
    exit 9, one line naming what to install, no mount left."""
    from realmfs.fs import fusebinding
    module, package, apt = (("mfusepy", "mfusepy", "libfuse3-3") if fusebinding.MAJOR == 3
                            else ("fuse", "fusepy", "libfuse2"))
    missing, advice = {
        "missing package": (f"raise ImportError('No module named {module}')", f"pip install {package}"),
        "missing libfuse": ("raise OSError('Unable to find libfuse')", f"apt-get install {apt}"),
    }[library]
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / f"{module}.py").write_text(missing + "\n")
    result = run_cli("mount", "--key-file", env.key_file, "--log-file", env.log_file, env.backing,
                     env.mountpoint, env={"PYTHONPATH": f"{REPO}{os.pathsep}{fake}"})
    assert result.returncode == ExitCode.MOUNT_FAILED, _err(result)
    assert advice in _err(result) and len(_err(result).strip().splitlines()) == 1, _err(result)
    assert "Traceback" not in _err(result)
    assert mounttable.find_mount(env.mountpoint) is None


def test_a_mount_prunes_stale_daemon_logs_and_names_its_backing(env, tmp_path, monkeypatch):
    from realmfs.fs import logfiles
    run_dir = tmp_path / "run"
    os.mkdir(run_dir)
    monkeypatch.setattr(launcher, "runtime_dir", lambda: str(run_dir))
    stale = os.path.join(run_dir, logfiles.log_name(str(tmp_path / "gone")))
    logfiles.write_head(stale, str(tmp_path / "gone"))
    mount = env.mount(log_file=None)
    assert mount.log_file == os.path.join(run_dir, logfiles.log_name(env.backing))
    assert not os.path.exists(stale)
    with open(mount.log_file) as f:
        assert f.readline().strip() == logfiles.HEAD_PREFIX + os.path.realpath(env.backing)
    env.unmount()
