"""The open-file table's hold on an inode being re-encrypted by a rename across layouts."""

from __future__ import annotations

import os
import threading

import pytest

from realmfs.keys.key import Key
from realmfs.fs.openfiles import OpenFiles
from realmfs.format.pagecipher import PageCipher


@pytest.fixture
def files():
    return OpenFiles(PageCipher(Key.generate().raw))


def _inode(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def test_an_open_inode_cannot_be_held(files, tmp_path):
    path = str(tmp_path / "f")
    number = files.open(path, "f", False, os.O_RDWR, 0o600)
    assert not files.hold_closed(*_inode(path))
    files.release(number)
    assert files.hold_closed(*_inode(path))
    files.release_held(*_inode(path))
    files.release(files.open(path, "f", False, os.O_RDWR))


def test_an_open_during_the_hold_waits_and_opens_the_path_again(files, tmp_path):
    path = str(tmp_path / "f")
    files.release(files.open(path, "f", False, os.O_RDWR, 0o600))
    inode = _inode(path)
    assert files.hold_closed(*inode)
    waiting = threading.Event()
    real_wait = files._released.wait

    def wait(*args):
        waiting.set()
        return real_wait(*args)

    files._released.wait = wait
    outcome = []

    def opener():
        try:
            outcome.append(files.open(path, "f", False, os.O_RDWR))
        except OSError as error:
            outcome.append(error)

    thread = threading.Thread(target=opener)
    thread.start()
    assert waiting.wait(30)            # it found the inode held and waits
    os.unlink(path)                    # what the rename does before letting go
    files.release_held(*inode)
    thread.join(30)
    assert isinstance(outcome[0], FileNotFoundError)     # the name is gone, not stale data
    assert len(files) == 0
