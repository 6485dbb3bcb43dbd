"""Run as an unprivileged user: the machine set up for it, and put back afterwards.

``Unprivileged`` (the session fixture ``user`` in conftest.py) is a real account made
with useradd, member of one extra group (``member_gid``) and not of another
(``other_gid``): what set-gid and chown tests need. To let it mount as real users do,
the setup also
* makes /dev/fuse read-write for everyone (Debian ships it 0600 inside containers),
* adds ``user_allow_other`` to /etc/fuse.conf (``-o allow_other`` for non-root mounts),
* lets the user reach this interpreter and this checkout: each directory on the way
  that others cannot search gets a POSIX ACL entry "search" for that user alone,
* checks that a setuid-root fusermount (libfuse 2) or fusermount3 (libfuse 3) is there.

Every change is recorded in STATE before it is made and undone at teardown from that
record. Several test sessions may run at once (other worktrees): each holds a shared
flock on LOCK while it uses the user, and never waits for another session's run; setup
and teardown take SETUP_LOCK (exclusive, held for a moment), and only a session that
then gets LOCK exclusively at teardown (nobody else is using the user) undoes the
changes. A session that died leaves STATE behind: the next one reuses and undoes it.
"""

from __future__ import annotations

import fcntl
import grp
import json
import os
import pwd
import stat
import struct
import subprocess
import sys
import time

from realmfs.fs import fusermount

LOCK = "/tmp/realmfs-tests-unprivileged.lock"                  # shared while in use
SETUP_LOCK = "/tmp/realmfs-tests-unprivileged.setup.lock"      # exclusive while changing things
STATE = "/tmp/realmfs-tests-unprivileged.json"
USER, MEMBER_GROUP, OTHER_GROUP = "realmfs-t", "realmfs-tm", "realmfs-to"
FUSE_CONF = "/etc/fuse.conf"
ALLOW_OTHER = "user_allow_other"

_ACL = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _NAMED_USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_NO_ID = 0xFFFFFFFF


def _search_acl(mode: int, uid: int) -> bytes:
    """An access ACL equal to ``mode`` plus search (x) for ``uid``."""
    group = (mode >> 3) & 7
    entries = [(_USER_OBJ, (mode >> 6) & 7, _NO_ID), (_NAMED_USER, 1, uid), (_GROUP_OBJ, group, _NO_ID),
               (_MASK, group | 1, _NO_ID), (_OTHER, mode & 7, _NO_ID)]
    return struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)


def _blocked_dirs(paths: list[str]) -> list[str]:
    """Directories on the way to ``paths`` that others may not search."""
    blocked = []
    for path in paths:
        directory = os.path.dirname(os.path.realpath(path))
        while True:
            if not os.stat(directory).st_mode & stat.S_IXOTH and directory not in blocked:
                blocked.append(directory)
            if directory == "/":
                break
            directory = os.path.dirname(directory)
    return blocked


def _run(*args: str) -> None:
    for attempt in range(50):      # useradd/userdel lock /etc/passwd; another session may hold it
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode == 0 or "lock" not in result.stderr:
            break
        time.sleep(0.1)
    if result.returncode:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


