"""Crash injection: every backing mutation (pwrite, ftruncate) of an operation is, in turn,
the one where the power fails. After each crash the file is reopened from disk and every
page must read as its old or its new content -- never an error, never garbage -- and the
size must be the old or the new one. Then the operation is redone and must give the new
content exactly."""

from __future__ import annotations

import logging
import os

import pytest

from realmfs.storage import sealworker
from realmfs.format.layout import BLOCK_DATA_BYTES, PAGE_SIZE, pages_for
from tests.storage.helpers import (LAYOUT_IDS, LAYOUTS, Backing, count_mutations, crash_after, model_pages,
                                    pattern)

P = PAGE_SIZE


def writes(*spans):
    def run(f):
        for seed, (offset, length) in enumerate(spans, 1):
            f.write(offset, pattern(length, seed))
    return run


def op_write(offset, length, seed=99):
    return lambda f: f.write(offset, pattern(length, seed))


def op_truncate(size):
    return lambda f: f.truncate(size)


SCENARIOS = {
    # name: (setup, operation)
    "rewrite_page": (writes((0, 4 * P)), op_write(P, P)),
    "rewrite_partial": (writes((0, 4 * P)), op_write(P + 100, 50)),
    "rewrite_written_twice": (writes((0, 4 * P), (0, 4 * P)), op_write(2 * P, P)),
    "rewrite_tail_bytes": (writes((0, 3 * P + 100)), op_write(3 * P + 50, 20)),
    "first_write_in_hole": (writes((0, P), (5 * P, P)), op_write(2 * P, P)),
    "first_write_partial_in_hole": (writes((0, P), (5 * P, P)), op_write(3 * P + 7, 99)),
    "rewrite_across_iv_block": (writes((0, 70 * P)), op_write(60 * P + 10, 8 * P)),
    "rewrite_and_first_writes_across_iv_block": (writes((0, 62 * P)), op_write(60 * P, 8 * P)),
    "mixed_in_one_block": (writes((0, P), (3 * P, P)), op_write(0, 5 * P)),
    "grow_with_hole": (writes((0, 3 * P + 100)), op_write(5 * P + 7, 3000)),
    "grow_across_iv_block": (writes((0, 63 * P - 10)), op_write(63 * P - 20, 3 * P)),
    "grow_from_empty": (writes(), op_write(0, 2 * P + 1)),
    # groups of 16 pages and more: with the seal worker, sealed in two parts and written by pwritev
    "rewrite_large_group": (writes((0, 70 * P), (0, 70 * P)), op_write(4 * P, 40 * P)),
    "first_writes_large_group": (writes((0, P), (100 * P, P)), op_write(66 * P, 30 * P)),
    "mixed_large_group_across_iv_block": (writes((0, 40 * P)), op_write(20 * P, 60 * P + 9)),
    "truncate_mid_page": (writes((0, 70 * P)), op_truncate(10 * P + 123)),
    "truncate_within_last_page": (writes((0, 3 * P)), op_truncate(2 * P + 1)),
    "truncate_whole_blocks": (writes((0, 140 * P)), op_truncate(3 * P)),
    "truncate_to_block_boundary": (writes((0, 70 * P)), op_truncate(BLOCK_DATA_BYTES)),
    "truncate_to_zero": (writes((0, 5 * P)), op_truncate(0)),
    "truncate_grow": (writes((0, 2 * P + 5)), op_truncate(70 * P + 3)),
}


def snapshot(backing: Backing) -> tuple[int, bytes]:
    f = backing.f
    return f.size, f.read(0, f.size)


def pages_match(got: bytes, size: int, old, new) -> list[int]:
    """Pages of ``got`` (a file of ``size`` bytes) that are neither old nor new."""
    old_pages, new_pages = model_pages(old[1], size), model_pages(new[1], size)
    bad = []
    for page in range(pages_for(size)):
        chunk = got[page * P:(page + 1) * P]
        if chunk != old_pages[page] and chunk != new_pages[page]:
            bad.append(page)
    return bad


