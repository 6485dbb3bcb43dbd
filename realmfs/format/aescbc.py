"""AES-256-CBC over whole 4096-byte pages, without padding: the one cipher primitive.

Per-page cost matters more than throughput here: building a ``cryptography``
Cipher object costs about 9 us, more than encrypting the page. So pages go
straight to OpenSSL's EVP interface through ctypes, re-using one context per
thread and changing only the IV (measured here: encrypt 5.4 us/page against
13.9 us, decrypt 1.9 us/page against 7.5 us). Where libcrypto cannot be loaded,
the ``cryptography`` package does the same work, slower; both give identical bytes.

The hot paths avoid fresh large buffers as well: a 128 KiB buffer that glibc
hands back to the kernel costs 32 page faults the next time (about 1 us per page
here), more than decrypting it. ``encrypt_view`` encrypts into a buffer the thread
keeps, and ``decrypt_in_place`` decrypts a caller's buffer where it lies (OpenSSL
allows exact in-place CBC).

Invariants: inputs are whole pages (len a multiple of 4096, one 16-byte IV per
page); padding is off; a context is never shared between threads; a view from
``encrypt_view`` is valid until the next ``encrypt_view`` on the same thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .layout import AES_BLOCK, AES_KEY_SIZE, BLOCK_DATA_BYTES, PAGE_SIZE


def _load_libcrypto():
    name = ctypes.util.find_library("crypto")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
        lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
        lib.EVP_aes_256_cbc.restype = ctypes.c_void_p
        lib.EVP_CIPHER_CTX_set_padding.argtypes = [ctypes.c_void_p, ctypes.c_int]
        for direction in ("Encrypt", "Decrypt"):
            init = getattr(lib, f"EVP_{direction}Init_ex")
            init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
            update = getattr(lib, f"EVP_{direction}Update")
            update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                               ctypes.c_void_p, ctypes.c_int]
        return lib
    except (OSError, AttributeError):
        return None


_LIB = _load_libcrypto()
_KEPT_BUFFER = BLOCK_DATA_BYTES   # one metadata block of pages: the largest group EncryptedFile uses
_ONE_CALL_PAGES = 3               # decrypt runs from this many pages on in one EVP call
BACKEND = "libcrypto" if _LIB is not None else "cryptography"


def _bytes_data_offset() -> int | None:
    """Where a bytes object's data starts, from its id (CPython: the object's address);
    found once with ctypes, so that each page run does not pay a c_char_p cast (~1 us)."""
    if sys.implementation.name != "cpython":
        return None
    probe = bytes(range(40))
    offset = ctypes.cast(ctypes.c_char_p(probe), ctypes.c_void_p).value - id(probe)
    return offset if ctypes.string_at(id(probe) + offset, 40) == probe else None


_BYTES_DATA = _bytes_data_offset()


def _address(buffer, offset: int, size: int) -> tuple[int, object]:
    """(address, object to keep alive while it is used) of ``size`` bytes of a buffer
    from byte ``offset`` on."""
    if type(buffer) is bytes:       # read in place, without a copy
        if offset < 0 or offset + size > len(buffer):
            raise ValueError("not enough whole pages in the buffer")
        if _BYTES_DATA is not None:
            return id(buffer) + _BYTES_DATA + offset, buffer
        return ctypes.cast(ctypes.c_char_p(buffer), ctypes.c_void_p).value + offset, buffer
    if isinstance(buffer, ctypes.Array):     # e.g. a kept create_string_buffer: in place
        if offset < 0 or offset + size > ctypes.sizeof(buffer):
            raise ValueError("not enough whole pages in the buffer")
        return ctypes.addressof(buffer) + offset, buffer
    view = memoryview(buffer)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if offset or len(view) != size:
        view = view[offset:offset + size]
    if len(view) != size or offset < 0:
        raise ValueError("not enough whole pages in the buffer")
    if not size:
        return 0, None
    try:
        anchor = ctypes.c_char.from_buffer(view)        # writable buffers: in place
        return ctypes.addressof(anchor), anchor
    except TypeError:                                    # read-only views: one copy
        copy = bytes(view)
        return ctypes.cast(ctypes.c_char_p(copy), ctypes.c_void_p).value, copy


class _Context:
    """One EVP context, keyed once; each page only resets the IV."""

    __slots__ = ("ptr", "init", "update", "written", "out", "out_view", "out_addr", "encrypt",
                 "page_init", "page_update", "ctx_arg", "source_arg", "out_arg")

    def __init__(self, key: bytes, encrypt: bool):
        direction = "Encrypt" if encrypt else "Decrypt"
        self.encrypt = encrypt      # an encrypting context's buffer may be lent out (encrypt_view)
        self.init = getattr(_LIB, f"EVP_{direction}Init_ex")
        self.update = getattr(_LIB, f"EVP_{direction}Update")
        self.written = ctypes.byref(ctypes.c_int())
        self.out = self.out_view = self.out_addr = None
        self.ptr = _LIB.EVP_CIPHER_CTX_new()
        if not self.ptr or self.init(self.ptr, _LIB.EVP_aes_256_cbc(), None, key, bytes(AES_BLOCK)) != 1:
            raise MemoryError("OpenSSL could not set up an AES-256-CBC context")
        _LIB.EVP_CIPHER_CTX_set_padding(self.ptr, 0)
        # The per-page calls go through prototypes without argtypes, every pointer argument
        # a ctypes object made once: ctypes then converts nothing (~0.25 us a page less).
        self.page_init = _LIB[f"EVP_{direction}Init_ex"]
        self.page_update = _LIB[f"EVP_{direction}Update"]
        self.ctx_arg = ctypes.c_void_p(self.ptr)
        self.source_arg = ctypes.c_void_p()
        self.out_arg = ctypes.c_void_p()

    def pages(self, source: int, out: int, ivs) -> None:
        """Process ``len(ivs)`` consecutive pages from address ``source`` to ``out``
        (the same address is fine: in place)."""
        ctx, init, update, written = self.ctx_arg, self.page_init, self.page_update, self.written
        source_arg, out_arg = self.source_arg, self.out_arg
        for iv in ivs:
            if type(iv) is not bytes or len(iv) != AES_BLOCK:
                raise ValueError("an IV is 16 bytes")
            source_arg.value = source
            out_arg.value = out
            if init(ctx, None, None, None, iv) != 1 or update(ctx, out_arg, written, source_arg, PAGE_SIZE) != 1:
                raise ValueError("OpenSSL AES-256-CBC failed")
            source += PAGE_SIZE
            out += PAGE_SIZE

    def decrypt_run(self, source: int, out: int, ivs) -> None:
        """``pages`` for decryption with one EVP call for the whole run (the same bytes).

        Decrypting pages 0..n-1 as one CBC stream under page 0's IV gets every block
        right except each later page's first one, which was XORed with the previous
        page's last ciphertext block instead of the page's IV: one 16-byte correction
        per page, cheaper than the per-page EVP calls (~1.1 us a page)."""
        count = len(ivs)
        if count < _ONE_CALL_PAGES:
            return self.pages(source, out, ivs)
        size = count * PAGE_SIZE
        ciphertext = memoryview((ctypes.c_char * size).from_address(source)).cast("B")
        # the previous page's last ciphertext block, taken before an in-place run overwrites it
        tails = [ciphertext[at - AES_BLOCK:at].tobytes() for at in range(PAGE_SIZE, size, PAGE_SIZE)]
        if self.init(self.ptr, None, None, None, ivs[0]) != 1 or \
                self.update(self.ptr, out, self.written, source, size) != 1:
            raise ValueError("OpenSSL AES-256-CBC failed")
        plain = ciphertext if out == source else memoryview((ctypes.c_char * size).from_address(out)).cast("B")
        number = int.from_bytes
        at = PAGE_SIZE
        for index in range(1, count):
            block = plain[at:at + AES_BLOCK]
            block[:] = (number(block, "little") ^ number(tails[index - 1], "little")
                        ^ number(ivs[index], "little")).to_bytes(AES_BLOCK, "little")
            at += PAGE_SIZE

    def process(self, source: int, out: int, ivs) -> None:
        (self.pages if self.encrypt else self.decrypt_run)(source, out, ivs)

    def run(self, source, ivs: list[bytes]) -> bytes:
        """Process ``len(ivs)`` consecutive pages of ``source``; returns the output pages."""
        if not self.encrypt:    # the kept buffer is free: one fresh buffer (the result), not two
            return bytes(self.run_view(source, ivs, 0))
        address, keep = _address(source, 0, len(ivs) * PAGE_SIZE)
        out = ctypes.create_string_buffer(len(ivs) * PAGE_SIZE)
        self.pages(address, ctypes.addressof(out), ivs)
        del keep
        return out.raw

    def run_view(self, source, ivs, offset: int) -> memoryview:
        """Like ``run``, into this context's kept buffer (up to 64 pages; more: a fresh one)."""
        size = len(ivs) * PAGE_SIZE
        if size > _KEPT_BUFFER:     # larger than any group: a buffer for this call only
            out = ctypes.create_string_buffer(size)
            out_view, out_addr = memoryview(out).cast("B"), ctypes.addressof(out)
        else:
            if self.out is None:
                self.out = ctypes.create_string_buffer(_KEPT_BUFFER)
                self.out_view = memoryview(self.out).cast("B")
                self.out_addr = ctypes.addressof(self.out)
            out_view, out_addr = self.out_view, self.out_addr
        address, keep = _address(source, offset, size)
        self.process(address, out_addr, ivs)
        del keep
        return out_view[:size]

    def __del__(self):
        if self.ptr and _LIB is not None:
            _LIB.EVP_CIPHER_CTX_free(self.ptr)
            self.ptr = None