class Unprivileged:
    def __init__(self, repo: str):
        self.repo = repo
        self._lock_fd = -1

    # ------------------------------------------------------------------ setup / teardown
    def __enter__(self) -> "Unprivileged":
        setup = self._setup_lock()
        try:
            try:
                self._prepare()
            except BaseException:
                self._undo()
                raise
            self._lock_fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)     # in use: nobody undoes it under us
        finally:
            os.close(setup)
        entry = pwd.getpwnam(USER)
        self.name, self.uid, self.gid = USER, entry.pw_uid, entry.pw_gid
        self.member_gid = grp.getgrnam(MEMBER_GROUP).gr_gid
        self.other_gid = grp.getgrnam(OTHER_GROUP).gr_gid
        return self

    def __exit__(self, *exc) -> None:
        setup = self._setup_lock()
        try:
            os.close(self._lock_fd)        # drop our shared lock, then: are we the last?
            fd = os.open(LOCK, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._undo()
            except BlockingIOError:
                pass                       # another session still uses the user: it undoes
            finally:
                os.close(fd)
        finally:
            os.close(setup)

    @staticmethod
    def _setup_lock() -> int:
        """SETUP_LOCK held exclusively: one session at a time prepares or undoes (briefly)."""
        fd = os.open(SETUP_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _prepare(self) -> None:
        state = self._load()
        if "user" not in state:
            self._save(state, user=True)
            for group in (MEMBER_GROUP, OTHER_GROUP):
                _run("groupadd", "-f", group)
            _run("useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh",
                 "--groups", MEMBER_GROUP, USER)
        uid = pwd.getpwnam(USER).pw_uid
        if "dev_fuse" not in state:
            self._save(state, dev_fuse=stat.S_IMODE(os.stat("/dev/fuse").st_mode))
            os.chmod("/dev/fuse", 0o666)
        if "fuse_conf" not in state:
            try:
                with open(FUSE_CONF) as f:
                    original = f.read()
            except FileNotFoundError:
                original = None
            self._save(state, fuse_conf=original)
            if ALLOW_OTHER not in [line.strip() for line in (original or "").splitlines()]:
                with open(FUSE_CONF, "a") as f:
                    f.write(f"\n{ALLOW_OTHER}\n")
        acls = state.setdefault("acls", {})
        for directory in _blocked_dirs([sys.executable, os.path.join(self.repo, "realmfs")]):
            if directory in acls:
                continue
            try:
                os.getxattr(directory, _ACL)
                raise RuntimeError(f"{directory} has an ACL already; give others search (x) on it")
            except OSError as error:
                if error.errno != 61:      # ENODATA: no ACL yet, so ours is the only one
                    raise
            mode = stat.S_IMODE(os.stat(directory).st_mode)
            acls[directory] = mode
            self._save(state)
            os.setxattr(directory, _ACL, _search_acl(mode, uid))
        path = fusermount.command()
        if path is None:
            raise RuntimeError(f"no fusermount: {fusermount.INSTALL_HINT}")
        st = os.stat(path)
        if not (st.st_mode & stat.S_ISUID and st.st_uid == 0):
            raise RuntimeError(f"{path} is not setuid root: users cannot mount (chmod u+s {path})")

    def _undo(self) -> None:
        state = self._load()
        for directory, mode in state.get("acls", {}).items():
            try:
                os.removexattr(directory, _ACL)
            except OSError:
                pass
            os.chmod(directory, mode)
        if "fuse_conf" in state:
            if state["fuse_conf"] is None:
                os.unlink(FUSE_CONF)
            else:
                with open(FUSE_CONF, "w") as f:
                    f.write(state["fuse_conf"])
        if "dev_fuse" in state:
            os.chmod("/dev/fuse", state["dev_fuse"])
        if "user" in state:
            subprocess.run(["userdel", USER], capture_output=True)
            for group in (MEMBER_GROUP, OTHER_GROUP):
                subprocess.run(["groupdel", group], capture_output=True)
        if os.path.exists(STATE):
            os.unlink(STATE)

    @staticmethod
    def _load() -> dict:
        try:
            with open(STATE) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    @staticmethod
    def _save(state: dict, **changes) -> None:
        state.update(changes)
        with open(STATE + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(STATE + ".tmp", STATE)

    # ------------------------------------------------------------------ use
    @property
    def popen(self) -> dict:
        """subprocess keywords that run a child as this user, with its groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": [self.gid, self.member_gid]}

    def run(self, args: list[str], env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
        """``args`` as this user (a harmless HOME), output captured."""
        full_env = {**os.environ, "HOME": "/tmp", "USER": self.name, "LOGNAME": self.name, **(env or {})}
        return subprocess.run(args, env=full_env, capture_output=True, **self.popen, **kwargs)

    def make_dir(self, parent: str, name: str, mode: int = 0o755) -> str:
        """A directory the user owns (with every directory above it searchable by others)."""
        path = os.path.join(parent, name)
        os.mkdir(path, mode)
        os.chown(path, self.uid, self.gid)
        return path
