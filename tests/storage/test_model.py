"""Differential test: random write/truncate/read/reopen sequences on an EncryptedFile,
checked against a bytearray after every step, for both layouts.

Realm layout: the logical size is whole pages (Realm Core's model: the size is the
physical length), so the model's size is rounded up to 4096 after every write or
truncate, and a shrink keeps the bytes of the last surviving page. Header layout: sizes
are exact and bytes cut off read as zeros when the file grows again.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from realmfs.format.layout import BLOCK_DATA_BYTES, PAGE_SIZE, pages_for
from tests.storage.helpers import Backing, pattern

LIMIT = BLOCK_DATA_BYTES * 2 + 5 * PAGE_SIZE        # three metadata blocks at most

# offsets cluster around page and IV-block boundaries, where the arithmetic bites
POINTS = st.one_of(
    st.integers(0, LIMIT),
    st.builds(lambda base, delta: min(LIMIT, max(0, base + delta)),
              st.sampled_from([0, PAGE_SIZE, 63 * PAGE_SIZE, BLOCK_DATA_BYTES, 2 * BLOCK_DATA_BYTES]),
              st.integers(-2 * PAGE_SIZE - 3, 2 * PAGE_SIZE + 3)),
)
LENGTHS = st.one_of(st.integers(1, 64), st.integers(1, 3 * PAGE_SIZE),
                    st.sampled_from([PAGE_SIZE, 2 * PAGE_SIZE, 32 * PAGE_SIZE, 70 * PAGE_SIZE]))


class EncryptedFileVsBytearray(RuleBasedStateMachine):
    realm = True

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="realmfs-model-")
        self.backing = Backing(os.path.join(self.dir, "f.realm" if self.realm else "f.bin"), self.realm)
        self.model = bytearray()
        self.seed = 0
        self.last_end = 0      # where the previous write ended: journals go on from there

    def teardown(self):
        self.backing.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def f(self):
        return self.backing.f

    def _resize_model(self, size: int) -> None:
        if self.realm:
            size = pages_for(size) * PAGE_SIZE
        if size < len(self.model):
            del self.model[size:]
        else:
            self.model.extend(bytes(size - len(self.model)))

    @rule(offset=POINTS, length=LENGTHS)
    def write(self, offset, length):
        length = min(length, LIMIT - offset) or 1
        self.seed += 1
        data = pattern(length, self.seed)
        assert self.f.write(offset, data) == length
        end = offset + length
        if end > len(self.model):
            self._resize_model(end)
        self.model[offset:end] = data
        self.last_end = end

    @rule(length=st.sampled_from([1, 4, 8, PAGE_SIZE, PAGE_SIZE + 8]))
    def continue_writing(self, length):
        """A journal's pattern: small fields and page-sized records one after another, so
        most writes merge into the partial page the previous one left (also after a
        truncate or reopen in between, where that page must be read again)."""
        self.write(min(self.last_end, LIMIT - 1), length)

    @rule(offset=POINTS, length=LENGTHS)
    def write_zeros(self, offset, length):
        length = min(length, LIMIT - offset) or 1
        self.f.write(offset, bytes(length))
        end = offset + length
        if end > len(self.model):
            self._resize_model(end)
        self.model[offset:end] = bytes(length)

    @rule(size=POINTS)
    def truncate(self, size):
        self.f.truncate(size)
        self._resize_model(size)

    @rule(offset=POINTS, length=LENGTHS)
    def read(self, offset, length):
        assert self.f.read(offset, length) == bytes(self.model[offset:offset + length])

    @rule()
    def reopen(self):
        self.backing.reopen()

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def reopen_read_only(self):
        self.backing.reopen(read_only=True)
        assert self.f.read(0, len(self.model) + 10) == bytes(self.model)
        self.backing.reopen()

    @invariant()
    def same_content(self):
        assert self.f.size == len(self.model)
        assert self.f.read(0, LIMIT + PAGE_SIZE) == bytes(self.model)


class HeaderLayoutVsBytearray(EncryptedFileVsBytearray):
    realm = False


SETTINGS = settings(max_examples=150, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestRealmLayoutModel = EncryptedFileVsBytearray.TestCase
TestRealmLayoutModel.settings = SETTINGS
TestHeaderLayoutModel = HeaderLayoutVsBytearray.TestCase
TestHeaderLayoutModel.settings = SETTINGS
