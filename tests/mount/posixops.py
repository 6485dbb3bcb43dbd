"""POSIX metadata scenarios, run the same way on the mount and on a plain directory.

Each scenario is a function ``(root) -> dict`` of what it observed (stat fields,
errnos, names); a test runs it on the mount and on a plain directory of this machine's
disk (the oracle: ext4 here), as root or as an unprivileged user, and compares the two.
They run in a process of their own, started in ``root`` (``python -m tests.mount.posixops
SCENARIO ROOT`` prints the JSON), so a scenario may chdir and work with paths relative
to the current directory: the only way to hand the kernel a path of PATH_MAX - 1 bytes
below the mountpoint, or to work below a directory whose path is longer than PATH_MAX.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys
import time

NAME_MAX = 255
PATH_MAX = 4096


def observe(path: str, dir_fd: int | None = None) -> list:
    """What must agree between the mount and ext4 (not inode numbers, blocks or times);
    ``path`` "" with ``dir_fd``: the open file itself."""
    st = os.fstat(dir_fd) if path == "" else os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    size = st.st_size if not stat.S_ISDIR(st.st_mode) else None   # a directory's size is the fs's own
    return [stat.filemode(st.st_mode), oct(st.st_mode), st.st_nlink, st.st_uid, st.st_gid, size]


class Recorder:
    """Runs steps, keeping each result or errno under a name."""

    def __init__(self):
        self.seen: dict[str, object] = {}

    def __call__(self, key: str, fn, *args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except OSError as error:
            result = ["errno", errno_name(error.errno)]
        self.seen[key] = result
        return result


def errno_name(number: int) -> str:
    import errno
    return errno.errorcode.get(number, str(number))


def write_file(path: str, data: bytes, mode: int = 0o644) -> int:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def read_file(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().hex()[:64] + f":{f.tell()}"


def listing(path: str) -> list:
    return sorted(os.listdir(path))


# ------------------------------------------------------------------ long paths (issue 10 item 4)
def long_paths(root: str) -> dict:
    """Every namespace and attribute call on names of NAME_MAX and on paths of PATH_MAX - 1
    bytes below ``root`` (the cwd), then below a directory deeper than PATH_MAX."""
    rec = Recorder()
    rec("name_max", write_file, "n" * NAME_MAX, b"top")
    rec("name_max+1", write_file, "n" * (NAME_MAX + 1), b"top")
    rec("name_max_stat", observe, "n" * NAME_MAX)
    # directories of NAME_MAX-byte names down to where one more name of NAME_MAX bytes
    # makes a relative path of exactly PATH_MAX - 1 bytes
    dirs = ""
    level = 0
    while len(dirs) + (NAME_MAX + 1) + NAME_MAX <= PATH_MAX - 1:
        dirs += f"{level:02d}".ljust(NAME_MAX, "d") + "/"
        rec(f"mkdir{level}", os.mkdir, dirs, 0o755)
        level += 1

    def at(letter: str) -> str:
        path = dirs + letter * NAME_MAX
        assert len(path) == PATH_MAX - 1
        return path

    f, g, h, s, p, n, d = (at(c) for c in "fghspnd")
    rec("create", write_file, f, b"x" * 5000, 0o640)
    rec("stat", observe, f)
    rec("read", read_file, f)
    rec("chmod", os.chmod, f, 0o600)
    rec("chown", os.chown, f, os.getuid(), os.getgid())
    rec("truncate", os.truncate, f, 100)
    rec("utime", os.utime, f, ns=(1_000_000_123, 2_000_000_456))
    rec("times", lambda: [os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns])
    rec("after_attrs", observe, f)
    rec("link", os.link, f, g)
    rec("link_seen", observe, g)        # the other name: hard-link coherence is its own test
    rec("rename", os.rename, g, h)
    rec("rename_seen", lambda: [observe(h), os.path.exists(g)])
    rec("symlink", os.symlink, "target", s)
    rec("readlink", os.readlink, s)
    rec("symlink_stat", observe, s)
    rec("mkfifo", os.mkfifo, p, 0o620)
    rec("mknod", os.mknod, n, 0o600 | stat.S_IFIFO)
    rec("special_stat", lambda: [observe(p), observe(n)])
    rec("mkdir_leaf", os.mkdir, d, 0o700)
    rec("readdir", listing, dirs)
    rec("rmdir", os.rmdir, d)
    rec("unlink", lambda: [os.unlink(x) for x in (h, s, p, n)])
    rec("readdir_after", listing, dirs)
    rec("too_long", write_file, dirs + "x" * (PATH_MAX - len(dirs)), b"")

    # below a directory whose own path is longer than PATH_MAX: every call relative to it
    os.chdir(dirs)
    for i in range(3):
        name = f"deep{i}".ljust(NAME_MAX, "e")
        rec(f"deep_mkdir{i}", os.mkdir, name)
        os.chdir(name)
    rec("deep_create", write_file, "file", b"deep")
    rec("deep_rename", os.rename, "file", "moved")
    rec("deep_link", os.link, "moved", "second")
    rec("deep_stat", lambda: [observe("moved"), observe("second"), read_file("second")])
    rec("deep_readdir", listing, ".")
    rec("deep_unlink", lambda: [os.unlink("moved"), os.unlink("second")])
    return rec.seen


# ------------------------------------------------------------------ times (issue 10 item 3)
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
ATTR_TIMEOUT = 1.2      # longer than the mount's attr_timeout: the next stat asks the daemon


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)


def utimensat(path: str, atime: tuple[int, int] | None, mtime: tuple[int, int] | None) -> None:
    """utimensat(AT_FDCWD, path, ...): (sec, nsec) pairs, UTIME_NOW / UTIME_OMIT as nsec."""
    times = None if atime is None else (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    if _libc.utimensat(-100, os.fsencode(path), times, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)


def times(_root: str) -> dict:
    """utimensat with nanoseconds, UTIME_NOW and UTIME_OMIT; stat, readdir and an open
    without a read leave atime alone, also once the kernel's attribute cache expired."""
    rec = Recorder()

    def both(path: str) -> list:
        st = os.stat(path, follow_symlinks=False)
        return [st.st_atime_ns, st.st_mtime_ns]

    def near_now(ns: int, before: int) -> bool:      # the kernel's clock is coarse: a tick either side
        return before - 50_000_000 <= ns <= time.time_ns() + 50_000_000

    write_file("f", b"z" * 10000)
    os.mkdir("d")
    write_file("d/g", b"y" * 100)
    old_atime, old_mtime = (978_307_200, 123_456_789), (1_577_836_800, 987_654_321)    # 2001, 2020
    for path in ("f", "d/g", "d"):
        rec(f"set {path}", utimensat, path, old_atime, old_mtime)
        rec(f"after set {path}", both, path)
    time.sleep(ATTR_TIMEOUT)
    rec("stat", lambda: [both("f"), both("d/g")])
    rec("ls -l", lambda: [[name, both(os.path.join("d", name))] for name in sorted(os.listdir("d"))])
    fd = os.open("f", os.O_RDONLY)
    os.close(fd)
    time.sleep(ATTR_TIMEOUT)
    rec("after wait", lambda: [both("f"), both("d/g")])
    rec("dir atime moved by readdir", lambda: both("d")[0] != old_atime[0] * 10**9 + old_atime[1])
    rec("omit atime", utimensat, "f", (0, UTIME_OMIT), (1_600_000_000, 1))
    rec("after omit atime", both, "f")
    rec("omit mtime", utimensat, "f", (1_000_000_000, 999_999_999), (0, UTIME_OMIT))
    rec("after omit mtime", both, "f")
    before = time.time_ns()
    rec("now mtime", utimensat, "f", (0, UTIME_OMIT), (0, UTIME_NOW))
    atime, mtime = both("f")
    rec.seen["after now mtime"] = [atime, near_now(mtime, before)]
    before = time.time_ns()
    rec("now both", utimensat, "f", None, None)
    rec.seen["after now both"] = [near_now(t, before) for t in both("f")]
    rec("negative and far", utimensat, "f", (-1, 500), (4_102_444_800, 7))     # 1969 and 2100
    rec("after negative and far", both, "f")
    return rec.seen


