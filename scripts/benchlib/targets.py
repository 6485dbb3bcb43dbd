"""Where a workload runs: a plain directory, a realmfs mount, or a peer (gocryptfs, securefs).

Every target lives under one base directory on the same filesystem, so the
plain directory and each backing directory share the same disk and page cache.

Invariants:
* every FUSE daemon was started by this harness: a peer in the foreground (its pid
  is the daemon's), realmfs through a mountd.py child that holds the mount open
  until its stdin closes (realmfs.api starts its detached daemon and reports the
  pid). Daemons are stopped by unmounting, then our own children by pid; never by name;
* ``stop`` is safe to call twice and after a failed ``start``: it leaves no
  mount behind (``fusermount -u`` through realmfs.fs.fusermount, lazily as a last resort);
* ``backing_dirs`` lists every directory whose files hold the target's data, so
  a cold read can evict them too (peer file names are encrypted: evict them all).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import time

from realmfs.fs import fusermount  # every caller puts the repository on sys.path first

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_PASSWORD = "bench-pw"
MOUNT_TIMEOUT = 30.0


def fuse_mountpoints() -> set[str]:
    with open("/proc/mounts") as mounts:
        return {line.split()[1] for line in mounts if " fuse" in line}


def is_mounted(path: str) -> bool:
    return os.path.realpath(path) in fuse_mountpoints()


class Target:
    """A plain directory: the reference every ratio is taken against."""

    name = "plain"
    needs = ()  # executables that must exist for this target to run

    def __init__(self, base: str):
        self.base = base
        self.dir = os.path.join(base, self.name)
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(base, f"{self.name}.log")

    def unavailable(self) -> str | None:
        """Why this target cannot run here, or None."""
        missing = [exe for exe in self.needs if shutil.which(exe) is None]
        if self.needs and fusermount.command() is None:     # the peers: unmounted by fusermount
            missing.append("fusermount3/fusermount")
        return f"not installed: {', '.join(missing)}" if missing else None

    @property
    def daemon_pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def backing_dirs(self) -> list[str]:
        return []

    def start(self) -> None:
        os.makedirs(self.dir, exist_ok=True)

    def stop(self) -> None:
        pass

    # -- shared by the FUSE targets ---------------------------------------------------
    def _spawn(self, argv: list[str], **kwargs) -> None:
        self._log = open(self.log_path, "ab")
        kwargs.setdefault("stdout", self._log)
        self.proc = subprocess.Popen(argv, stderr=self._log, **kwargs)

    def _wait_mounted(self) -> None:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(self.dir):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} daemon exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not mount within {MOUNT_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def log_tail(self, chars: int = 600) -> str:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
            return log.read().decode(errors="replace")[-chars:].strip()
        return ""

    def _unmount_and_reap(self, polite_stop=None) -> None:
        if self.proc is None:
            return
        if polite_stop:
            with contextlib.suppress(Exception):
                polite_stop()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        # "busy" right after a workload closed its files is common: retry before going lazy.
        for attempt in range(20):
            if not is_mounted(self.dir):
                break
            fusermount.unmount(self.dir)
            time.sleep(0.1 * (attempt + 1) if is_mounted(self.dir) else 0)
        if is_mounted(self.dir):
            fusermount.unmount(self.dir, lazy=True)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.terminate()  # our own child, by pid
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        with contextlib.suppress(Exception):
            self._log.close()


class _Peer(Target):
    """A peer filesystem: its store made once with ``create_argv``, then its daemon run in the
    foreground (``mount_argv``), so the child we hold is the daemon itself."""

    store_name = ""

    @property
    def backing_dirs(self) -> list[str]:
        return [self.store]

    def create_argv(self) -> list[str]:
        raise NotImplementedError

    def mount_argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.store = os.path.join(self.base, self.store_name)
        os.makedirs(self.store)
        os.makedirs(self.dir)
        subprocess.run(self.create_argv(), check=True, capture_output=True)
        self._spawn(self.mount_argv())
        self._wait_mounted()

    def stop(self) -> None:
        self._unmount_and_reap()


class Gocryptfs(_Peer):
    name = "gocryptfs"
    needs = ("gocryptfs",)
    store_name = "gocryptfs-cipher"
    _extpass = ["-extpass", f"echo {PEER_PASSWORD}"]

    def create_argv(self) -> list[str]:
        return ["gocryptfs", "-init", "-q", *self._extpass, self.store]

    def mount_argv(self) -> list[str]:
        return ["gocryptfs", "-f", "-q", *self._extpass, self.store, self.dir]


class Securefs(_Peer):
    name = "securefs"
    needs = ("securefs",)
    store_name = "securefs-data"

    def create_argv(self) -> list[str]:
        return ["securefs", "create", "--pass", PEER_PASSWORD, self.store]

    def mount_argv(self) -> list[str]:
        return ["securefs", "mount", "--pass", PEER_PASSWORD, self.store, self.dir]


class _PythonMount(Target):
    """A mount served by scripts/benchlib/mountd.py in a child process.

    The daemon must not share a process (and a GIL) with the workload, and its
    CPU and RSS must be its own: hence a child, told to unmount by closing its stdin.
    """

    kind = ""
    extra_env: dict[str, str] = {}     # for the daemon: how this target differs from its kind

    @property
    def backing_dirs(self) -> list[str]:
        return [self.backing]

    def unavailable(self) -> str | None:
        # Probe in a child: importing a half-written realmfs must not break the harness.
        probe = subprocess.run([sys.executable, os.path.join(HERE, "mountd.py"), "--probe", self.kind],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return None
        lines = (probe.stdout + probe.stderr).strip().splitlines()
        return lines[-1] if lines else "not available"

    def start(self) -> None:
        self.backing = os.path.join(self.base, f"{self.name}-backing")
        os.makedirs(self.backing)
        os.makedirs(self.dir)
        self._spawn([sys.executable, os.path.join(HERE, "mountd.py"), self.kind, self.backing, self.dir],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **self.extra_env})
        # mountd prints "ready PID" once the mount is usable (or exits with the reason in the log).
        deadline = time.monotonic() + MOUNT_TIMEOUT
        line = b""
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            readable, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if readable:
                chunk = os.read(self.proc.stdout.fileno(), 100)
                if not chunk:
                    break
                line += chunk
        word, _, pid = line.decode(errors="replace").partition(" ")
        if word != "ready":
            raise RuntimeError(f"{self.name} did not mount: {self.log_tail() or line!r}")
        self._daemon = int(pid)
        self._wait_mounted()

    @property
    def daemon_pid(self) -> int | None:
        return self._daemon if self.proc else None

    def stop(self) -> None:
        def close_stdin():
            self.proc.stdin.close()
        self._unmount_and_reap(close_stdin if self.proc and self.proc.stdin else None)


class Realmfs(_PythonMount):
    name = "realmfs"
    kind = "realmfs"


class RealmfsSealWorker(Realmfs):
    """realmfs with its sealing worker on (REALMFS_SEAL_WORKER=1, realmfs/storage/sealworker.py):
    groups of 16 pages and more sealed on both cores. Not in the default targets."""

    name = "realmfs-worker"
    extra_env = {"REALMFS_SEAL_WORKER": "1"}


class PyfuseLoopback(_PythonMount):
    """A pass-through with no crypto on realmfs's binding and FUSE options: the floor for realmfs."""

    name = "pyfuse"
    kind = "loopback"


class RealmfsWriteback(Realmfs):
    """realmfs with the kernel's writeback cache (libfuse 3 only; an experiment, see
    realmfs/fs/fusebinding.py): what the request path could gain, measured in the same run."""
    name = "realmfs-writeback"
    extra_env = {"REALMFS_EXPERIMENT_WRITEBACK_CACHE": "1"}


class RealmfsLibfuse2(Realmfs):
    """realmfs on the libfuse 2 fallback (REALMFS_FUSE=2: fusepy, 128 KiB writes), to compare
    the two bindings in one run."""
    name = "realmfs-libfuse2"
    extra_env = {"REALMFS_FUSE": "2"}


class PyfuseWriteback(PyfuseLoopback):
    """The crypto-free floor with the writeback cache: the best this request path reaches."""
    name = "pyfuse-writeback"
    extra_env = {"REALMFS_EXPERIMENT_WRITEBACK_CACHE": "1"}


ALL = {cls.name: cls for cls in (Target, Realmfs, Gocryptfs, Securefs, PyfuseLoopback, RealmfsSealWorker,
                                  RealmfsWriteback, PyfuseWriteback, RealmfsLibfuse2)}
DEFAULT = ["plain", "realmfs", "gocryptfs", "securefs", "pyfuse"]
