"""Access to Realm Core's vectors in ../shared/vectors (or $REALMFS_VECTORS)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VECTOR_DIR = Path(os.environ.get("REALMFS_VECTORS", REPO.parent / "shared" / "vectors"))


def load_vectors() -> list[dict]:
    manifest = VECTOR_DIR / "vectors.json"
    if not manifest.exists():
        pytest.fail(f"Realm Core vectors not found at {VECTOR_DIR}; set REALMFS_VECTORS", pytrace=False)
    return json.loads(manifest.read_text())["vectors"]


def vector_path(name: str) -> Path:
    return VECTOR_DIR / name