# ------------------------------------------------------------------ owners and modes (issue 10 item 5)
def params() -> dict:
    return json.loads(os.environ.get("POSIXOPS_PARAMS", "{}"))


def prepare_owners(root: str, other_gid: int) -> None:
    """As root: ``sgo``, a set-gid directory of a group the unprivileged user is not in."""
    os.mkdir(os.path.join(root, "sgo"))
    os.chown(os.path.join(root, "sgo"), -1, other_gid)
    os.chmod(os.path.join(root, "sgo"), 0o2777)


def owners(_root: str) -> dict:
    """New nodes in set-gid directories, set-id bits at create, chmod, chown and write."""
    rec = Recorder()
    member = params()["member_gid"]
    rec("mkdir sg", os.mkdir, "sg", 0o775)
    rec("chgrp sg", os.chown, "sg", -1, member)
    rec("chmod sg", os.chmod, "sg", 0o2775)
    rec("sg", observe, "sg")
    names = ("file", "setid", "dir", "dir/file", "dir/sub", "fifo", "symlink")
    for base in (".", "sg", "sgo"):
        rec(f"{base}/file", write_file, f"{base}/file", b"x", 0o644)
        rec(f"{base}/setid", write_file, f"{base}/setid", b"x", 0o6755)
        rec(f"{base}/dir", os.mkdir, f"{base}/dir", 0o755)
        rec(f"{base}/dir/file", write_file, f"{base}/dir/file", b"x")
        rec(f"{base}/dir/sub", os.mkdir, f"{base}/dir/sub")
        rec(f"{base}/fifo", os.mkfifo, f"{base}/fifo", 0o644)
        rec(f"{base}/symlink", os.symlink, "file", f"{base}/symlink")
        rec(f"{base} seen", lambda: [observe(f"{base}/{name}") for name in names])
    for base in (".", "sgo"):
        rec(f"chmod g+s {base}/file", os.chmod, f"{base}/file", 0o2755)
        rec(f"chmod u+s {base}/file", os.chmod, f"{base}/file", 0o4755)
        rec(f"chmod {base}/file seen", observe, f"{base}/file")
    rec("chown to member", os.chown, "setid", -1, member)
    rec("chown seen", observe, "setid")
    rec("write to set-id", write_file, "sg/setid", b"written", 0o600)
    rec("write seen", observe, "sg/setid")
    rec("truncate set-id", os.truncate, "sgo/setid", 1)
    rec("truncate seen", observe, "sgo/setid")
    return rec.seen


