"""Both AES-256-CBC back ends give the bytes of the reference implementation."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from realmfs.format import aescbc
from realmfs.format.layout import PAGE_SIZE


def reference(key: bytes, data: bytes, ivs: list[bytes], encrypt: bool) -> bytes:
    out = []
    for index, iv in enumerate(ivs):
        cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
        worker = cipher.encryptor() if encrypt else cipher.decryptor()
        out.append(worker.update(data[index * PAGE_SIZE:(index + 1) * PAGE_SIZE]) + worker.finalize())
    return b"".join(out)


def test_libcrypto_back_end_is_in_use():
    # Debian's Python links libcrypto; losing it would silently cost 2.5x per page.
    assert aescbc.BACKEND == "libcrypto"


@pytest.mark.parametrize("pages", [1, 2, 33])
@pytest.mark.parametrize("use_fallback", [False, True])
def test_pages_match_reference(pages, use_fallback, monkeypatch):
    if use_fallback:
        monkeypatch.setattr(aescbc, "_LIB", None)
    key = os.urandom(32)
    data = os.urandom(pages * PAGE_SIZE)
    ivs = [os.urandom(16) for _ in range(pages)]
    aes = aescbc.PageAes(key)
    ciphertext = aes.encrypt(data, ivs)
    assert ciphertext == reference(key, data, ivs, encrypt=True)
    assert aes.decrypt(ciphertext, ivs) == data
    assert aes.decrypt(memoryview(ciphertext), ivs) == data
    assert aes.encrypt(bytearray(data), ivs) == ciphertext


def test_contexts_are_per_thread():
    import threading
    key = os.urandom(32)
    aes = aescbc.PageAes(key)
    data = os.urandom(PAGE_SIZE * 4)
    ivs = [os.urandom(16) for _ in range(4)]
    expected = reference(key, data, ivs, encrypt=True)
    results = []

    def work():
        for _ in range(200):
            results.append(aes.encrypt(data, ivs) == expected)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 800 and all(results)
