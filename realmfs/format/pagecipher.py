"""Pure page cryptography: Realm Core's per-page AES-256-CBC + HMAC-SHA224.

Bytes in, bytes out: no file access, no FUSE. Everything here is checked against
files written by Realm Core itself (tests/format/test_vectors.py).

Per page (see docs/file-format.md):

* IV   = counter (u32 LE) || logical byte offset of the page (i64 LE) || 4 zero bytes
* data = AES-256-CBC(key[0:32], IV, plaintext page), no padding (4096 = 256 blocks)
* MAC  = HMAC-SHA224(key[32:64], ciphertext [|| binding])

``binding`` is empty for ``.realm`` files (Realm Core MACs the ciphertext only).
Files with a realmfs header append ``file id || page || counter`` so that a page
cannot move to another file or position, and its counter cannot be changed,
without failing authentication.

An IV-table entry holds two (counter, mac) slots: slot 1 is the current version,
slot 2 the previous one, kept so that a torn write can fall back to it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from typing import NamedTuple

from .aescbc import PageAes
from .layout import (
    AES_KEY_SIZE,
    COUNTER_MAX,
    COUNTER_NEVER_WRITTEN,
    ENTRY_SIZE,
    KEY_SIZE,
    MAC_SIZE,
    PAGE_SIZE,
    ZERO_PAGE,
)

_SHA224_BLOCK = 64                  # HMAC pads keys to the hash's block size

_ENTRY = struct.Struct("<I28sI28s")
ENTRY_COUNTERS = struct.Struct("<I28xI28x")   # the two counters of an entry, MACs skipped
_IV = struct.Struct("<Iq4x")
_BINDING = struct.Struct("<16sQI")
assert _ENTRY.size == ENTRY_SIZE


class Entry(NamedTuple):
    """One IV-table entry: slot 1 (current) and slot 2 (previous)."""

    iv1: int
    mac1: bytes
    iv2: int
    mac2: bytes

    @classmethod
    def unpack(cls, raw: bytes) -> "Entry":
        return cls(*_ENTRY.unpack(raw))

    def pack(self) -> bytes:
        return _ENTRY.pack(*self)

    @property
    def written(self) -> bool:
        return self.iv1 != COUNTER_NEVER_WRITTEN


EMPTY_ENTRY = Entry(0, bytes(MAC_SIZE), 0, bytes(MAC_SIZE))


def next_counter(iv1: int, iv2: int = 0, lost: int = 0, counter_floor: int = 0) -> int:
    """Counter for the next write of a page whose entry holds ``iv1``/``iv2``: the one rule
    that keeps IVs unique. It goes above every counter seen for the page: slot 1 (or,
    for an entry a truncation cleared, iv1 = 0, its last counter kept in slot 2); with a
    ``lost`` counter (slot 1 of a torn write, whose slot 2 stays) both slots and that;
    and the file's ``counter_floor`` (header layout: counters cut away with IV blocks).

    Counters are u32 and 0 means "never written", so after 0xFFFFFFFF the next one is
    1 again, as in Realm Core. That wrap re-uses IVs (counter, position) used 2^32-1
    writes earlier for this page; the format has no room for a wider counter. At one
    write per millisecond to a single page this takes 50 days; rekey before that.
    """
    last = iv1 or iv2
    if lost:
        last = max(last, iv2, lost)
    if counter_floor > last:
        last = counter_floor
    return (last + 1) & COUNTER_MAX or 1


def max_counter(entries) -> int:
    """The highest counter, slot 1 or slot 2, in a run of packed IV-table entries
    (a trailing partial entry is ignored)."""
    whole = len(entries) - len(entries) % ENTRY_SIZE
    return max((c for pair in ENTRY_COUNTERS.iter_unpack(bytes(entries[:whole])) for c in pair), default=0)


def page_iv(counter: int, page: int) -> bytes:
    return _IV.pack(counter, page * PAGE_SIZE)


class ReadResult(enum.Enum):
    """How a page was read, in Realm Core's decision order (realm-format.md §6)."""

    SUCCESS = "success"                      # slot 1 authenticates
    FALLBACK = "fallback"                    # slot 2 authenticates: the last write was torn
    UNINITIALIZED = "never written"          # iv1 == 0
    EOF = "out of bounds"                    # data page missing or short
    INTERRUPTED_FIRST_WRITE = "interrupted first write"  # iv2 == 0, slot 1 fails
    STALE_ZERO = "stale entry over a zero page"          # all-zero ciphertext, both fail
    FAILED = "authentication failed"


