"""The FUSE operations: map mount paths to backing entries and delegate.

Metadata goes to the ``*at`` form of ``os.*`` on (directory fd, name) under BACKING's
fd (backingdir.py: no PATH_MAX limit below the mountpoint, no symlink followed); file
data goes to the shared EncryptedFile of the open-file table. ``__call__`` (fusepy's dispatcher;
fusebinding.py routes mfusepy's callbacks through it too) is the one place exceptions become errno:

* RealmfsError -> its ``errno``; IntegrityError -> EIO plus one log line naming
  file and page (rate-limited by log.py);
* OSError -> its errno (EIO if it has none); silently when the errno is one the
  backing filesystem gives for what the caller asked (``EXPECTED_ERRNOS``: a missing
  name, no permission, a full disk...), else with one log line (rate-limited per
  operation, file and errno) naming operation, file, offset and where it was raised:
  EINVAL, EBADF, EFAULT... from our own code are bugs, never the application's news;
* anything else -> EIO plus a traceback in the log.

Nothing reaches the binding's own handler, whose default is EINVAL.

Invariants
* Every regular file has one kind, from the config's patterns (``config.kind_of``, the
  one place it is decided): ``realm`` and ``header`` files are encrypted, ``plain`` ones
  (Realm Core's auxiliary files: ``X.realm.lock``, anything in ``X.realm.management/``)
  pass through byte for byte, as Realm Core leaves them. FIFOs, sockets and device nodes
  pass through as they are (there is no data to encrypt; Realm Core's ``.note``).
* ``getattr`` reports the logical size: from the EncryptedFile when open, else
  from the physical size (realm layout and plain files) or the header page (header layout),
  cached per inode with (mtime, ctime, physical size) and refreshed at every last
  close, so ``ls`` decrypts nothing and never sees a stale size.
* The config and lock files of BACKING are invisible and cannot be created.
* A file never changes layout under its data. A rename between names of two kinds
  re-encodes a closed regular file into the target's kind (transcode.py; Realm Core's
  compaction renames ``X.realm.tmp_compaction_space`` to ``X.realm``); for a file that is
  open or has other hard links it is EXDEV, and so is every such hard link, and the
  rename of a non-empty directory into or out of a plain name (``mv`` then copies,
  file by file, each into its own kind). The rename's temporaries
  (``RENAME_TEMP_PREFIX``) are invisible at every level and cannot be created.
* The kernel page cache is kept across opens (keep_cache) except for files with
  several hard links: libfuse shows each link as its own kernel inode, so those
  are re-read at every open (close-to-open coherence between names).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections import OrderedDict

from ..format import fileheader
from ..storage import transcode
from .backingdir import BackingDir, open_quietly, proc_path, set_times
from .fusebinding import FuseOSError, Operations, fuse_get_context, init_conn
from ..keys.config import FUSE_HIDDEN_PREFIX, KIND_HEADER, KIND_PLAIN, KIND_REALM, RENAME_TEMP_PREFIX
from ..errors import IntegrityError, RealmfsError
from ..format.fileheader import HeaderProblem
from ..format.layout import HEADER_SIZE, body_to_data_size
from .linkattrs import LinkAttrs
from .openfiles import OpenFiles
from ..format.pagecipher import PageCipher

log = logging.getLogger(__name__)

SIZE_CACHE_ENTRIES = 4096
# errnos of the backing filesystem that answer what the application asked (user
# mistakes and conditions it must handle): returned without a log line
EXPECTED_ERRNOS = frozenset({
    errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR, errno.EACCES,
    errno.EPERM, errno.ENAMETOOLONG, errno.ELOOP, errno.EMLINK, errno.EXDEV, errno.EBUSY,
    errno.ETXTBSY, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG,
})
# where an operation's byte offset (or new length) is among fusepy's arguments
_OFFSET_ARGUMENT = {"read": 2, "write": 2, "truncate": 1}
HIDDEN_PREFIX = FUSE_HIDDEN_PREFIX     # libfuse's name for unlinked files that are still open


def stat_dict(st: os.stat_result, size: int | None = None, nlink: int | None = None) -> dict:
    result = {
        "st_mode": st.st_mode, "st_ino": st.st_ino, "st_nlink": st.st_nlink if nlink is None else nlink,
        "st_uid": st.st_uid, "st_gid": st.st_gid,
        "st_size": st.st_size if size is None else size,
        # use_ns: fusepy takes integers of nanoseconds
        "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns,
        "st_blocks": st.st_blocks, "st_blksize": st.st_blksize, "st_rdev": st.st_rdev,
    }
    return result


class RealmfsOps(Operations):
    use_ns = True
    # Handle-based operations get no path (None): they work by fh alone, and libfuse
    # need not build a path for every read and write.
    flag_nullpath_ok = True
    flag_nopath = True
    flag_utime_omit_ok = True   # utimens sees UTIME_NOW/UTIME_OMIT, so touch -a / -m work
    ioctl = None        # not registered: fusepy's ioctl cannot take a missing path
    # No xattrs: unregistered, libfuse answers ENOSYS once and the kernel stops asking
    # (else every write() costs a getxattr("security.capability") round trip).
    getxattr = setxattr = listxattr = removexattr = None

    def __init__(self, backing: str, cipher: PageCipher, kind_of, reserved_names,
                 read_only: bool = False, timeouts: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        self.backing = os.path.realpath(backing)
        self.root = BackingDir(self.backing)     # every path is resolved under this fd
        self.cipher = cipher
        self.kind_of = kind_of      # mount path -> config.KIND_* (Config.kind_of)
        self.reserved = frozenset(reserved_names)
        self.read_only = read_only
        self.files = OpenFiles(cipher, read_only=read_only)
        self.links = LinkAttrs(timeouts)     # entry, negative, attr: hard links coherent (linkattrs.py)
        self._sizes: OrderedDict[tuple, int] = OrderedDict()
        self._sizes_lock = threading.Lock()
        self.destroyed = False
        self._dirs: dict[int, tuple[str, int]] = {}   # opendir handle -> (path, fd): readdir gets no path
        self._dir_numbers = iter(range(1, 1 << 62))

    # ------------------------------------------------------------------ the one errno decision
    def __call__(self, op, *args):
        method = getattr(self, op, None)
        if method is None:
            raise FuseOSError(errno.ENOSYS)
        try:
            return method(*args)
        except FuseOSError:
            raise
        except IntegrityError as error:
            log.error("integrity failure: %s (returned EIO to %s)", error, op)
            raise FuseOSError(errno.EIO) from None
        except RealmfsError as error:
            log.error("%s %s: %s", op, args[0] if args else "", error)
            raise FuseOSError(error.errno or errno.EIO) from None
        except OSError as error:
            code = error.errno or errno.EIO
            if code not in EXPECTED_ERRNOS:
                self._log_returned_error(op, args, error, code)
            raise FuseOSError(code) from None
        except Exception:  # noqa: BLE001 - never fall through to fusepy's EINVAL
            log.exception("internal error in %s %s", op, args[0] if args else "")
            raise FuseOSError(errno.EIO) from None

    def _log_returned_error(self, op: str, args: tuple, error: OSError, code: int) -> None:
        """One line for an unexpected errno the application gets: operation, file, offset
        and the innermost frame that raised it."""
        name = args[0] if args and isinstance(args[0], str) else None
        if name is None:        # handle-based operations get no path (flag_nopath)
            try:
                name = self.files.get(next((a.fh for a in args if hasattr(a, "fh")), None)).open_file.name
            except OSError:
                pass
        position = _OFFSET_ARGUMENT.get(op)
        offset = f" at offset {args[position]}" if position is not None and len(args) > position else ""
        frame = error.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        where = (f"{os.path.basename(frame.tb_frame.f_code.co_filename)}:{frame.tb_lineno} "
                 f"in {frame.tb_frame.f_code.co_name}") if frame is not None else "?"
        log.error("%s of %s%s returned %s to the application: %s (raised at %s)", op, name or "?",
                  offset, errno.errorcode.get(code, code), error, where,
                  extra={"ratelimit_key": f"returned-errno:{op}:{name}:{code}"})

    # ------------------------------------------------------------------ paths
    def _at(self, path: str):
        """(directory fd, name) of an existing entry: a context (backingdir.py)."""
        if self._is_reserved(path):
            raise FuseOSError(errno.ENOENT)
        return self.root.parent(path)

    def _at_new(self, path: str):
        """(directory fd, name) for something about to be created: reserved names are refused."""
        if self._is_reserved(path):
            raise FuseOSError(errno.EPERM)
        return self.root.parent(path)

    def _is_reserved(self, path: str) -> bool:
        """The config and lock at the top, a rename's temporaries anywhere."""
        name = path.rpartition("/")[2]
        return (path.count("/") == 1 and name in self.reserved) or name.startswith(RENAME_TEMP_PREFIX)

    def _kind(self, path: str) -> str:
        return self.kind_of(path)

    def sweep_hidden(self) -> int:
        """Remove what a crashed daemon left: .fuse_hidden* files (unlinked files nobody can
        reach) and the temporaries of an unfinished rename across layouts."""
        removed = 0
        for root, _dirs, files, dir_fd in os.fwalk(".", dir_fd=self.root.fd):
            for name in files:
                if name.startswith(HIDDEN_PREFIX) or transcode.is_rename_temp(name):
                    try:
                        os.unlink(name, dir_fd=dir_fd)
                        removed += 1
                    except OSError as error:
                        log.warning("could not remove %s: %s", os.path.join(root, name), error)
        if removed:
            log.warning("removed %d unlinked-but-open file(s) left by an unclean unmount", removed)
        return removed

    def _owner(self, dir_fd: int, name: str, mode: int | None = None) -> None:
        """Give a new node to the calling user when the daemon runs as root, as ext4 would:
        the caller's uid; the directory's gid if it is set-gid (the backing file system
        already gave a new directory the set-gid bit), else the caller's gid. chown clears
        the set-id bits of a file, so ``mode`` (what the kernel asked for, its set-gid
        already dropped where the caller may not have it) is put back after it."""
        if os.geteuid() != 0:
            return      # the backing file system applies its own rules to the daemon's user
        uid, gid, _pid = fuse_get_context()
        parent = os.fstat(dir_fd)
        if parent.st_mode & stat.S_ISGID:
            gid = parent.st_gid
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (st.st_uid, st.st_gid) == (uid, gid):
            return
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        if mode is not None and mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISDIR(st.st_mode):
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dir_fd, follow_symlinks=False)

    # ------------------------------------------------------------------ attributes
    def _handle(self, fh):
        return self.files.get(fh.fh if hasattr(fh, "fh") else fh)

    def _backing_fd(self, fh) -> int:
        return self._handle(fh).open_file.fd

    def getattr(self, path, fh=None):
        if fh:
            handle = self._handle(fh)
            st = os.fstat(handle.open_file.fd)
            self.links.replying(st, is_open=True)
            # libfuse itself takes one off for a hidden name's own node
            return stat_dict(st, handle.file.size, self.links.shown_nlink(st) + handle.hidden)
        with self._at(path) as (dir_fd, name):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                self.links.replying(st, is_open=False)
                return stat_dict(st)
            entry = self.files.lookup_inode(st.st_dev, st.st_ino)
            self.links.replying(st, is_open=entry is not None)
            nlink = self.links.shown_nlink(st) + name.startswith(HIDDEN_PREFIX)
            return stat_dict(st, self._logical_size(dir_fd, name, path, st, entry), nlink)

    def _logical_size(self, dir_fd: int, name: str, path: str, st: os.stat_result, entry) -> int:
        if entry is not None:
            return entry.file.size
        if st.st_size == 0:
            return 0
        kind = self._kind(path)
        if kind == KIND_PLAIN:
            return st.st_size
        if kind == KIND_REALM:
            return body_to_data_size(st.st_size)
        with self._sizes_lock:
            cached = self._sizes.get((st.st_dev, st.st_ino))
        if cached is not None and cached[0] == (st.st_mtime_ns, st.st_ctime_ns, st.st_size):
            return cached[1]
        fd = open_quietly(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd)
        try:
            page = os.pread(fd, HEADER_SIZE, 0)
        finally:
            os.close(fd)
        try:
            size = fileheader.unpack_page(page, self.cipher.mac_message).size
        except HeaderProblem as problem:
            # Not EIO here: a failing stat would make the file impossible to delete.
            log.error("header of %s: %s; shown with size 0, reads give EIO", path, problem)
            return 0
        self._remember_size(st, size)
        return size

    def _remember_size(self, st: os.stat_result, size: int) -> None:
        with self._sizes_lock:
            self._sizes[(st.st_dev, st.st_ino)] = ((st.st_mtime_ns, st.st_ctime_ns, st.st_size), size)
            self._sizes.move_to_end((st.st_dev, st.st_ino))
            if len(self._sizes) > SIZE_CACHE_ENTRIES:
                self._sizes.popitem(last=False)

    def _forget_size(self, st: os.stat_result) -> None:
        """Drop the cached size of an inode that a rename replaced or removed (inode
        numbers are reused)."""
        with self._sizes_lock:
            self._sizes.pop((st.st_dev, st.st_ino), None)

    def _release(self, number: int) -> None:
        """Drop a handle; at the last one, remember the size it leaves (timestamps are too
        coarse to notice two header updates that keep the physical size)."""
        handle = self.files.get(number)
        entry = handle.open_file
        if entry.refcount == 1 and entry.kind == KIND_HEADER:
            try:
                self._remember_size(os.fstat(entry.fd), entry.file.size)
            except OSError:
                pass
        self.files.release(number)

    def opendir(self, path):
        if self._is_reserved(path):
            raise FuseOSError(errno.ENOENT)
        fd = self.root.open_dir(path)
        number = next(self._dir_numbers)
        self._dirs[number] = (path, fd)
        return number

    def releasedir(self, path, fh):
        entry = self._dirs.pop(fh, None)
        if entry is not None:
            os.close(entry[1])
        return 0

    def _dir(self, fh) -> tuple[str, int]:
        entry = self._dirs.get(fh)
        if entry is None:
            raise FuseOSError(errno.EBADF)
        return entry

    def readdir(self, path, fh):
        """Names with their inode numbers (use_ino), so that d_ino matches st_ino as on
        any other file system; libfuse 3 would otherwise report an unknown inode."""
        path, fd = self._dir(fh)
        entries = [(".", {"st_ino": os.fstat(fd).st_ino}, 0), ".."]
        with os.scandir(fd) as listing:
            for entry in listing:
                name = entry.name
                if ((path == "/" and name in self.reserved)
                        or name.startswith((HIDDEN_PREFIX, RENAME_TEMP_PREFIX))):
                    continue
                entries.append((name, {"st_ino": entry.inode()}, 0))
        return entries

    def statfs(self, path):
        sv = os.statvfs(self.root.fd)
        return {key: getattr(sv, key) for key in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
            "f_files", "f_flag", "f_frsize", "f_namemax")}

    def access(self, path, amode):
        if self._is_reserved(path):      # hidden names do not exist; permission checks: default_permissions
            raise FuseOSError(errno.ENOENT)
        return 0

    # A setattr that comes with a file handle (libfuse 3 then gives no path: nullpath_ok)
    # goes to the open backing file; the kernel sends one e.g. when it writes back
    # cached times.
    def chmod(self, path, mode, fh=None):
        if fh:
            os.fchmod(self._backing_fd(fh), stat.S_IMODE(mode))
            return
        with self._at(path) as (dir_fd, name):
            try:
                os.chmod(name, stat.S_IMODE(mode), dir_fd=dir_fd, follow_symlinks=False)
            except ValueError:       # CPython's answer for a symlink: Linux has no lchmod
                raise FuseOSError(errno.EOPNOTSUPP) from None

    def chown(self, path, uid, gid, fh=None):
        if fh:
            os.fchown(self._backing_fd(fh), uid, gid)
            return
        with self._at(path) as (dir_fd, name):
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

    def utimens(self, path, times=None, fh=None):
        if fh:
            set_times(self._backing_fd(fh), None, *(times or (None, None)))
            return
        with self._at(path) as (dir_fd, name):
            set_times(dir_fd, name, *(times or (None, None)))

    def readlink(self, path):
        with self._at(path) as (dir_fd, name):
            return os.readlink(name, dir_fd=dir_fd)

    # ------------------------------------------------------------------ namespace
    def mkdir(self, path, mode):
        with self._at_new(path) as (dir_fd, name):
            os.mkdir(name, mode, dir_fd=dir_fd)
            self._owner(dir_fd, name)

    def rmdir(self, path):
        with self._at(path) as (dir_fd, name):
            os.rmdir(name, dir_fd=dir_fd)

    def unlink(self, path):
        with self._at(path) as (dir_fd, name):
            if name.startswith(HIDDEN_PREFIX):     # libfuse drops a hidden name at last close
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                os.unlink(name, dir_fd=dir_fd)
                self.links.hidden(st, -1)
                return
            os.unlink(name, dir_fd=dir_fd)

    def symlink(self, target, source):
        # fusepy: ``target`` is the new link's path, ``source`` its contents
        with self._at_new(target) as (dir_fd, name):
            os.symlink(source, name, dir_fd=dir_fd)
            self._owner(dir_fd, name)

    def _crosses_layouts(self, old: str, new: str) -> bool:
        # libfuse hides an unlinked open file as .fuse_hidden*: a plain rename, the open
        # EncryptedFile keeps its layout and the file only waits for its last close
        return self._kind(old) != self._kind(new) and not os.path.basename(new).startswith(HIDDEN_PREFIX)

    def rename(self, old, new):
        with self._at(old) as (old_fd, old_name), self._at_new(new) as (new_fd, new_name):
            if self._crosses_layouts(old, new):
                st = os.stat(old_name, dir_fd=old_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):     # specials hold no pages
                    # transcode.py takes paths: short ones through /proc, whatever the depth
                    self._rename_converting(old, new, proc_path(old_fd, old_name),
                                            proc_path(new_fd, new_name), st)
                    return
                if (stat.S_ISDIR(st.st_mode) and (self._kind(old) == KIND_PLAIN) != (self._kind(new) == KIND_PLAIN)
                        and os.listdir(proc_path(old_fd, old_name))):
                    # the files inside would change kind under their data: mv copies them instead
                    log.warning("rename %s -> %s refused (EXDEV): the directory's files would change "
                                "between plain and encrypted", old, new)
                    raise FuseOSError(errno.EXDEV)
            hiding = new_name.startswith(HIDDEN_PREFIX)      # libfuse hides a name still open
            st = os.stat(old_name, dir_fd=old_fd, follow_symlinks=False) if hiding else None
            os.rename(old_name, new_name, src_dir_fd=old_fd, dst_dir_fd=new_fd)
        self.files.renamed(old, new, hiding)
        if hiding:
            self.links.hidden(st, +1)

    def _rename_converting(self, old: str, new: str, real_old: str, real_new: str,
                           st: os.stat_result) -> None:
        """Rename a regular file into the other layout by re-encrypting it (transcode.py)."""
        if self.read_only:
            raise FuseOSError(errno.EROFS)
        if st.st_nlink > 1:
            log.warning("rename %s -> %s refused (EXDEV): the file has other hard links, and one "
                        "file cannot have two layouts", old, new)
            raise FuseOSError(errno.EXDEV)
        try:
            target = os.lstat(real_new)
        except FileNotFoundError:
            target = None
        if target is not None and stat.S_ISDIR(target.st_mode):
            raise FuseOSError(errno.EISDIR)      # what rename(2) says, before any copying
        if not self.files.hold_closed(st.st_dev, st.st_ino):
            log.warning("rename %s -> %s refused (EXDEV): the file is open, and changing its layout "
                        "(realm, header, plain) needs it closed; close it first, or copy it", old, new)
            raise FuseOSError(errno.EXDEV)
        try:
            transcode.convert_for_rename(real_old, real_new, self.cipher, self._kind(old),
                                         self._kind(new), st)
        finally:
            self.files.release_held(st.st_dev, st.st_ino)
            self._forget_size(st)
            if target is not None:
                self._forget_size(target)

    def link(self, target, source):
        # fusepy: ``target`` is the new name, ``source`` the existing file. libfuse's
        # high-level API gives each name its own kernel inode (and page cache), so opens
        # of a file with several links drop the cached pages (see _keep_cache): names
        # are then coherent from close to open, as on NFS.
        with self._at(source) as (src_fd, src_name), self._at_new(target) as (dst_fd, dst_name):
            if (self._crosses_layouts(source, target)
                    and stat.S_ISREG(os.stat(src_name, dir_fd=src_fd, follow_symlinks=False).st_mode)):
                raise FuseOSError(errno.EXDEV)     # one file, two names: it cannot have two layouts
            os.link(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        self.links.linked(source)

    def mknod(self, path, mode, dev):
        with self._at_new(path) as (dir_fd, name):
            if stat.S_ISREG(mode):
                # a regular file made by mknod still needs its header: create it through the table
                number = self.files.open(name, path, self._kind(path), os.O_EXCL, stat.S_IMODE(mode),
                                         dir_fd=dir_fd)
                self._release(number)
            else:
                os.mknod(name, mode, dev, dir_fd=dir_fd)
            self._owner(dir_fd, name, mode)

    # ------------------------------------------------------------------ file data
    def create(self, path, mode, fi):
        with self._at_new(path) as (dir_fd, name):
            number = self.files.open(name, path, self._kind(path), fi.flags, stat.S_IMODE(mode),
                                     dir_fd=dir_fd)
            try:
                self._owner(dir_fd, name, mode)
                file = self.files.get(number).file
                if fi.flags & os.O_TRUNC and file.size:
                    file.truncate(0)
            except BaseException:
                self._release(number)
                raise
        fi.fh = number
        fi.keep_cache = 1
        return 0

    def open(self, path, fi):
        accmode = fi.flags & os.O_ACCMODE
        if self.read_only and (accmode != os.O_RDONLY or fi.flags & os.O_TRUNC):
            raise FuseOSError(errno.EROFS)
        with self._at(path) as (dir_fd, name):
            number = self.files.open(name, path, self._kind(path), fi.flags, dir_fd=dir_fd)
        handle = self.files.get(number)
        try:
            if fi.flags & os.O_TRUNC and accmode != os.O_RDONLY:
                handle.file.truncate(0)
        except BaseException:
            self._release(number)
            raise
        fi.fh = number
        # Keep the page cache across opens: the daemon is BACKING's only writer, and every
        # write reaches the kernel's cache of this inode first. Not for a file with other
        # hard links: their kernel inodes have caches of their own.
        fi.keep_cache = 1 if handle.nlink <= 1 else 0
        return 0

    def read(self, path, size, offset, fh):
        return self._handle(fh).file.read(offset, size)

    def write(self, path, data, offset, fh):
        handle = self._handle(fh)
        return handle.file.write(offset, data)

    def truncate(self, path, length, fh=None):
        if self.read_only:
            raise FuseOSError(errno.EROFS)
        if fh:
            self._handle(fh).file.truncate(length)
            return 0
        with self._at(path) as (dir_fd, name):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            entry = self.files.lookup_inode(st.st_dev, st.st_ino)
            if entry is not None:
                entry.file.truncate(length)
                return 0
            number = self.files.open(name, path, self._kind(path), os.O_WRONLY, dir_fd=dir_fd)
        try:
            self.files.get(number).file.truncate(length)
        finally:
            self._release(number)
        return 0

    def flush(self, path, fh):
        return 0   # EncryptedFile buffers nothing: every write already reached the backing file

    def release(self, path, fh):
        self._release(fh.fh if hasattr(fh, "fh") else fh)
        return 0

    def fsync(self, path, datasync, fh):
        self._handle(fh).file.fsync(bool(datasync))
        return 0

    def fsyncdir(self, path, datasync, fh):
        os.fsync(self._dir(fh)[1])
        return 0

    # ------------------------------------------------------------------ lifecycle
    def init(self, path):
        """fusepy's init (libfuse 2, where there is no connection to set up here)."""
        self.init_with_config(None, None)

    def init_with_config(self, conn, config):
        """mfusepy's init: ``config`` is libfuse 3's own fuse_config (None on libfuse 2)."""
        init_conn(conn)
        self.links.bind(config)
        log.info("mounted %s", self.backing)

    def destroy(self, path):
        """Seal: fsync and close every open file, then flush the backing filesystem."""
        if self.destroyed:
            return
        self.destroyed = True
        count = self.files.close_all()
        syncfs(self.backing)
        log.info("sealed %s (%d files were open)", self.backing, count)


def syncfs(path: str) -> None:
    """syncfs(2) on the filesystem holding ``path``: every backing file reaches the disk,
    including files closed earlier without fsync."""
    import ctypes
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
