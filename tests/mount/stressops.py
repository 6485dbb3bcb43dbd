"""Seeded namespace and data operations for the stress tests (test_stress.py).

``worker(root, seed, prefix, count, own_dirs_only)`` runs ``count`` operations chosen by
``random.Random(seed)`` in the tree ``root``: create, write, truncate, rename (also over an
existing name), link, unlink (also of a file still open), mkdir, rmdir, directory rename,
chmod, symlink, fsync. It returns one result per operation (a value or an errno name),
so the same seed on the mount and on a plain directory must give the same list.

Names: files ``PREFIX f0..f7``, directories ``PREFIX s0..s2``, in the shared directories
SHARED (made up front) and in the worker's own directories. With ``own_dirs_only`` a
worker never touches a name of another prefix, so workers running at once in one tree
end in the same tree whatever the interleaving; without it (one worker, prefix "") it
also renames and removes the shared directories, which concurrent workers could not do
and still agree.

``python -m tests.mount.stressops ROOT SEED PREFIX COUNT OWN`` prints the results as JSON.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import stat
import sys

SHARED = ("d0", "d1", "d2")
MODES = (0o644, 0o600, 0o755, 0o640, 0o444)


def prepare(root: str) -> None:
    for name in SHARED:
        os.mkdir(os.path.join(root, name))


class Worker:
    def __init__(self, root: str, seed: int, prefix: str, own_dirs_only: bool):
        self.root = root
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.own_dirs_only = own_dirs_only
        self.files = [f"{prefix}f{i}" for i in range(8)]
        self.subdirs = [f"{prefix}s{i}" for i in range(3)]

    def _dir(self) -> str:
        """A directory to work in: the top, a shared one, or one of ours inside those."""
        top = self.rng.choice(("",) + SHARED)
        if self.rng.random() < 0.4:
            return os.path.join(top, self.rng.choice(self.subdirs))
        return top

    def _file(self) -> str:
        return os.path.join(self._dir(), self.rng.choice(self.files))

    def _p(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    KINDS = ("create", "create", "write", "write", "truncate", "rename", "rename", "link", "unlink",
             "unlink_open", "mkdir", "rmdir", "rename_dir", "chmod", "symlink", "fsync")

    def _create(self):
        data = self.rng.randbytes(self.rng.choice((0, 1, 100, 4096, 5000, 20000)))
        fd = os.open(self._p(self._file()), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)

    def _write(self):
        path, offset = self._p(self._file()), self.rng.randrange(0, 30000)
        data = self.rng.randbytes(self.rng.randrange(1, 9000))
        fd = os.open(path, os.O_WRONLY)
        try:
            return os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def _truncate(self):
        return os.truncate(self._p(self._file()), self.rng.randrange(0, 25000))

    def _rename(self):
        return os.rename(self._p(self._file()), self._p(self._file()))

    def _link(self):
        return os.link(self._p(self._file()), self._p(self._file()), follow_symlinks=False)

    def _unlink(self):
        return os.unlink(self._p(self._file()))

    def _unlink_open(self):
        """Unlink a file while it is open, write through the fd, then close it."""
        path = self._p(self._file())
        fd = os.open(path, os.O_RDWR)
        try:
            os.unlink(path)
            written = os.pwrite(fd, b"after unlink", 10)
            return [written, os.fstat(fd).st_nlink, os.fstat(fd).st_size]
        finally:
            os.close(fd)

    def _mkdir(self):
        return os.mkdir(self._p(os.path.join(self.rng.choice(("",) + SHARED), self.rng.choice(self.subdirs))))

    def _shared_or_own(self) -> str:
        if not self.own_dirs_only and self.rng.random() < 0.3:
            return self.rng.choice(SHARED)
        return os.path.join(self.rng.choice(("",) + SHARED), self.rng.choice(self.subdirs))

    def _rmdir(self):
        return os.rmdir(self._p(self._shared_or_own()))

    def _rename_dir(self):
        return os.rename(self._p(self._shared_or_own()), self._p(self._shared_or_own()))

    def _chmod(self):
        return os.chmod(self._p(self._file()), self.rng.choice(MODES))

    def _symlink(self):
        return os.symlink(self.rng.choice(self.files), self._p(self._file()))

    def _fsync(self):
        fd = os.open(self._p(self._file()), os.O_RDONLY)
        try:
            return os.fsync(fd)
        finally:
            os.close(fd)


def worker(root: str, seed: int, prefix: str, count: int, own_dirs_only: bool) -> list:
    w = Worker(root, seed, prefix, own_dirs_only)
    results = []
    for _ in range(count):
        kind = w.rng.choice(Worker.KINDS)
        try:
            value = getattr(w, "_" + kind)()
        except OSError as error:
            value = errno.errorcode.get(error.errno, str(error.errno))
        results.append([kind, value])
    return results


def snapshot(root: str) -> dict:
    """Every entry under ``root``: type, permission bits, nlink, size and content digest
    (files), target (symlinks); what the mount and a plain directory must agree on."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            entry = [stat.filemode(st.st_mode), st.st_nlink]
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entry += [st.st_size, hashlib.sha256(f.read()).hexdigest()[:16]]
            elif stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(path))
            tree[os.path.relpath(path, root)] = entry
    return tree


if __name__ == "__main__":
    root_, seed_, prefix_, count_, own_ = sys.argv[1:]
    print(json.dumps(worker(root_, int(seed_), prefix_, int(count_), own_ == "1")))