class PageCipher:
    """The key's two halves, prepared once; encrypt/MAC and verify/decrypt of pages.

    HMAC-SHA224 is computed from two SHA-224 states keyed once (key XOR ipad, key XOR
    opad, RFC 2104) and copied per message: the same bytes as ``hmac.digest`` at
    about 3.0 us per page instead of 3.8, and a binding is fed as a second update
    instead of being appended to a copy of the ciphertext.
    """

    __slots__ = ("_aes", "_mac_key", "_inner", "_outer", "_key")

    def __init__(self, key: bytes):
        if len(key) != KEY_SIZE:
            raise ValueError(f"a key is {KEY_SIZE} bytes, got {len(key)}")
        self._key = bytes(key)
        self._aes = PageAes(bytes(key[:AES_KEY_SIZE]))
        self._mac_key = bytes(key[AES_KEY_SIZE:])
        padded = self._mac_key.ljust(_SHA224_BLOCK, b"\0")    # 32 bytes: shorter than a block
        self._inner = hashlib.sha224(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha224(bytes(b ^ 0x5C for b in padded))

    def __repr__(self) -> str:
        return "PageCipher(<key hidden>)"

    def secret(self) -> bytes:
        """The 64-byte key, for a sealing worker process (sealworker.py) to build its own."""
        return self._key

    # -- MAC -------------------------------------------------------------------------
    def mac(self, ciphertext, binding: bytes = b"") -> bytes:
        inner = self._inner.copy()
        inner.update(ciphertext)
        if binding:
            inner.update(binding)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def mac_message(self, message: bytes) -> bytes:
        """HMAC-SHA224 of an arbitrary message (headers, key checks)."""
        return self.mac(message)

    # -- single pages ----------------------------------------------------------------
    def encrypt_page(self, plaintext, counter: int, page: int) -> bytes:
        return self._aes.encrypt(plaintext, [page_iv(counter, page)])

    def seal_page(self, plaintext, old: Entry, page: int, binding_id: bytes | None,
                  lost: int = 0, counter_floor: int = 0) -> tuple[bytes, Entry]:
        """Encrypt one page for writing: returns (ciphertext, new entry).

        The previous slot 1 moves to slot 2 (Realm Core's order), unless a ``lost``
        counter says slot 1 is a torn write: then the verified slot 2 stays. The counter
        is ``next_counter``'s (``counter_floor``: the header's), so no IV is used twice.
        """
        keep = (old.iv2, old.mac2) if lost else (old.iv1, old.mac1)
        counter = next_counter(old.iv1, old.iv2, lost, counter_floor)
        while True:
            ciphertext = self.encrypt_page(plaintext, counter, page)
            mac = self.mac(ciphertext, binding(binding_id, page, counter))
            if mac != keep[1]:
                return ciphertext, Entry(counter, mac, keep[0], keep[1])
            counter = next_counter(counter)  # a MAC collision with slot 2: as Realm, bump again

    def seal_pages(self, plaintext, olds, first: int, binding_id: bytes | None, *,
                   offset: int = 0, counter_floor: int = 0, lost=None) -> tuple[memoryview, bytearray, bool]:
        """``seal_page`` for consecutive pages first, first + 1, ... in one pass.

        ``olds`` holds their old entries (64 bytes each, one page per entry; it is not
        changed), ``plaintext[offset:]`` the pages; ``lost`` is None or one lost counter
        per page (0: none); ``counter_floor`` as in ``seal_page``. All pages are encrypted
        in one call, then MACed in one loop: the same counters, bytes and entries as
        ``seal_page`` page by page. Returns (ciphertext view, valid until this thread's
        next ``seal_pages``; the new entries; True if any page was never written before).
        """
        count = len(olds) // ENTRY_SIZE
        unpack_from, pack_into, iv_pack = _ENTRY.unpack_from, _ENTRY.pack_into, _IV.pack
        found = []
        ivs = []
        first_writes = False
        for index in range(count):
            iv1, mac1, iv2, mac2 = old = unpack_from(olds, index * ENTRY_SIZE)
            torn = lost[index] if lost else 0
            counter = next_counter(iv1, iv2, torn, counter_floor)
            first_writes |= iv1 == COUNTER_NEVER_WRITTEN
            found.append((old, torn, counter))
            ivs.append(iv_pack(counter, (first + index) * PAGE_SIZE))
        ciphertext = self._aes.encrypt_view(plaintext, ivs, offset)
        inner_copy, outer_copy = self._inner.copy, self._outer.copy
        news = bytearray(count * ENTRY_SIZE)
        at = 0
        for index in range(count):
            (iv1, mac1, iv2, mac2), torn, counter = found[index]
            keep_iv, keep_mac = (iv2, mac2) if torn else (iv1, mac1)
            page = first + index
            inner = inner_copy()
            inner.update(ciphertext[at:at + PAGE_SIZE])
            if binding_id is not None:
                inner.update(_BINDING.pack(binding_id, page, counter))
            outer = outer_copy()
            outer.update(inner.digest())
            mac = outer.digest()
            if mac == keep_mac:     # a MAC collision with slot 2 (never seen): seal_page's loop
                view = memoryview(plaintext).cast("B")
                sealed, entry = self.seal_page(view[offset + at:offset + at + PAGE_SIZE],
                                               Entry(iv1, mac1, iv2, mac2), page, binding_id, torn,
                                               counter_floor)
                ciphertext[at:at + PAGE_SIZE] = sealed
                counter, mac = entry.iv1, entry.mac1
            pack_into(news, index * ENTRY_SIZE, counter, mac, keep_iv, keep_mac)
            at += PAGE_SIZE
        return ciphertext, news, first_writes

    # -- reading ---------------------------------------------------------------------
    def classify(self, entry: Entry, ciphertext, page: int,
                 binding_id: bytes | None) -> tuple[ReadResult, int]:
        """Decide how to read one page; returns (result, counter to decrypt with).

        Follows Realm Core's order; ``ciphertext`` shorter than a page means EOF.
        """
        if entry.iv1 == COUNTER_NEVER_WRITTEN:
            return ReadResult.UNINITIALIZED, 0
        if len(ciphertext) < PAGE_SIZE:
            return ReadResult.EOF, 0
        if hmac.compare_digest(self.mac(ciphertext, binding(binding_id, page, entry.iv1)), entry.mac1):
            return ReadResult.SUCCESS, entry.iv1
        if entry.iv2 == COUNTER_NEVER_WRITTEN:
            return ReadResult.INTERRUPTED_FIRST_WRITE, 0
        if hmac.compare_digest(self.mac(ciphertext, binding(binding_id, page, entry.iv2)), entry.mac2):
            return ReadResult.FALLBACK, entry.iv2
        if ciphertext == ZERO_PAGE:
            return ReadResult.STALE_ZERO, 0
        return ReadResult.FAILED, 0

    def slot1_ivs(self, ciphertext, meta, start: int, first: int, count: int,
                    binding_id: bytes | None) -> list:
        """The common case of ``classify`` for ``count`` consecutive pages in one loop.

        ``ciphertext`` holds the pages as read (it may be short), ``meta[start:]`` their
        entries. Per page: the IV to decrypt with if slot 1 authenticates (SUCCESS),
        else None -- ``classify`` decides those pages.
        """
        unpack_from, iv_pack, compare = _ENTRY.unpack_from, _IV.pack, hmac.compare_digest
        inner_copy, outer_copy = self._inner.copy, self._outer.copy
        whole = min(count, len(ciphertext) // PAGE_SIZE)
        out = [None] * count
        at = 0
        for index in range(whole):
            iv1, mac1, _, _ = unpack_from(meta, start + index * ENTRY_SIZE)
            if iv1 != COUNTER_NEVER_WRITTEN:
                inner = inner_copy()
                inner.update(ciphertext[at:at + PAGE_SIZE])
                if binding_id is not None:
                    inner.update(_BINDING.pack(binding_id, first + index, iv1))
                outer = outer_copy()
                outer.update(inner.digest())
                if compare(outer.digest(), mac1):
                    out[index] = iv_pack(iv1, (first + index) * PAGE_SIZE)
            at += PAGE_SIZE
        return out

    def decrypt_in_place(self, buffer, ivs: list[bytes], offset: int = 0) -> None:
        """CBC-decrypt ``len(ivs)`` consecutive pages of a writable buffer where they lie."""
        self._aes.decrypt_in_place(buffer, ivs, offset)

    def decrypt_pages(self, ciphertext, ivs: list[bytes]) -> bytes:
        """CBC-decrypt ``len(ivs)`` consecutive pages, each with its own IV, in one call."""
        return self._aes.decrypt(ciphertext, ivs)


def binding(file_id: bytes | None, page: int, counter: int) -> bytes:
    """Extra MAC input of header-layout pages; empty for Realm-layout pages."""
    if file_id is None:
        return b""
    return _BINDING.pack(file_id, page, counter)
