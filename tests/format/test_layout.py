"""Property tests for the format's geometry (realmfs/format/layout.py) and the worked sizes
quoted in docs/file-format.md."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realmfs.format import layout
from realmfs.format.layout import (
    BLOCK_BYTES,
    BLOCK_DATA_BYTES,
    ENTRIES_PER_BLOCK,
    ENTRY_SIZE,
    HEADER_BASE,
    HEADER_SIZE,
    PAGE_SIZE,
    REALM_BASE,
    body_size_is_valid,
    body_to_data_size,
    contiguous_page_groups,
    data_to_body_size,
    data_to_file,
    entry_offset,
    file_to_data,
    meta_offset,
    page_offset,
    page_runs,
    pages_for,
    written_body_size,
)
from realmfs.format.pagecipher import PageCipher
from realmfs.storage.pagefile import EncryptedFile

BASES = st.sampled_from([REALM_BASE, HEADER_BASE])
OFFSETS = st.integers(min_value=0, max_value=1 << 40)
PAGES = st.integers(min_value=0, max_value=1 << 28)
# small values near block boundaries are where the arithmetic goes wrong
NEAR_BLOCKS = st.builds(lambda b, d: max(0, b * ENTRIES_PER_BLOCK + d),
                        st.integers(0, 40), st.integers(-2, 2))
SMALL_PAGES = st.one_of(NEAR_BLOCKS, st.integers(0, 5000))


def round_up(size: int) -> int:
    return pages_for(size) * PAGE_SIZE


def test_constants():
    assert (PAGE_SIZE, ENTRY_SIZE, ENTRIES_PER_BLOCK) == (4096, 64, 64)
    assert BLOCK_DATA_BYTES == 262144 and BLOCK_BYTES == 65 * 4096 == 266240
    assert layout.KEY_SIZE == 64 and layout.MAC_SIZE == 28 and layout.SLOT_SIZE * 2 == ENTRY_SIZE
    assert HEADER_SIZE == PAGE_SIZE and (REALM_BASE, HEADER_BASE) == (0, 4096)


@given(OFFSETS, BASES)
def test_file_to_data_inverts_data_to_file(d, base):
    f = data_to_file(d, base)
    assert file_to_data(f, base) == d
    # the physical byte lies in the data page that page_offset names
    page = d // PAGE_SIZE
    assert f == page_offset(page, base) + d % PAGE_SIZE


@given(OFFSETS)
def test_data_to_file_matches_realm_formula(d):
    assert data_to_file(d) == d + (d // 262144 + 1) * 4096


@given(PAGES, BASES)
def test_page_and_entry_offsets_agree_with_spec(p, base):
    assert page_offset(p, base) == base + (p + p // 64 + 1) * 4096
    assert entry_offset(p, base) == base + (p // 64) * 65 * 4096 + (p % 64) * 64
    assert page_offset(p, base) == data_to_file(p * PAGE_SIZE, base)
    # the entry lies inside its block's metadata page
    meta = meta_offset(p // 64, base)
    assert meta <= entry_offset(p, base) < entry_offset(p, base) + ENTRY_SIZE <= meta + PAGE_SIZE


@given(SMALL_PAGES, SMALL_PAGES, BASES)
def test_pages_and_entries_never_overlap(p, q, base):
    def spans(page):
        return [(page_offset(page, base), PAGE_SIZE), (entry_offset(page, base), ENTRY_SIZE)]

    def overlap(a, b):
        return a[0] < b[0] + b[1] and b[0] < a[0] + a[1]

    data_p, entry_p = spans(p)
    data_q, entry_q = spans(q)
    assert not overlap(data_p, entry_q) and not overlap(entry_p, data_q)
    assert not overlap(data_p, entry_p)
    if p != q:
        assert not overlap(data_p, data_q) and not overlap(entry_p, entry_q)


def test_physical_map_of_first_blocks_is_exact():
    """Walk 3 blocks byte-page by page: every physical page is one metadata page or one
    data page, in Realm's order, with no gaps."""
    owner = {}
    for p in range(3 * 64):
        owner.setdefault(page_offset(p) // PAGE_SIZE, []).append(("data", p))
        owner.setdefault(entry_offset(p) // PAGE_SIZE, []).append(("meta", p // 64))
    expected = []
    for b in range(3):
        expected.append(("meta", b))
        expected += [("data", b * 64 + i) for i in range(64)]
    assert [sorted(set(owner[i]))[0] for i in range(len(owner))] == expected
    assert all(len(set(v)) == 1 for v in owner.values())


@given(st.integers(1, 1 << 36))
def test_resize_size_round_trips_to_rounded_size(length):
    assert body_to_data_size(data_to_body_size(length)) == round_up(length)
    pages = pages_for(length)
    assert data_to_body_size(length) == (pages + pages // 64 + 1) * PAGE_SIZE


@given(st.one_of(NEAR_BLOCKS, st.integers(0, 1 << 24)))
def test_written_size_round_trips(pages):
    assert body_to_data_size(written_body_size(pages)) == pages * PAGE_SIZE
    assert written_body_size(pages) == (pages + -(-pages // 64)) * PAGE_SIZE


@given(st.one_of(NEAR_BLOCKS, st.integers(0, 1 << 20)))
def test_both_realm_shapes_are_valid(pages):
    assert body_size_is_valid(written_body_size(pages))
    assert body_size_is_valid(data_to_body_size(pages * PAGE_SIZE))
    # the two shapes differ only when P is a multiple of 64 (trailing empty metadata page)
    same = written_body_size(pages) == data_to_body_size(pages * PAGE_SIZE)
    assert same == (pages % 64 != 0)


@given(st.one_of(NEAR_BLOCKS, st.integers(0, 1 << 20)), st.integers(1, PAGE_SIZE - 1))
def test_partial_pages_are_invalid(pages, cut):
    assert not body_size_is_valid(written_body_size(pages) + cut)
    assert not body_size_is_valid(data_to_body_size(pages * PAGE_SIZE) + cut)


def test_every_whole_page_body_is_one_of_the_two_shapes():
    """Both shapes together cover every page count: validity is exactly 'whole pages'."""
    assert body_size_is_valid(0) and body_size_is_valid(PAGE_SIZE)  # empty, Realm's resize(0)
    for body_pages in range(0, 400):
        body = body_pages * PAGE_SIZE
        data_pages = body_to_data_size(body) // PAGE_SIZE
        assert body in (written_body_size(data_pages), data_to_body_size(data_pages * PAGE_SIZE))
        assert body_size_is_valid(body)
        assert not body_size_is_valid(body + 1) and not body_size_is_valid(body + PAGE_SIZE - 1)


@given(st.integers(0, 1 << 24), st.integers(0, 3 * BLOCK_DATA_BYTES))
def test_page_runs_cover_the_range_exactly(offset, length):
    runs = list(page_runs(offset, length))
    covered = [(p * PAGE_SIZE + lo, p * PAGE_SIZE + hi) for p, lo, hi in runs]
    if length == 0:
        assert runs == []
        return
    assert covered[0][0] == offset and covered[-1][1] == offset + length
    for (a_lo, a_hi), (b_lo, b_hi) in zip(covered, covered[1:]):
        assert a_hi == b_lo
    for p, lo, hi in runs:
        assert 0 <= lo < hi <= PAGE_SIZE
    assert [p for p, _, _ in runs] == list(range(offset // PAGE_SIZE, (offset + length - 1) // PAGE_SIZE + 1))


@given(st.integers(0, 1 << 20), st.integers(0, 600))
def test_contiguous_groups_cover_pages_within_one_block(first, span):
    last = first + span
    groups = list(contiguous_page_groups(first, last))
    assert groups[0][0] == first and groups[-1][1] == last
    for (a, b), (c, _) in zip(groups, groups[1:]):
        assert c == b + 1
    for a, b in groups:
        assert a <= b and a // 64 == b // 64
        # contiguous on disk: data pages and entries
        assert page_offset(b) - page_offset(a) == (b - a) * PAGE_SIZE
        assert entry_offset(b) - entry_offset(a) == (b - a) * ENTRY_SIZE
    # maximal: consecutive groups are in different blocks
    for (_, b), (c, _) in zip(groups, groups[1:]):
        assert b // 64 != c // 64


def test_empty_group_range():
    assert list(contiguous_page_groups(5, 4)) == []


# ----------------------------------------------------------------------------- worked sizes
# (logical bytes written) -> (physical .realm size, .realm logical size, physical header-layout
# size, header-layout logical size). Quoted in docs/file-format.md; change both together.
WORKED = {
    0: (0, 0, 4096, 0),
    1: (8192, 4096, 12288, 1),
    4096: (8192, 4096, 12288, 4096),
    300000: (311296, 303104, 315392, 300000),
}


@pytest.mark.parametrize("length", sorted(WORKED))
def test_worked_sizes_arithmetic(length):
    realm_phys, realm_size, header_phys, header_size = WORKED[length]
    pages = pages_for(length)
    if length:
        assert data_to_body_size(length) == realm_phys
        assert body_to_data_size(realm_phys) == realm_size == round_up(length)
    else:
        # Realm Core's resize(0) makes one lone metadata page; realmfs keeps empty files empty
        assert data_to_body_size(0) == PAGE_SIZE and body_to_data_size(PAGE_SIZE) == 0
    assert written_body_size(pages) == realm_phys
    assert HEADER_SIZE + written_body_size(pages) == header_phys and header_size == length


@pytest.mark.parametrize("length", sorted(WORKED))
@pytest.mark.parametrize("realm", [True, False], ids=["realm", "header"])
def test_worked_sizes_on_disk(length, realm, tmp_path):
    realm_phys, realm_size, header_phys, header_size = WORKED[length]
    path = tmp_path / ("f.realm" if realm else "f.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        f = EncryptedFile(fd, PageCipher(os.urandom(64)), realm_layout=realm, name=str(path))
        f.write(0, b"\x5a" * length)
        assert f.size == (realm_size if realm else header_size)
        assert os.fstat(fd).st_size == (realm_phys if realm else header_phys)
        f.close()
    finally:
        os.close(fd)
