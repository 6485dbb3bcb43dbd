"""The sealing worker (realmfs/storage/sealworker.py) computes exactly what PageCipher.seal_pages
computes in process, and a worker that dies leaves the caller sealing on its own."""

from __future__ import annotations

import os
import random

import pytest

from realmfs.storage import sealworker
from realmfs.format.layout import ENTRY_SIZE, PAGE_SIZE
from realmfs.format.pagecipher import PageCipher

P = PAGE_SIZE


@pytest.fixture
def splitter():
    worker = sealworker.Splitter()
    yield worker
    worker.close()


def _old_entries(rng: random.Random, count: int, kind: str) -> bytearray:
    """A metadata page whose first ``count`` entries are never written, rewritten, or mixed."""
    meta = bytearray(P)
    for index in range(count):
        if kind == "first" or (kind == "mixed" and index % 3 == 0):
            continue
        meta[index * ENTRY_SIZE:(index + 1) * ENTRY_SIZE] = (
            rng.randrange(1, 1 << 31).to_bytes(4, "little") + rng.randbytes(28)
            + rng.randrange(0, 1 << 31).to_bytes(4, "little") + rng.randbytes(28))
    return meta


@pytest.mark.parametrize("kind", ["first", "rewrite", "mixed"])
@pytest.mark.parametrize("binding", [None, b"0123456789abcdef"], ids=["realm", "header"])
def test_split_sealing_is_byte_identical_to_sealing_in_process(splitter, kind, binding):
    rng = random.Random(f"{kind}{binding}")
    for key_round in range(2):          # a second key: the worker is re-keyed
        cipher = PageCipher(os.urandom(64))
        for count, first, offset in ((16, 0, 0), (17, 64, 3 * P), (64, 128, 0), (33, 200, P)):
            plaintext = os.urandom(offset + count * P + 5)
            start = (first % 64) * ENTRY_SIZE
            meta = _old_entries(rng, 64, kind)
            meta = meta[-start:] + meta[:-start] if start else meta     # entries at their page's slot
            olds = bytes(meta[start:start + count * ENTRY_SIZE])
            expected, expected_news, expected_first = cipher.seal_pages(plaintext, olds, first, binding,
                                                                        offset=offset, counter_floor=7)
            expected = bytes(expected)
            with splitter.seal(cipher, plaintext, olds, first, binding, offset, 7) as sealed:
                assert sealed is not None
                parts, news, first_writes = sealed
                assert len(parts) == 2 and all(len(part) % P == 0 for part in parts)
                assert b"".join(bytes(part) for part in parts) == expected
                assert news == expected_news and first_writes == expected_first


def test_a_dead_worker_is_replaced_by_sealing_in_process(splitter):
    cipher = PageCipher(os.urandom(64))
    plaintext = os.urandom(32 * P)
    olds = bytes(32 * ENTRY_SIZE)
    expected, expected_news, _ = cipher.seal_pages(plaintext, olds, 0, None)
    expected = bytes(expected)
    splitter.process.kill()         # our own child, by pid
    splitter.process.wait()
    with splitter.seal(cipher, plaintext, olds, 0, None, 0, 0) as sealed:
        assert b"".join(bytes(part) for part in sealed[0]) == expected
        assert sealed[1] == expected_news
    with splitter.seal(cipher, plaintext, olds, 0, None, 0, 0) as sealed:
        assert sealed is None       # from now on the caller seals in process


def test_a_busy_worker_leaves_the_second_caller_sealing_in_process(splitter):
    cipher = PageCipher(os.urandom(64))
    plaintext = os.urandom(16 * P)
    with splitter.seal(cipher, plaintext, bytes(16 * ENTRY_SIZE), 0, None, 0, 0) as outer:
        assert outer is not None
        with splitter.seal(cipher, plaintext, bytes(16 * ENTRY_SIZE), 0, None, 0, 0) as inner:
            assert inner is None
