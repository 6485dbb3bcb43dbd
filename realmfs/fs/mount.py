"""Mount lifecycle: checks, FUSE options, the daemon, readiness, signals, sealing, unmount.

``start()`` (the CLI's default and ``realmfs.mounted``) spawns the daemon as
``python -m realmfs mount -f --key-stdin --status-fd N`` in a new session: the key
travels through a pipe, never a command line or environment; the daemon reports
"ready" (or its one-line error and exit code) on the status pipe, and ready means
the mountpoint is in /proc/self/mountinfo and answers stat.

``serve()`` is the daemon: every refusal happens before BACKING is touched (paths,
key, plain Realm files), then the backing lock, then FUSE runs in a second thread
so that the main thread can take signals. SIGTERM/SIGINT/SIGHUP unmount the way
``fusermount -u`` does (the kernel writes dirty mmap pages back while we still
serve them); if that is refused as busy, the mount is detached lazily and served
until the last user lets go. Either way FUSE calls destroy(), which fsyncs and
closes every open file and syncfs()es BACKING: the seal.

FUSE options (see ``fuse_options``): the kernel page cache stays on, also across
opens (keep_cache per open, see fuseops; never direct_io, which breaks MAP_SHARED); no POSIX-lock or flock handler is
registered, so the kernel keeps fcntl/flock locks itself, which is exact for every
process using this mount; no ``hard_remove``: an unlinked open file lives on as
``.fuse_hidden*`` (hidden from readdir, removed at last close, swept at the next
mount after a crash) so that fstat() on it works (the kernel asks getattr by
path); one request at a time (``-s``): no slower than libfuse's threads for this
Python daemon (measured), and it makes libfuse's hide-then-rename pair atomic for
every process using the mount.

Invariants: BACKING is never written before the key and paths are accepted; the
daemon holds the backing lock for exactly as long as it may touch BACKING; a
started daemon either reports ready with the mount answering, or exits with its
error on the status pipe.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from ..keys import config as configmod
from ..storage import backingscan, transcode
from . import fusermount, logfiles
from ..storage.backinglock import BackingLock, pid_alive, read_owner, refuse_if_overlapping
from .mounttable import FSNAME_PREFIX, MountEntry, daemon_gone, find_mount, holders, is_mountpoint, realmfs_mounts
from ..errors import BadPath, Busy, MountFailed, NotRecognized, RealmfsError
from ..keys.keys import KEY_ENV, Key
from ..format.pagecipher import PageCipher

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
TIMEOUTS = ("entry_timeout", "negative_timeout", "attr_timeout")    # in the order linkattrs.py needs
UNMOUNT_TIMEOUT = 60.0


# ---------------------------------------------------------------------- checks
def check_paths(backing: str, mountpoint: str) -> tuple[str, str]:
    """Absolute, resolved paths; BadPath for anything a mount cannot use."""
    configmod.require_directory(backing)
    backing = os.path.realpath(backing)
    try:
        os.stat(mountpoint)
    except FileNotFoundError:
        raise BadPath(f"mountpoint {mountpoint} does not exist; create it with mkdir") from None
    except OSError as error:
        if is_mountpoint(mountpoint):
            raise BadPath(f"mountpoint {mountpoint} is a disconnected mount ({error.strerror}); "
                          f"run 'realmfs unmount {mountpoint}' first") from None
        raise BadPath(f"mountpoint {mountpoint}: {error.strerror}") from None
    if not os.path.isdir(mountpoint):
        raise BadPath(f"mountpoint {mountpoint} is not a directory")
    mountpoint = os.path.realpath(mountpoint)
    if is_mountpoint(mountpoint):
        raise BadPath(f"mountpoint {mountpoint} is already a mount point")
    if os.listdir(mountpoint):
        raise BadPath(f"mountpoint {mountpoint} is not empty")
    if mountpoint == backing or mountpoint.startswith(backing + os.sep):
        raise BadPath(f"mountpoint {mountpoint} must not be inside the backing directory {backing}")
    return backing, mountpoint


def check_backing(backing: str, key: Key, mountpoint: str = "") -> configmod.Config:
    """Key, plain-file, unencrypted-file and lock checks (BACKING, and any held directory
    above or below it: see backinglock); writes nothing."""
    config = backingscan.open_backing_dir(backing, key)
    if not config.key_check:
        check_all_encrypted(backing, config)
    refuse_if_overlapping(backing)
    return config


def check_all_encrypted(backing: str, config: configmod.Config, shown: int = 3) -> None:
    """A directory without a config is a directory of Realm Core (or realmfs) files: refuse
    one that holds files nobody encrypted (the mount could only answer EIO for them)."""
    found = backingscan.unrecognized_files(backing, config)
    if found:
        names = ", ".join(os.path.relpath(p, backing) for p in found[:shown])
        more = f" and {len(found) - shown} more" if len(found) > shown else ""
        raise NotRecognized(f"{backing} has no realmfs config and holds files that are not encrypted "
                            f"({names}{more}): encrypt the directory into a new one with 'realmfs "
                            f"encrypt {backing} NEW' and mount that, or move them out (start a new "
                            "directory with 'realmfs init')")


def decrypt_plain_named(backing: str, config: configmod.Config, key: Key) -> int:
    """Files with a plain-pattern name that an older realmfs encrypted (header layout):
    decrypted in place before serving, so the mount shows their bytes and the backing
    directory holds them as Realm Core would. Returns how many."""
    found = backingscan.plain_named_ciphertext(backing, config, key)
    cipher = PageCipher(key.raw)
    for path in found:
        transcode.convert_in_place(path, cipher, configmod.KIND_HEADER, configmod.KIND_PLAIN, os.lstat(path))
        log.warning("%s has a plain-pattern name (Realm Core keeps it unencrypted) but was encrypted "
                    "by an older realmfs: decrypted it in place", path)
    return len(found)


def _escape_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,")


def fuse_options(backing: str, read_only: bool = False, extra: list[str] | None = None) -> dict:
    options = {
        "foreground": True,
        "nothreads": True,          # one request at a time: measured faster here, see the report
        "fsname": FSNAME_PREFIX + _escape_option(backing),
        "subtype": "realmfs",
        "big_writes": True,
        "max_write": 131072,
        # page cache kept across opens: set per open (keep_cache) by fuseops, which knows
        # when a file has other hard links; the mount-wide kernel_cache would override it
        "attr_timeout": 1,
        "entry_timeout": 1,
        "negative_timeout": 1,
        "default_permissions": True,
        "use_ino": True,
        # no hard_remove: libfuse keeps an unlinked or replaced open file under a
        # .fuse_hidden* name until its last close, so fstat() on it still works (the
        # kernel asks getattr by path). With one request at a time the hide-then-rename
        # pair is atomic for every process using the mount.
    }
    if read_only:
        options["ro"] = True
    for option in extra or []:
        for item in option.split(","):
            item = item.strip()
            if not item:
                continue
            if item == "direct_io":
                raise BadPath("-o direct_io is refused: it breaks shared writable mmap")
            if item == "threads":       # libfuse's multi-threaded loop (measured slower here)
                options["nothreads"] = False
                continue
            name, _, value = item.partition("=")
            options[name] = value if value else True
    return options


# ---------------------------------------------------------------------- the daemon
class _Status:
    """The daemon's half of the status pipe: one JSON line, then closed."""

    def __init__(self, fd: int | None):
        self.fd = fd
        if fd is not None:     # first line: who we are, so a starter can stop us on a timeout
            try:
                os.write(fd, (json.dumps({"pid": os.getpid()}) + "\n").encode())
            except OSError:
                self.fd = None

    def send(self, **message) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (json.dumps(message) + "\n").encode())
            os.close(self.fd)
        except OSError:
            pass
        self.fd = None


