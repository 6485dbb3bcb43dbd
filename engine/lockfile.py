"""Cross-process writer lock and reader table, in a lock file beside the database.

Lock file layout (one page, all zero when created):
    byte 0        fcntl lock = the writer lock
    byte 1        fcntl lock = reader-table mutex (held only while claiming a slot)
    64 + 16*i     reader slot i: (pid u64, txnid u64), native byte order (the
                  file is shared by processes of one host only); pid 0 = free

Invariants:
- A live read snapshot always owns a slot whose txnid is <= the txnid it reads
  (txnid 0 while it is still choosing), so the writer's minimum over slots is a
  safe lower bound of every snapshot in every process.
- A slot in use never looks free, not even for an instant: each field is one
  aligned 8-byte word, stored with a single store (a memoryview of 'Q' words);
  the pid word is written only by claim (under the table mutex) and by release
  (one store of 0); the txnid word only by the slot's owner.  (struct.pack_into
  is not usable here: it zero-fills the whole record before writing it byte by
  byte, so republishing a slot made it read as (0, 0) for a moment; a reader in
  another process claiming a slot at that moment took the same slot, and when
  either snapshot ended the other one was no longer registered, so the writer
  reused pages under it: "page N is not a valid tree node".)
- The txnid word goes from 0 to the txnid read, once per attempt; a torn read
  of it (on hardware that could tear an aligned word) would show a value <=
  the new one, which only pins more pages.
- Slots of dead pids are ignored by the writer and reclaimed by the next claim.
- fcntl locks belong to a process and all of them drop when *any* descriptor of
  the file is closed, so each process keeps exactly one shared handle per lock
  file (refcounted registry below); threads are serialised with thread locks.
  A forked child starts with an empty registry: it must open databases itself
  and not use handles inherited from its parent.
"""

import fcntl
import mmap
import os
import threading

from .errors import TransactionError

LOCK_FILE_SIZE = 4096
WRITER_BYTE = 0
READER_MUTEX_BYTE = 1
SLOTS_OFFSET = 64
SLOT_WORDS = 2                   # pid, txnid
SLOT_COUNT = (LOCK_FILE_SIZE - SLOTS_OFFSET) // (8 * SLOT_WORDS)

_registry = {}
_registry_lock = threading.Lock()


def _forget_inherited_handles():
    # A forked child holds none of the parent's fcntl locks; databases it opens
    # must get their own handles rather than reuse the inherited ones.
    global _registry_lock
    _registry.clear()
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_inherited_handles)


def lock_path_for(db_path: str) -> str:
    return db_path + ".lock"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not: it has exited, it reads nothing any more, so
    its reader slot pins no pages. realmfs/storage/backinglock.py answers the same way (the
    engine never imports realmfs; tests/engine/test_pid_alive.py and tests/unit/test_pid_alive_both.py pin it)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                                # another user's process; it may still be a zombie
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False                        # gone since the kill
    except OSError:
        return True                         # /proc hides it (hidepid): the kill said it exists


class _Handle:
    def __init__(self, path: str, fd: int, key):
        self.path = path
        self.fd = fd
        self.key = key
        self.refs = 0
        self.map = mmap.mmap(fd, LOCK_FILE_SIZE, mmap.MAP_SHARED)
        # One 8-byte word per field: item assignment is a single aligned store.
        self.words = memoryview(self.map).cast("Q")
        self.writer_thread_lock = threading.Lock()
        self.writer_owner = None
        self.table_lock = threading.Lock()


class LockFile:
    """Process-shared handle on a database's lock file."""

    def __init__(self, db_path: str, create: bool = True):
        path = lock_path_for(db_path)
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            with _registry_lock:
                handle = _registry.get(key)
                if handle is None:
                    if st.st_size < LOCK_FILE_SIZE:
                        os.ftruncate(fd, LOCK_FILE_SIZE)
                    handle = _Handle(path, fd, key)
                    _registry[key] = handle
                    fd = -1
                handle.refs += 1
        finally:
            if fd >= 0:
                os.close(fd)  # same file already open in this process: keep one fd
        self._h = handle
        self._closed = False

    @classmethod
    def existing(cls, db_path: str):
        """The lock file's handle if the file exists, else None (creates nothing)."""
        try:
            return cls(db_path, create=False)
        except FileNotFoundError:
            return None

    def close(self):
        if self._closed:
            return
        self._closed = True
        h = self._h
        with _registry_lock:
            h.refs -= 1
            if h.refs == 0:
                if _registry.get(h.key) is h:
                    del _registry[h.key]
                h.words.release()
                h.map.close()
                os.close(h.fd)

    # -- writer lock -------------------------------------------------------

    def acquire_writer(self):
        h = self._h
        if h.writer_owner == threading.get_ident():
            raise TransactionError(f"{h.path}: this thread already has an open write transaction")
        h.writer_thread_lock.acquire()
        try:
            fcntl.lockf(h.fd, fcntl.LOCK_EX, 1, WRITER_BYTE)
        except BaseException:
            h.writer_thread_lock.release()
            raise
        h.writer_owner = threading.get_ident()

    def release_writer(self):
        h = self._h
        h.writer_owner = None
        fcntl.lockf(h.fd, fcntl.LOCK_UN, 1, WRITER_BYTE)
        h.writer_thread_lock.release()

    # -- reader table ------------------------------------------------------

    @staticmethod
    def _pid_word(index: int) -> int:
        return SLOTS_OFFSET // 8 + index * SLOT_WORDS

    def claim_reader_slot(self) -> int:
        """Take a free (or dead-pid) slot, publishing txnid 0 = 'pins everything'."""
        h = self._h
        words = h.words
        pid = os.getpid()
        with h.table_lock:
            fcntl.lockf(h.fd, fcntl.LOCK_EX, 1, READER_MUTEX_BYTE)
            try:
                for index in range(SLOT_COUNT):
                    at = self._pid_word(index)
                    slot_pid = words[at]
                    if slot_pid == 0 or not pid_alive(slot_pid):
                        words[at + 1] = 0          # txnid first: the slot is not yet ours
                        words[at] = pid
                        return index
            finally:
                fcntl.lockf(h.fd, fcntl.LOCK_UN, 1, READER_MUTEX_BYTE)
        raise TransactionError(f"{h.path}: reader table full ({SLOT_COUNT} open snapshots)")

    def publish_reader_txnid(self, index: int, txnid: int):
        self._h.words[self._pid_word(index) + 1] = txnid

    def release_reader_slot(self, index: int):
        if not self._closed:
            self._h.words[self._pid_word(index)] = 0     # one store: free

    def live_readers(self):
        """[(pid, txnid)] of slots whose process is alive."""
        words = self._h.words
        found = []
        for index in range(SLOT_COUNT):
            at = self._pid_word(index)
            pid = words[at]
            if pid:
                txnid = words[at + 1]
                if words[at] == pid and pid_alive(pid):   # still the same owner
                    found.append((pid, txnid))
        return found

    def oldest_reader_txnid(self) -> int | None:
        readers = self.live_readers()
        return min(txnid for _, txnid in readers) if readers else None
