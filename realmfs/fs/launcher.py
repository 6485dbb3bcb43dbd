"""The launcher: ``start()`` spawns a daemon and returns once its mountpoint answers.

``start()`` (the CLI's default and ``realmfs.mounted``) first runs the daemon's checks
itself (mountchecks: precise errors before a daemon exists), then spawns
``python -m realmfs mount -f --detach --key-stdin --status-fd N`` in a new session and
reads the status pipe (see daemon): ready means the mountpoint is in
/proc/self/mounts and answers stat. The daemon's log defaults to a file per backing
directory in the runtime directory, pruned of stale logs at each such mount.

Invariants: the key travels through a pipe, never a command line or environment
(KEY_ENV is dropped from the daemon's); ``start()`` returns only with the mount
answering, else raises the daemon's error as the class with its exit code; a daemon
that did not become ready (timeout, or the caller interrupted) is stopped, not left
mounting behind the caller's back; the spawned process is always reaped.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from ..keys import config as configmod
from . import logfiles
from ..storage.backinglock import pid_alive
from .daemon import READY_TIMEOUT
from .mountchecks import check_backing, check_paths, fuse_options
from .mounttable import realmfs_mounts
from ..errors import MountFailed, RealmfsError
from ..keys.key import KEY_ENV, Key

log = logging.getLogger(__name__)


def runtime_dir() -> str:
    for base in ("/run/realmfs", os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), "realmfs")
                 if os.environ.get("XDG_RUNTIME_DIR") else None,
                 os.path.join("/tmp", f"realmfs-{os.getuid()}")):
        if not base:
            continue
        try:
            os.makedirs(base, mode=0o700, exist_ok=True)
            if os.access(base, os.W_OK):
                return base
        except OSError:
            continue
    raise MountFailed("no writable runtime directory for the daemon log")


def default_log_file(backing: str) -> str:
    return os.path.join(runtime_dir(), logfiles.log_name(backing))


def _default_log_file_pruned(backing: str) -> str:
    """The default log of ``backing``, after pruning the runtime directory's stale logs
    (never this one, nor those of the backing directories mounted now)."""
    log_file = default_log_file(backing)
    keep = {log_file} | {default_log_file(entry.backing) for entry in realmfs_mounts()}
    logfiles.prune(os.path.dirname(log_file), keep)
    logfiles.write_head(log_file, backing)
    return log_file


@dataclass
class Started:
    pid: int
    backing: str
    mountpoint: str
    log_file: str


def start(backing: str, mountpoint: str, key: Key, *, read_only: bool = False,
          extra_options: list[str] | None = None, log_file: str | None = None,
          debug: bool = False) -> Started:
    """Spawn the daemon and return once the mountpoint answers; raise its error otherwise."""
    backing, mountpoint = check_paths(backing, mountpoint)
    check_backing(backing, key, mountpoint)          # early, precise errors; the daemon checks again
    fuse_options(backing, read_only, extra_options)  # refuses direct_io before a daemon exists
    if not os.path.exists(configmod.config_path(backing)):
        log.warning("%s has no realmfs config: the key can only be checked against files already "
                    "there; run 'realmfs init %s' so that a wrong key is always refused", backing, backing)
    log_file = log_file or _default_log_file_pruned(backing)
    try:
        log_start = os.path.getsize(log_file)
    except OSError:
        log_start = 0
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "realmfs"] + (["--debug"] if debug else []) + [
        "mount", "--foreground", "--detach", "--key-stdin", "--status-fd", str(write_end),
        "--log-file", log_file]
    if read_only:
        command.append("--read-only")
    for option in extra_options or []:
        command += ["-o", option]
    command += [backing, mountpoint]
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_file, "ab") as logf:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=logf, stderr=logf,
                                pass_fds=(write_end,), start_new_session=True, cwd="/", env=env)
    os.close(write_end)
    try:
        proc.stdin.write(key.hex().encode() + b"\n")
        proc.stdin.close()
        message = _read_status(read_end, proc)
    finally:
        os.close(read_end)
        _reap(proc)
    if message.get("ok"):
        return Started(int(message["pid"]), backing, mountpoint, log_file)
    if message.get("timeout") and message.get("pid"):   # never became ready: stop it
        _stop(int(message["pid"]))
    code = message.get("code", MountFailed.exit_code)
    text = message.get("message") or "the daemon exited without a word"
    if code == MountFailed.exit_code:
        libfuse = _libfuse_said(log_file, log_start)
        if libfuse:
            text = f"{text}: {libfuse}"
    raise _error_for(code, text)


def _error_for(code: int, message: str) -> RealmfsError:
    """The daemon's error again, as the class with its exit code (callers catch by class)."""
    pending = [RealmfsError]
    while pending:
        cls = pending.pop(0)
        if cls.exit_code == code and cls is not RealmfsError:
            return cls(message) if cls.__init__ is RealmfsError.__init__ else _mount_failed(code, message)
        pending.extend(cls.__subclasses__())
    return _mount_failed(code, message)


def _mount_failed(code: int, message: str) -> RealmfsError:
    """A class whose constructor wants more than the message: MountFailed with its exit code."""
    error = MountFailed(message)
    error.exit_code = code
    return error


def _reap(proc: subprocess.Popen) -> None:
    """The spawned process forks the daemon off and exits at once; reap it."""
    try:
        proc.wait(READY_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _read_status(fd: int, proc: subprocess.Popen) -> dict:
    """The daemon's final status line (its pid came first). Interrupted (Ctrl-C) while
    the daemon starts: stop it rather than leave it mounting behind our back."""
    seen: dict = {}
    try:
        return _read_status_lines(fd, seen)
    except BaseException:
        if seen.get("pid"):
            _stop(int(seen["pid"]))
        raise


def _read_status_lines(fd: int, seen: dict) -> dict:
    data = b""
    deadline = time.monotonic() + READY_TIMEOUT + 5
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        while b"\n" in data:
            line, data = data.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                return {"ok": False, "code": MountFailed.exit_code, "pid": seen.get("pid"),
                        "message": line.decode(errors="replace")}
            seen["pid"] = message.get("pid", seen.get("pid"))
            if "ok" in message:
                message["pid"] = seen["pid"]
                return message
    pid = seen.get("pid")
    return {"ok": False, "code": MountFailed.exit_code, "pid": pid, "timeout": True,
            "message": "the daemon did not start" if pid is None
            else f"the daemon (pid {pid}) did not become ready"}


def _libfuse_said(log_file: str, start: int) -> str:
    """libfuse's own complaint (it writes "fuse: ..." to the daemon's stderr, our log)."""
    try:
        with open(log_file, "rb") as f:
            f.seek(start)
            lines = f.read(65536).decode(errors="replace").splitlines()
    except OSError:
        return ""
    said = [line.strip() for line in lines if line.startswith("fuse: ")]
    return said[-1] if said else ""