# ------------------------------------------------------------------ hard links (issue 10 item 6)
def links(_root: str) -> dict:
    """After every operation on one name, every name (and an fd open on one of them) shows
    the same nlink, size, mode, owner and times, at once: no waiting for a cache."""
    rec = Recorder()
    member = params().get("member_gid", os.getgid())
    live = ["f3"]
    os.mkdir("d")
    write_file("f3", b"a" * 100)
    os.stat("f3")                 # cached by the kernel while it has one link
    held = os.open("f3", os.O_RDONLY) if params().get("open_before_link") else None

    def step(label: str, fn, *args) -> None:
        rec(label, fn, *args)
        fds = [] if held is None else [held]
        stats = [os.stat(name, follow_symlinks=False) for name in live] + [os.fstat(fd) for fd in fds]
        rec.seen[label + " seen"] = [observe(name) for name in live] + [observe("", fd) for fd in fds]
        rec.seen[label + " same times"] = len({(st.st_mtime_ns, st.st_ctime_ns) for st in stats}) == 1

    def append(name: str, size: int) -> None:
        with open(name, "ab") as f:
            f.write(b"w" * size)

    step("link f3 f4", lambda: (os.link("f3", "f4"), live.append("f4")))
    held = os.open("f3", os.O_RDONLY) if held is None else held
    step("write f3", append, "f3", 5000)
    step("link f4 d/f5", lambda: (os.link("f4", "d/f5"), live.append("d/f5")))
    step("chmod f4", os.chmod, "f4", 0o600)
    step("chown d/f5", os.chown, "d/f5", -1, member)
    step("truncate f3", os.truncate, "f3", 10)
    step("utime d/f5", os.utime, "d/f5", (1_000_000_000, 2_000_000_000))
    fd = os.open("f4", os.O_WRONLY)
    step("pwrite f4 open", os.pwrite, fd, b"p" * 3000, 7000)
    step("ftruncate f4 open", os.ftruncate, fd, 20)
    os.close(fd)
    step("unlink f3", lambda: (os.unlink("f3"), live.remove("f3")))
    step("rename d/f5 f6", lambda: (os.rename("d/f5", "f6"), live.remove("d/f5"), live.append("f6")))
    write_file("g", b"g" * 7)
    step("rename g over f4", lambda: (os.rename("g", "f4"), live.remove("f4")))
    step("link f6 f7", lambda: (os.link("f6", "f7"), live.append("f7")))
    step("unlink f6", lambda: (os.unlink("f6"), live.remove("f6")))
    os.close(held)
    rec("f4 is g", read_file, "f4")
    return rec.seen


# ------------------------------------------------------------------ directory entries
def entries(_root: str) -> dict:
    """readdir's d_ino is the st_ino of the same name (find, du and git compare the two)."""
    rec = Recorder()
    os.mkdir("d")
    write_file("d/f", b"x")
    os.symlink("f", "d/s")
    os.mkfifo("d/p")
    os.link("d/f", "d/h")
    with os.scandir("d") as listing_:
        rec.seen["d_ino is st_ino"] = {entry.name: entry.inode() == os.lstat(entry.path).st_ino
                                       for entry in listing_}
    rec.seen["types"] = sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink())
                               for e in os.scandir("."))
    return rec.seen


SCENARIOS = {"long_paths": long_paths, "times": times, "owners": owners, "links": links,
             "entries": entries}


def main(argv: list[str]) -> int:
    scenario, root = argv
    os.chdir(root)
    os.umask(0o022)
    print(json.dumps(SCENARIOS[scenario](root)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
