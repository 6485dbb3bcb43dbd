"""Reads in any order return the file's bytes: the sequential read-ahead hint must never
turn a read into an error, whatever earlier reads advised (issue 10, item 1)."""

from __future__ import annotations

import os
import random

import pytest

from realmfs.storage.pagefile import SEQUENTIAL_PREFETCH
from realmfs.format.layout import PAGE_SIZE

from .helpers import LAYOUT_IDS, LAYOUTS, Backing


@pytest.mark.parametrize("realm", LAYOUTS, ids=LAYOUT_IDS)
def test_sequential_reads_after_a_jump_back(tmp_path, realm):
    """Read pages 8, 9 then 2, 3: the read of page 3 is sequential while the advice given
    after page 9 reaches far past it (the reported EINVAL)."""
    backing = Backing(tmp_path / ("f.realm" if realm else "f"), realm)
    data = os.urandom(PAGE_SIZE * 1200)
    backing.f.write(0, data)
    for page in (8, 9, 2, 3, 4, 600, 601, 0, 1):
        assert backing.f.read(page * PAGE_SIZE, PAGE_SIZE) == data[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    backing.close()


@pytest.mark.parametrize("realm", LAYOUTS, ids=LAYOUT_IDS)
def test_the_reported_unaligned_sequence(tmp_path, realm):
    backing = Backing(tmp_path / ("f.realm" if realm else "f"), realm)
    model = bytearray()

    def write(offset, length):
        chunk = os.urandom(length)
        backing.f.write(offset, chunk)
        if len(model) < offset + length:
            model.extend(bytes(offset + length - len(model)))
        model[offset:offset + length] = chunk

    def read(offset, length):
        got = backing.f.read(offset, length)
        end = min(offset + length, backing.f.size)
        assert got == bytes(model[offset:end])[:len(got)]
        assert len(got) == max(0, end - offset)

    write(0xc1d3, 0x19b8)
    read(0xc469, 0x1722)
    write(0xb72e, 0xd275)
    read(0xa7c9, 0x540a)
    backing.close()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("realm", LAYOUTS, ids=LAYOUT_IDS)
def test_random_read_orders_match_the_data(tmp_path, realm, seed):
    """Runs of sequential reads started at random places, forward and backward jumps of
    every size around the read-ahead window."""
    rng = random.Random(seed)
    backing = Backing(tmp_path / ("f.realm" if realm else "f"), realm)
    size = 3 * SEQUENTIAL_PREFETCH + rng.randrange(PAGE_SIZE)
    data = rng.randbytes(size)
    backing.f.write(0, data)
    data += bytes(backing.f.size - size)     # a .realm file is whole pages
    for _ in range(40):
        offset = rng.randrange(size)
        for _ in range(rng.randrange(1, 6)):
            length = rng.choice([1, 100, PAGE_SIZE, 3 * PAGE_SIZE + 7, 128 << 10])
            assert backing.f.read(offset, length) == data[offset:offset + length]
            offset += length
    backing.close()