def serve(backing: str, mountpoint: str, key: Key, *, read_only: bool = False,
          extra_options: list[str] | None = None, status_fd: int | None = None) -> int:
    """Mount and serve in this process until unmounted; returns an exit code."""
    status = _Status(status_fd)
    try:
        return _serve(backing, mountpoint, key, read_only, extra_options, status)
    except RealmfsError as error:
        status.send(ok=False, code=error.exit_code, message=str(error))
        raise
    except BaseException as error:
        status.send(ok=False, code=MountFailed.exit_code, message=f"daemon failed: {error}")
        raise


def _import_fuse():
    """The FUSE class of the chosen binding (fusebinding.py), or MountFailed saying what to
    install (imported only here: the CLI must work -- status, init, the offline tools --
    without libfuse)."""
    from . import fusebinding
    return fusebinding.FUSE


def _serve(backing, mountpoint, key, read_only, extra_options, status) -> int:
    FUSE = _import_fuse()
    from . import reqstats
    from .fuseops import RealmfsOps

    if not os.path.exists("/dev/fuse"):
        raise MountFailed("/dev/fuse is missing: load the fuse module (modprobe fuse) or run with --device /dev/fuse")
    backing, mountpoint = check_paths(backing, mountpoint)
    config = check_backing(backing, key, mountpoint)
    options = fuse_options(backing, read_only, extra_options)
    # The kernel already applied the caller's umask to create/mkdir modes; ours must not
    # narrow them again (a 0664 file would become 0644).
    os.umask(0)
    _raise_fd_limit()
    lock = BackingLock(backing, mountpoint).acquire()
    try:
        ops = RealmfsOps(backing, PageCipher(key.raw), config.kind_of,
                         configmod.RESERVED_NAMES, read_only=read_only,
                         timeouts=tuple(float(options[name]) for name in TIMEOUTS))
        if not read_only:
            ops.sweep_hidden()
            decrypt_plain_named(backing, config, key)
        served = reqstats.wrap(ops)     # ops itself unless REALMFS_REQUEST_STATS asks for timing
        failure: list[BaseException] = []

        def run_fuse():
            # signals belong to the main thread, which unmounts cleanly on them
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
            try:
                FUSE(served, mountpoint, raw_fi=True, **options)
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                failure.append(error)

        stopping = threading.Event()
        mounted = threading.Event()

        def unmount_soon():
            threading.Thread(target=_unmount_self, args=(mountpoint,), daemon=True).start()

        def on_signal(signum, _frame):
            if stopping.is_set():
                return
            stopping.set()
            log.info("received %s: unmounting %s", signal.Signals(signum).name, mountpoint)
            if mounted.is_set():
                unmount_soon()          # else: done as soon as the mount is up

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, on_signal)

        thread = threading.Thread(target=run_fuse, name="fuse")
        thread.start()
        ready = _wait_until_mounted(mountpoint, thread)
        if not ready:
            if thread.is_alive():       # mounted too slowly to be trusted: take it down again
                _unmount_self(mountpoint)
                thread.join(30)
            raise MountFailed(f"FUSE could not mount {mountpoint}")
        mounted.set()
        status.send(ok=True, pid=os.getpid())
        log.info("mounted %s on %s (pid %d)", backing, mountpoint, os.getpid())
        if stopping.is_set():
            unmount_soon()
        while thread.is_alive():
            thread.join(0.5)
        if failure and not ops.destroyed:
            raise MountFailed(f"FUSE stopped with an error: {failure[0]}")
        log.info("unmounted %s from %s", backing, mountpoint)
        return 0
    finally:
        lock.release()


