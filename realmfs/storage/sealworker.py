"""A second process that seals part of each large page group: the daemon's second core.

Sealing a page (AES-256-CBC + HMAC-SHA224) costs about 9 us of CPU and a FUSE daemon
serves one request at a time. Threads cannot share that work: every page's C calls
release and retake the GIL, and two threads sealing halves of a group measured slower
than one (docs/performance.md). A worker process can: it is started once (spawned, not
forked, from a daemon that already runs threads), gets the key through a pipe, and
seals chunks of the upper half of a group in a shared mapping while the caller seals
the lower half; the caller then writes all of it with one ``pwritev``.

Work sharing: the caller posts one byte per chunk on a pipe that both ends read
(non-blocking). Whoever reads a byte seals that chunk: when the caller is done with its
half it takes back every chunk the worker has not started (one read of the pipe), so a
worker that the machine does not schedule costs a copy, never a wait; it then waits
only for the chunks the worker took. Keys travel on a second pipe, numbered: the job
header names the key its chunks need.

Invariants
* The worker computes exactly what ``PageCipher.seal_pages`` computes in process (it
  runs that code on the same old entries): the same counters, ciphertext and entries.
* The worker never touches a backing file: the caller does every write, so the order of
  backing writes stays decided in ``PageStore.write_group`` alone.
* One job at a time (a lock; a caller that finds the worker busy seals in process);
  when ``seal`` yields, every chunk is accounted for (sealed by one side, answered), so
  the pipe holds nothing of it; the mapping's ciphertext is valid until the block ends.
* Any failure of the worker (it died, answered wrongly) ends its use for the life of
  the process: the caller seals that job's chunks, and every later job, itself. A worker
  exits when the command pipe's write end closes, so it never outlives its caller
  (kill -9 included).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import select
import struct
import subprocess
import sys
import threading

from ..format.layout import ENTRIES_PER_BLOCK, ENTRY_SIZE, KEY_SIZE, PAGE_SIZE
from ..format.pagecipher import PageCipher

log = logging.getLogger(__name__)

# Off by default: on this project's shared 2-core machine it did not measurably win
# (docs/performance.md, issue 12 item 5). "1" starts a worker at the first large group.
ENV = "REALMFS_SEAL_WORKER"
# Smallest group worth splitting: the hand-off (copying the worker's half in, a few pipe
# syscalls) costs about 10-20 us here; half of a 16-page group seals in about 70 us.
SPLIT_MIN_PAGES = 16
CHUNK_PAGES = 8                 # the unit of work sharing: about 70 us of sealing

_JOB = struct.Struct("<IQIII?16s")       # key number, first page, pages, chunk pages, counter floor,
                                        # has binding, binding id
_KEY = struct.Struct(f"<I{KEY_SIZE}s")  # on the key pipe: key number, key
_META_AT = PAGE_SIZE                    # the worker's old, then new, entries
_PLAIN_AT = 2 * PAGE_SIZE
_MAX_PAGES = ENTRIES_PER_BLOCK          # a group never spans IV blocks
_CIPHER_AT = _PLAIN_AT + _MAX_PAGES * PAGE_SIZE
_MAPPING_SIZE = _CIPHER_AT + _MAX_PAGES * PAGE_SIZE
_DONE, _FIRST_WRITES, _FAILED = 0x10, 0x01, 0x45     # answers: _DONE | first writes, or _FAILED
# The worker imports this very realmfs, wherever the caller found it (PYTHONPATH or not).
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_WORKER_MAIN = ("import sys; sys.path.insert(0, sys.argv[1]); from realmfs.storage.sealworker import serve; "
                "serve(*map(int, sys.argv[2:6]))")


class Splitter:
    """The caller's side of one worker process."""

    def __init__(self):
        self._keyed: PageCipher | None = None     # the cipher whose key the worker was sent
        self._key_number = 0
        self._lock = threading.Lock()
        self._broken = False
        memory = os.memfd_create("realmfs-seal", os.MFD_CLOEXEC)
        self._chunks_r, self._chunks = os.pipe()       # both sides read chunks_r
        self._answers, answers_w = os.pipe()
        keys_r, self._keys = os.pipe()
        os.set_blocking(self._chunks_r, False)      # one open file: the worker's end too
        try:
            os.ftruncate(memory, _MAPPING_SIZE)
            self._shared = mmap.mmap(memory, _MAPPING_SIZE)
            self._view = memoryview(self._shared)
            child_fds = (self._chunks_r, answers_w, keys_r, memory)
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_MAIN, _PACKAGE_ROOT, *map(str, child_fds)],
                pass_fds=child_fds, stdin=subprocess.DEVNULL, close_fds=True)
        except BaseException:
            for fd in (self._chunks_r, self._chunks, self._answers, self._keys):
                os.close(fd)
            raise
        finally:
            for fd in (answers_w, keys_r, memory):
                os.close(fd)

    @contextlib.contextmanager
    def seal(self, cipher: PageCipher, plaintext, olds, first: int, binding_id: bytes | None,
             offset: int, counter_floor: int):
        """``PageCipher.seal_pages`` (without lost counters), the upper half shared with the worker.

        Yields (list of ciphertext buffers, contiguous in page order; the new entries;
        True if any page was never written before), valid inside the block; or None when
        the worker is busy or gone (the caller seals in process)."""
        if self._broken or not self._lock.acquire(blocking=False):
            yield None
            return
        try:
            yield self._seal(cipher, plaintext, olds, first, binding_id, offset, counter_floor)
        finally:
            self._lock.release()

    def _seal(self, cipher, plaintext, olds, first, binding_id, offset, counter_floor):
        count = len(olds) // ENTRY_SIZE
        upper = count // 2
        lower = count - upper
        chunks = -(-upper // CHUNK_PAGES)
        view = self._view
        source = plaintext if type(plaintext) is bytes else memoryview(plaintext).cast("B")
        at = offset + lower * PAGE_SIZE
        view[_PLAIN_AT:_PLAIN_AT + upper * PAGE_SIZE] = source[at:at + upper * PAGE_SIZE]
        entries = lower * ENTRY_SIZE
        view[_META_AT:_META_AT + upper * ENTRY_SIZE] = olds[entries:entries + upper * ENTRY_SIZE]
        posted = self._post(cipher, first + lower, upper, counter_floor, binding_id, chunks)
        ciphertext, news, first_writes = cipher.seal_pages(plaintext, olds[:entries], first, binding_id,
                                                           offset=offset, counter_floor=counter_floor)
        news += bytes(upper * ENTRY_SIZE)
        taken = set(range(chunks))
        if posted:
            try:
                taken -= set(os.read(self._chunks_r, chunks))   # not started: ours again
            except BlockingIOError:
                pass                                        # the worker took them all
        else:
            taken.clear()
        if len(taken) < chunks:       # the seal_pages below re-use the buffer `ciphertext` is in
            ciphertext = bytes(ciphertext)
        answers = self._answers_for(len(taken))
        if answers is None:           # the worker failed: its chunks are sealed here after all
            taken.clear()
        for chunk in range(chunks):
            low = chunk * CHUNK_PAGES
            pages = min(CHUNK_PAGES, upper - low)
            here = slice(entries + low * ENTRY_SIZE, entries + (low + pages) * ENTRY_SIZE)
            if chunk in taken:
                where = _META_AT + low * ENTRY_SIZE
                news[here] = view[where:where + pages * ENTRY_SIZE]
                continue
            sealed, news[here], first_here = cipher.seal_pages(
                plaintext, olds[here], first + lower + low, binding_id,
                offset=at + low * PAGE_SIZE, counter_floor=counter_floor)
            view[_CIPHER_AT + low * PAGE_SIZE:_CIPHER_AT + (low + pages) * PAGE_SIZE] = sealed
            first_writes = first_writes or first_here
        first_writes = first_writes or any(answer & _FIRST_WRITES for answer in answers or b"")
        return [ciphertext, view[_CIPHER_AT:_CIPHER_AT + upper * PAGE_SIZE]], news, first_writes

    def _post(self, cipher, first, pages, counter_floor, binding_id, chunks) -> bool:
        """Describe the job in the mapping and offer its chunks; False if the worker is gone."""
        try:
            if cipher is not self._keyed:
                self._key_number += 1
                os.write(self._keys, _KEY.pack(self._key_number, cipher.secret()))
                self._keyed = cipher
            _JOB.pack_into(self._view, 0, self._key_number, first, pages, CHUNK_PAGES, counter_floor,
                           binding_id is not None, binding_id or b"")
            os.write(self._chunks, bytes(range(chunks)))
            return True
        except OSError as error:
            self._fail(f"could not reach it: {error}")
            return False

    def _answers_for(self, chunks: int) -> bytes | None:
        answers = b""
        try:
            while len(answers) < chunks:
                got = os.read(self._answers, chunks - len(answers))
                if not got:
                    break
                answers += got
        except OSError as error:
            self._fail(f"could not read its answer: {error}")
            return None
        if len(answers) == chunks and all(answer & ~_FIRST_WRITES == _DONE for answer in answers):
            return answers
        self._fail(f"it answered {answers!r} for {chunks} chunks")
        return None

    def _fail(self, why: str) -> None:
        self._broken = True
        log.warning("sealing worker (pid %d) failed, %s; sealing on one core from now on",
                    self.process.pid, why)

    def close(self) -> None:
        """Stop the worker (it exits when the chunk pipe's write end closes) and wait for it."""
        with self._lock:
            self._broken = True
            for fd in (self._chunks, self._chunks_r, self._answers, self._keys):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.process.wait()


_splitter: Splitter | None = None
_splitter_lock = threading.Lock()
_disabled = False


def splitter() -> Splitter | None:
    """The process's worker, started on first use; None unless REALMFS_SEAL_WORKER=1 (read
    at the first call) and there are two cores or more."""
    global _splitter, _disabled
    if _splitter is not None or _disabled:
        return _splitter
    with _splitter_lock:
        if _splitter is None and not _disabled:
            if os.environ.get(ENV) != "1" or (os.cpu_count() or 1) < 2:
                _disabled = True
                return None
            try:
                _splitter = Splitter()
            except OSError as error:
                log.warning("no sealing worker (%s): sealing on one core", error)
                _disabled = True
    return _splitter


# ---------------------------------------------------------------------- the worker itself
def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve(chunks: int, answers: int, keys: int, memory: int) -> None:
    shared = mmap.mmap(memory, _MAPPING_SIZE)
    with contextlib.suppress(OSError, EOFError):      # the caller is gone: so are we
        _serve_chunks(memoryview(shared), chunks, answers, keys)


def _serve_chunks(view, chunks: int, answers: int, keys: int) -> None:
    cipher, key_number = None, 0
    while True:
        select.select([chunks], [], [])
        try:
            taken = os.read(chunks, 1)
        except BlockingIOError:     # the caller took it back first
            continue
        if not taken:
            return
        try:
            number, first, pages, chunk_pages, counter_floor, has_binding, binding_id = _JOB.unpack_from(view, 0)
            while key_number != number:
                key_number, key = _KEY.unpack(_read_exactly(keys, _KEY.size))
                cipher = PageCipher(key)
            low = taken[0] * chunk_pages
            count = min(chunk_pages, pages - low)
            meta = view[_META_AT + low * ENTRY_SIZE:_META_AT + (low + count) * ENTRY_SIZE]
            plain = view[_PLAIN_AT + low * PAGE_SIZE:_PLAIN_AT + (low + count) * PAGE_SIZE]
            ciphertext, meta[:], first_writes = cipher.seal_pages(plain, meta, first + low,
                                                                  binding_id if has_binding else None,
                                                                  counter_floor=counter_floor)
            view[_CIPHER_AT + low * PAGE_SIZE:_CIPHER_AT + (low + count) * PAGE_SIZE] = ciphertext
            meta.release()
            plain.release()
            answer = _DONE | (_FIRST_WRITES if first_writes else 0)
        except (OSError, EOFError):
            raise
        except Exception as error:  # noqa: BLE001 - the caller seals the chunk itself
            print(f"realmfs sealing worker: {type(error).__name__}: {error}", file=sys.stderr)
            answer = _FAILED
        os.write(answers, bytes([answer]))
