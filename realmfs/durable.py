"""Making changes to the backing file system durable and faithful, written once.

* ``fsync_dir``: fsync a directory, so that names created, renamed or removed in it
  survive a crash (a file's own fsync does not cover its name);
* ``write_atomically``: replace a small file whole (temp file, fsync, rename, fsync of
  the directory): a crash leaves the old content or the new, never half;
* ``keep_metadata``: give a file that replaces another (encrypt, decrypt, rekey, a
  converting rename) the owner, permission bits and times of the one it replaces.
"""

from __future__ import annotations

import os

TEMP_SUFFIX = ".tmp"


def fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """``path`` + TEMP_SUFFIX, written and fsynced, renamed over ``path``; then the directory."""
    temp = path + TEMP_SUFFIX
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, path)
    fsync_dir(os.path.dirname(path))


def keep_metadata(path: str, st: os.stat_result) -> None:
    """Give ``path`` the owner (only root can), permission bits and times of ``st``: a
    file or directory realmfs rewrites looks as it did. Call it after the last read of
    ``path``: a read may move atime."""
    if os.geteuid() == 0:    # only root can give a file away; else the tool owns both
        os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, st.st_mode & 0o7777)        # after chown, which clears set-id bits
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
