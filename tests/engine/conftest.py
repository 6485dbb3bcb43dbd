"""Fixtures for the engine suite.

ENGINE_TEST_DIR=/some/dir puts every test database in a fresh unique
subdirectory of that directory (e.g. a realmfs mountpoint); otherwise pytest's
tmp_path is used.  Nothing here relies on filesystem features beyond mmap
MAP_SHARED, fcntl locks and ftruncate.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from enginetest_support import new_db_dir, remove_db_dir  # noqa: E402


@pytest.fixture
def db_dir(tmp_path):
    directory = new_db_dir(tmp_path)
    yield directory
    remove_db_dir(directory)


@pytest.fixture
def db_path(db_dir):
    return str(db_dir / "test.db")
