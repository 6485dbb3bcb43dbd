"""Access to Realm Core's vectors: the data directory tests/vectors/ (or $REALMFS_VECTORS).

The vectors are test data kept in the repository (tests/vectors/README.md says where they came from),
so a fresh clone needs nothing beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VECTOR_DIR = Path(os.environ.get("REALMFS_VECTORS") or REPO / "tests" / "vectors")


def load_vectors() -> list[dict]:
    manifest = VECTOR_DIR / "vectors.json"
    if not manifest.exists():
        pytest.fail(f"Realm Core vectors not found at {VECTOR_DIR}; set REALMFS_VECTORS", pytrace=False)
    return json.loads(manifest.read_text())["vectors"]


def vector_path(name: str) -> Path:
    return VECTOR_DIR / name