def _raise_fd_limit() -> None:
    """One backing fd per open file: allow as many as the hard limit (often 1024 soft)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _wait_until_mounted(mountpoint: str, thread: threading.Thread) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not thread.is_alive():
            return False
        if any(e.mountpoint == mountpoint for e in realmfs_mounts()):
            try:
                os.stat(mountpoint)        # answered by our own FUSE thread
                return True
            except OSError:
                pass
        time.sleep(0.02)
    return False


def _unmount_self(mountpoint: str) -> None:
    """Unmount as ``fusermount -u`` would; if busy, detach lazily and keep serving."""
    if _fusermount(mountpoint, lazy=False) != 0:
        log.warning("%s is busy: detached lazily; open files are served until closed", mountpoint)
        _fusermount(mountpoint, lazy=True)


def _fusermount(mountpoint: str, lazy: bool) -> int:
    try:
        result = fusermount.unmount(mountpoint, lazy=lazy)
    except FileNotFoundError:
        result = subprocess.run(["umount"] + (["-l"] if lazy else []) + [mountpoint],
                                capture_output=True, text=True)
    if result.returncode:
        log.debug("unmount %s (lazy=%s): %s", mountpoint, lazy, result.stderr.strip())
    return result.returncode


# ---------------------------------------------------------------------- starting a daemon
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


# ---------------------------------------------------------------------- unmounting
def unmount(mountpoint: str, *, lazy: bool = False, timeout: float = UNMOUNT_TIMEOUT) -> MountEntry:
    """Refuse if busy (naming the holders), else unmount and wait for the daemon to seal.
    A mount whose daemon died is only detached (``entry.daemon_gone``): nothing can seal it."""
    entry = find_mount(mountpoint)
    if entry is None:
        if not os.path.exists(mountpoint):
            raise BadPath(f"{mountpoint} does not exist")
        raise BadPath(f"{mountpoint} is not a realmfs mount ('realmfs status' lists them)")
    entry.daemon_gone = daemon_gone(entry)
    owner = read_owner(entry.backing) or {}
    pid = 0 if entry.daemon_gone else int(owner.get("pid") or 0)   # a dead pid may be reused
    if not lazy:
        busy = holders(entry.mountpoint, exclude={pid})
        if busy:
            names = ", ".join(f"pid {h.pid} ({h.name}: {h.what})" for h in busy[:5])
            more = f" and {len(busy) - 5} more" if len(busy) > 5 else ""
            raise Busy(f"{entry.mountpoint} is busy: {names}{more}; close them, or use --lazy to detach anyway")
    if _fusermount(entry.mountpoint, lazy) != 0:
        if not lazy and find_mount(entry.mountpoint) is not None:
            busy = holders(entry.mountpoint, exclude={pid})
            names = ", ".join(f"pid {h.pid} ({h.name})" for h in busy[:5]) or "unknown processes"
            raise Busy(f"{entry.mountpoint} is busy ({names}); close them, or use --lazy to detach anyway")
    if pid and not lazy:
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(pid):
            raise MountFailed(f"unmounted {entry.mountpoint}, but daemon pid {pid} is still sealing "
                              f"after {timeout:.0f}s; see its log")
    return entry