class PageAes:
    """AES-256-CBC of whole pages under one key, each page with its own IV."""

    def __init__(self, key: bytes):
        if len(key) != AES_KEY_SIZE:
            raise ValueError(f"AES-256 needs a {AES_KEY_SIZE}-byte key")
        self._key = bytes(key)
        self._algorithm = algorithms.AES(self._key)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"PageAes(<key hidden>, backend={BACKEND})"

    def _context(self, encrypt: bool) -> _Context:
        try:
            return self._local.enc if encrypt else self._local.dec
        except AttributeError:
            context = _Context(self._key, encrypt)
            if encrypt:
                self._local.enc = context
            else:
                self._local.dec = context
            return context

    def encrypt(self, plaintext, ivs: list[bytes]) -> bytes:
        if _LIB is None:
            return self._fallback(plaintext, ivs, encrypt=True)
        return self._context(True).run(plaintext, ivs)

    def decrypt(self, ciphertext, ivs: list[bytes]) -> bytes:
        if _LIB is None:
            return self._fallback(ciphertext, ivs, encrypt=False)
        return self._context(False).run(ciphertext, ivs)

    def encrypt_view(self, plaintext, ivs: list[bytes], offset: int = 0) -> memoryview:
        """Encrypt the ``len(ivs)`` pages of ``plaintext`` that start at byte ``offset``.

        Returns a view of a buffer this thread re-uses: valid until the next call of
        ``encrypt_view`` on the same thread. The view is writable.
        """
        if _LIB is None:
            view = memoryview(plaintext).cast("B")[offset:offset + len(ivs) * PAGE_SIZE]
            return memoryview(bytearray(self._fallback(view, ivs, encrypt=True)))
        return self._context(True).run_view(plaintext, ivs, offset)

    def decrypt_in_place(self, buffer, ivs: list[bytes], offset: int = 0) -> None:
        """Decrypt the ``len(ivs)`` pages of the writable ``buffer`` from byte ``offset`` on."""
        size = len(ivs) * PAGE_SIZE
        if _LIB is None:
            view = memoryview(buffer).cast("B")[offset:offset + size]
            if len(view) != size:
                raise ValueError("not enough whole pages in the buffer")
            view[:] = self._fallback(view, ivs, encrypt=False)
            return
        address, keep = _address(buffer, offset, size)
        if type(keep) is bytes:
            raise TypeError("decrypt_in_place needs a writable buffer")
        self._context(False).decrypt_run(address, address, ivs)

    def _fallback(self, data, ivs: list[bytes], encrypt: bool) -> bytes:
        view = memoryview(data)
        out = []
        for index, iv in enumerate(ivs):
            cipher = Cipher(self._algorithm, modes.CBC(iv))
            worker = cipher.encryptor() if encrypt else cipher.decryptor()
            out.append(worker.update(view[index * PAGE_SIZE:(index + 1) * PAGE_SIZE]) + worker.finalize())
        return b"".join(out)