def original_name(realm: bool) -> str:
    return "f.realm" if realm else "f.bin"


def prepare(scenario: str, realm: bool, tmp_path):
    """The scenario's file before the operation (closed), the (size, content) before and
    after it, and how many backing mutations it makes (counted on a copy)."""
    setup, operation = SCENARIOS[scenario]
    name = original_name(realm)
    key = os.urandom(64)
    original = Backing(tmp_path / name, realm, key)
    setup(original.f)
    old = snapshot(original)
    original.close()
    reference = Backing(tmp_path / ("ref-" + name), realm, key)
    reference.close()
    original.copy_to(reference.path)
    reference.open()
    total = count_mutations(reference, lambda: operation(reference.f))
    new = snapshot(reference)
    reference.close()
    return original, old, new, total


@pytest.fixture(scope="module")
def worker():
    splitter = sealworker.Splitter()
    yield splitter
    splitter.close()


@pytest.fixture(params=["one-core", "seal-worker"], autouse=True)
def sealing(request, monkeypatch):
    """Every scenario also with groups of 16 pages and more sealed in two parts
    (realmfs/storage/sealworker.py: off by default, REALMFS_SEAL_WORKER=1) and written by pwritev."""
    if request.param == "seal-worker":
        splitter = request.getfixturevalue("worker")
        monkeypatch.setattr(sealworker, "splitter", lambda: splitter)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("realm", LAYOUTS, ids=LAYOUT_IDS)
def test_crash_at_every_backing_write(scenario, realm, tmp_path, caplog):
    original, old, new, total = prepare(scenario, realm, tmp_path)
    operation, name, key = SCENARIOS[scenario][1], original_name(realm), original.key
    assert total >= 1 and (new != old or realm)  # .realm sizes are whole pages

    for allow in range(total):
        work = tmp_path / f"crash{allow}-{name}"
        original.copy_to(work)
        crashed = Backing(work, realm, key)
        assert crash_after(crashed, allow, lambda: operation(crashed.f)), allow
        crashed.close()

        caplog.clear()
        with caplog.at_level(logging.INFO):
            crashed.open()
            size, content = snapshot(crashed)
        context = f"{scenario}: crash before backing mutation {allow + 1} of {total}"
        assert size in (old[0], new[0]), context
        assert not pages_match(content, size, old, new), context
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], context

        # and the file keeps working: redo the operation, get exactly the new content
        operation(crashed.f)
        assert snapshot(crashed) == new, context
        crashed.reopen()
        assert snapshot(crashed) == new, context
        crashed.close()
        os.unlink(work)


@pytest.mark.parametrize("scenario", ["rewrite_page", "rewrite_written_twice", "rewrite_across_iv_block",
                                      "rewrite_and_first_writes_across_iv_block", "rewrite_partial"])
@pytest.mark.parametrize("realm", LAYOUTS, ids=LAYOUT_IDS)
def test_second_crash_after_a_torn_write(scenario, realm, tmp_path):
    """Crash, reopen, and crash again while redoing the operation, without reading the page
    in between. The old content is still on disk (slot 2) and must stay reachable."""
    original, old, new, total = prepare(scenario, realm, tmp_path)
    operation, name, key = SCENARIOS[scenario][1], original_name(realm), original.key

    for first in range(total):
        for second in range(total):
            work = tmp_path / f"crash{first}-{second}-{name}"
            original.copy_to(work)
            crashed = Backing(work, realm, key)
            crash_after(crashed, first, lambda: operation(crashed.f))
            crashed.reopen()
            crash_after(crashed, second, lambda: operation(crashed.f))
            crashed.reopen()
            size, content = snapshot(crashed)
            context = f"{scenario}: crashes before mutations {first + 1} and {second + 1} of {total}"
            assert size in (old[0], new[0]), context
            assert not pages_match(content, size, old, new), context
            crashed.close()
            os.unlink(work)
