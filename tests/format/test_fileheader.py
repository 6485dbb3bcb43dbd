"""The realmfs header page (realmfs/format/fileheader.py): round trip, damage, torn updates, keys."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realmfs.format import fileheader
from realmfs.format.fileheader import MAGIC, SLOT_OFFSETS, SLOT_SIZE, Header, HeaderProblem, pack_page, unpack_page
from realmfs.format.layout import HEADER_SIZE
from realmfs.format.pagecipher import PageCipher

CIPHER = PageCipher(os.urandom(64))
MAC = CIPHER.mac_message
HEADER = Header(os.urandom(16), 7, 300000)
PAGE = pack_page(HEADER, MAC)


def flip(page: bytes, byte: int, bit: int) -> bytes:
    changed = bytearray(page)
    changed[byte] ^= 1 << bit
    return bytes(changed)


def problem(page: bytes, mac=MAC) -> str:
    with pytest.raises(HeaderProblem) as caught:
        unpack_page(page, mac)
    assert "\n" not in str(caught.value)
    return caught.value.kind


def test_layout_of_the_page():
    assert len(PAGE) == HEADER_SIZE == 4096 and SLOT_SIZE == 76 and SLOT_OFFSETS == (0, 2048)
    assert PAGE[0:8] == MAGIC and PAGE[2048:2056] == MAGIC
    assert PAGE[0:SLOT_SIZE] == PAGE[2048:2048 + SLOT_SIZE]
    assert not any(PAGE[SLOT_SIZE:2048]) and not any(PAGE[2048 + SLOT_SIZE:])
    # version 1, flags 0, counter floor 0, id, sequence, size, all little-endian
    assert PAGE[8:10] == b"\x01\x00" and PAGE[10:16] == bytes(6)
    assert PAGE[16:32] == HEADER.file_id
    assert int.from_bytes(PAGE[32:40], "little") == 7 and int.from_bytes(PAGE[40:48], "little") == 300000
    assert PAGE[48:76] == MAC(b"realmfs-header\x00" + PAGE[0:48])


@given(st.binary(min_size=16, max_size=16), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_round_trip(file_id, sequence, size):
    header = Header(file_id, sequence, size)
    assert unpack_page(pack_page(header, MAC), MAC) == header


def test_counter_floor_is_the_former_reserved_field():
    """Bytes 12..15 of a slot (reserved, 0, in the first version-1 files: floor 0)."""
    header = HEADER._replace(counter_floor=0x01020304)
    page = pack_page(header, MAC)
    assert page[12:16] == page[2048 + 12:2048 + 16] == bytes([4, 3, 2, 1])
    assert unpack_page(page, MAC) == header
    assert unpack_page(PAGE, MAC).counter_floor == 0


@given(st.integers(0, 2**32 - 1))
def test_counter_floor_round_trip(floor):
    header = HEADER._replace(counter_floor=floor)
    assert unpack_page(pack_page(header, MAC), MAC) == header


def test_every_single_bit_flip_is_damage():
    """One flipped bit anywhere in the page: one slot (or the padding) is wrong, the other
    slot still proves the key, so it is damage, never 'key' and never accepted."""
    for byte in range(HEADER_SIZE):
        in_slot = any(o <= byte < o + SLOT_SIZE for o in SLOT_OFFSETS)
        for bit in (range(8) if in_slot else [byte % 8]):
            assert problem(flip(PAGE, byte, bit)) == "damaged", (byte, bit)


def test_same_bit_flipped_in_both_slots_cannot_prove_the_key():
    for byte in (0, 9, 20, 35, 45, 60, 75):
        page = flip(flip(PAGE, byte, 3), 2048 + byte, 3)
        kind = problem(page)
        assert kind == ("foreign" if byte < len(MAGIC) else "key")


def test_wrong_key():
    assert problem(PAGE, PageCipher(os.urandom(64)).mac_message) == "key"


def test_wrong_key_with_same_mac_half_is_accepted_by_the_header():
    """The header MAC uses the HMAC half only: a key differing in the AES half passes the
    header (pages catch it: their ciphertext decrypts to garbage, tested in tests/storage)."""
    raw = os.urandom(64)
    other = os.urandom(32) + raw[32:]
    page = pack_page(HEADER, PageCipher(raw).mac_message)
    assert unpack_page(page, PageCipher(other).mac_message) == HEADER


@pytest.mark.parametrize("page", [bytes(HEADER_SIZE), os.urandom(HEADER_SIZE),
                                  b"\x00" * 16 + b"T-DB" + bytes(HEADER_SIZE - 20)],
                         ids=["zeros", "random", "plain-realm"])
def test_no_magic_is_foreign(page):
    assert problem(page) == "foreign"


def test_short_page_is_damaged_if_it_has_the_magic_else_foreign():
    """verify always judged a short page without the magic as not encrypted; the read path
    now asks fileheader in the same order (the damage rulebook)."""
    assert problem(PAGE[:100]) == "damaged"
    assert problem(b"") == "foreign"
    assert problem(b"\x00" * 100) == "foreign"


@pytest.mark.parametrize("newer_in", ["A", "B"])
def test_torn_update_higher_sequence_wins(newer_in):
    old = pack_page(Header(HEADER.file_id, 7, 100), MAC)
    new = pack_page(Header(HEADER.file_id, 8, 5000), MAC)
    torn = bytearray(old)
    slot = SLOT_OFFSETS[0 if newer_in == "A" else 1]
    torn[slot:slot + SLOT_SIZE] = new[slot:slot + SLOT_SIZE]
    assert unpack_page(bytes(torn), MAC) == Header(HEADER.file_id, 8, 5000)


def test_slots_that_disagree_are_damage():
    a = pack_page(Header(HEADER.file_id, 8, 100), MAC)
    same_seq = pack_page(Header(HEADER.file_id, 8, 200), MAC)
    other_file = pack_page(Header(os.urandom(16), 9, 100), MAC)
    for other in (same_seq, other_file):
        mixed = bytearray(a)
        mixed[2048:2048 + SLOT_SIZE] = other[2048:2048 + SLOT_SIZE]
        assert problem(bytes(mixed)) == "damaged"


def test_unknown_version_is_refused_even_when_authentic():
    body = fileheader._BODY.pack(MAGIC, 2, 0, 0, HEADER.file_id, 1, 0)
    slot = body + MAC(fileheader._MAC_CONTEXT + body)
    page = bytearray(HEADER_SIZE)
    for offset in SLOT_OFFSETS:
        page[offset:offset + SLOT_SIZE] = slot
    with pytest.raises(HeaderProblem, match="version 2") as caught:
        unpack_page(bytes(page), MAC)
    assert caught.value.kind == "damaged"
