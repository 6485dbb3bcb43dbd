"""The log file is bounded (rotated), and the rate limit lets a flood through only in bursts."""

from __future__ import annotations

import logging

import pytest

from realmfs import log as logmod


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_a_log_file_is_rotated_and_stays_bounded(tmp_path, monkeypatch, root_logger):
    monkeypatch.setattr(logmod, "LOG_FILE_MAX_BYTES", 10_000)
    path = tmp_path / "daemon.log"
    logmod.setup_logging(logfile=str(path))
    for number in range(2_000):      # distinct lines: the rate limit lets each through
        logging.getLogger("realmfs.test").warning(f"line {number:05d} " + "x" * 60)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["daemon.log", "daemon.log.1", "daemon.log.2"]
    assert all(f.stat().st_size <= 10_000 for f in files)
    assert "line 01999" in path.read_text()           # the newest lines are in the live file
    assert "line 00000" not in "".join(f.read_text() for f in files)


def test_a_rotated_default_log_still_names_its_backing_directory(tmp_path, monkeypatch, root_logger):
    """Pruning (fs/logfiles.py) reads a log's first line to learn its backing directory:
    every file a rotation starts must begin with it, or a live log looks orphaned."""
    from realmfs.fs import logfiles
    monkeypatch.setattr(logmod, "LOG_FILE_MAX_BYTES", 10_000)
    backing = tmp_path / "backing"
    backing.mkdir()
    path = tmp_path / logfiles.log_name(str(backing))
    logfiles.write_head(str(path), str(backing))
    logmod.setup_logging(logfile=str(path), head=logfiles.head_line(str(backing)))
    for number in range(500):
        logging.getLogger("realmfs.test").warning(f"line {number:05d} " + "x" * 60)
    files = sorted(tmp_path.glob(path.name + "*"))
    assert len(files) == 3
    for f in files:
        assert logfiles._backing_of(str(f)) == str(backing), f
    backing.rmdir()
    assert set(logfiles.prune(str(tmp_path))) == {str(f) for f in files}   # gone: all of it pruned


def test_the_same_warning_is_let_through_in_bursts(tmp_path, root_logger):
    path = tmp_path / "daemon.log"
    logmod.setup_logging(logfile=str(path))
    for _ in range(100):
        logging.getLogger("realmfs.test").warning("the same complaint about %s", "page 3")
    assert path.read_text().count("the same complaint about page 3") == 5
