"""The batch forms EncryptedFile uses give the bytes and decisions of the per-page forms."""

from __future__ import annotations

import hmac
import os
import random

import pytest

from realmfs.format.layout import ENTRY_SIZE, PAGE_SIZE
from realmfs.format.pagecipher import EMPTY_ENTRY, Entry, PageCipher, ReadResult, binding, page_iv

FILE_ID = bytes(range(16))


def random_entry(rnd: random.Random) -> Entry:
    kind = rnd.randrange(4)
    if kind == 0:
        return EMPTY_ENTRY
    if kind == 1:   # cleared by a truncation: the last counter kept in slot 2
        return Entry(0, bytes(28), rnd.randrange(1, 2**32), bytes(28))
    mac = rnd.randbytes(28)
    if kind == 2:
        return Entry(rnd.randrange(1, 2**32), mac, 0, bytes(28))
    return Entry(rnd.choice([rnd.randrange(1, 2**32), 0xFFFFFFFF]), mac, rnd.randrange(1, 2**32), rnd.randbytes(28))


@pytest.mark.parametrize("binding_id", [None, FILE_ID], ids=["realm", "header"])
@pytest.mark.parametrize("seed", range(12))
def test_seal_pages_matches_seal_page(binding_id, seed):
    rnd = random.Random(seed)
    cipher = PageCipher(rnd.randbytes(64))
    count = rnd.choice([1, 2, 5, 64])
    first = rnd.randrange(0, 1000) * 64 + 64 - count
    olds = [random_entry(rnd) for _ in range(count)]
    lost = [rnd.choice([0, 0, rnd.randrange(1, 2**32)]) for _ in range(count)] if seed % 2 else None
    counter_floor = [0, rnd.randrange(1, 2**32), 0xFFFFFFFF][seed % 3]
    plain = rnd.randbytes(count * PAGE_SIZE + 96)
    packed = b"".join(e.pack() for e in olds)
    ciphertext, news, first_writes = cipher.seal_pages(plain, packed, first, binding_id, offset=96,
                                                       counter_floor=counter_floor, lost=lost)
    expected = []
    for index, old in enumerate(olds):
        page = plain[96 + index * PAGE_SIZE:96 + (index + 1) * PAGE_SIZE]
        sealed, entry = cipher.seal_page(page, old, first + index, binding_id, lost[index] if lost else 0,
                                         counter_floor)
        expected.append(sealed)
        assert news[index * ENTRY_SIZE:(index + 1) * ENTRY_SIZE] == entry.pack()
    assert packed == b"".join(e.pack() for e in olds)       # the old entries are left alone
    assert bytes(ciphertext) == b"".join(expected)
    assert first_writes == any(not e.written for e in olds)


@pytest.mark.parametrize("binding_id", [None, FILE_ID], ids=["realm", "header"])
def test_slot1_ivs_agrees_with_classify(binding_id):
    rnd = random.Random(7)
    cipher = PageCipher(rnd.randbytes(64))
    count, first = 12, 130
    pages, entries = [], []
    for index in range(count):
        page = first + index
        sealed, entry = cipher.seal_page(rnd.randbytes(PAGE_SIZE), EMPTY_ENTRY, page, binding_id)
        sealed2, entry2 = cipher.seal_page(rnd.randbytes(PAGE_SIZE), entry, page, binding_id)
        case = index % 6
        if case == 1:
            entry2, sealed2 = EMPTY_ENTRY, bytes(PAGE_SIZE)                 # never written
        elif case == 2:
            sealed2 = sealed                                               # torn: slot 2 serves
        elif case == 3:
            sealed2 = bytes([sealed2[0] ^ 1]) + sealed2[1:]                # tampered
        elif case == 4:
            entry2 = Entry(entry2.iv1, entry2.mac1, 0, bytes(28))         # interrupted first write
            sealed2 = sealed
        pages.append(sealed2)
        entries.append(entry2)
    raw = b"".join(pages)[:-100]        # the last page is cut short
    meta = b"".join(e.pack() for e in entries)
    ivs = cipher.slot1_ivs(memoryview(raw), meta, 0, first, count, binding_id)
    for index in range(count):
        page = first + index
        result, counter = cipher.classify(entries[index], raw[index * PAGE_SIZE:(index + 1) * PAGE_SIZE],
                                          page, binding_id)
        if result is ReadResult.SUCCESS:
            assert ivs[index] == page_iv(counter, page)
        else:
            assert ivs[index] is None, (index, result)
    assert [r is not None for r in ivs] == [i % 6 in (0, 5) and i < count - 1 for i in range(count)]


@pytest.mark.parametrize("pages", [1, 2, 3, 33, 64])
def test_decrypt_in_place_and_mac(pages):
    cipher = PageCipher(os.urandom(64))
    plain = os.urandom(pages * PAGE_SIZE)
    ciphertext, meta, _ = cipher.seal_pages(plain, bytes(pages * ENTRY_SIZE), 5, None)
    ciphertext = bytes(ciphertext)
    ivs = cipher.slot1_ivs(ciphertext, meta, 0, 5, pages, None)
    buffer = bytearray(b"\x01" * 32) + bytearray(ciphertext)
    cipher.decrypt_in_place(buffer, ivs, 32)
    assert buffer[32:] == plain and buffer[:32] == b"\x01" * 32
    assert cipher.decrypt_pages(ciphertext, ivs) == plain
    key = cipher._mac_key
    assert cipher.mac(ciphertext[:PAGE_SIZE]) == hmac.digest(key, ciphertext[:PAGE_SIZE], "sha224")
    bound = binding(FILE_ID, 3, 9)
    assert cipher.mac(memoryview(ciphertext)[:PAGE_SIZE], bound) == \
        hmac.digest(key, ciphertext[:PAGE_SIZE] + bound, "sha224")
