"""Shared helpers for the engine tests (database directories, hypothesis settings)."""

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings

ENV_DIR = "ENGINE_TEST_DIR"
ENV_PROFILE = "ENGINE_HYPOTHESIS_PROFILE"   # "fast" (default) or "thorough"
REPO_ROOT = Path(__file__).resolve().parents[2]


_created = set()


def new_db_dir(fallback=None) -> Path:
    """A fresh, unique, empty directory for one test's database files:
    under $ENGINE_TEST_DIR if set, else `fallback` (pytest's tmp_path), else a
    new temporary directory."""
    base = os.environ.get(ENV_DIR)
    if not base and fallback is not None:
        return Path(fallback)
    if base:
        os.makedirs(base, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="enginetest-", dir=base or None))
    _created.add(directory)
    return directory


def remove_db_dir(directory: Path):
    """Remove a directory made by new_db_dir (pytest cleans its own tmp_path)."""
    if directory in _created:
        _created.discard(directory)
        shutil.rmtree(directory, ignore_errors=True)


def hypothesis_settings(fast_examples: int, steps: int):
    thorough = os.environ.get(ENV_PROFILE, "fast") == "thorough"
    return settings(max_examples=fast_examples * (10 if thorough else 1),
                    stateful_step_count=steps * (2 if thorough else 1),
                    deadline=None, derandomize=not thorough,
                    suppress_health_check=list(HealthCheck))


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
