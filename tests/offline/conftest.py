"""Fixtures of the offline-tool tests: keys, a fast scrypt, and running the CLI in-process."""

from __future__ import annotations

import logging
import os

import pytest

from realmfs import cli
from realmfs.keys.key import Key, write_key_file

FAST_SCRYPT_N = "1024"    # recorded in each slot; production default is 2**17


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch):
    monkeypatch.setenv("REALMFS_SCRYPT_N", FAST_SCRYPT_N)
    monkeypatch.delenv("REALMFS_KEY", raising=False)


@pytest.fixture
def key_file(tmp_path):
    """A fresh key written to a file: (path, Key)."""
    def make(name: str = "k.key"):
        key = Key.generate()
        path = tmp_path / name
        write_key_file(str(path), key)
        return str(path), key
    return make


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def run(capsys):
    """Run ``realmfs ARGS`` in this process; returns CliResult(code, stdout, stderr)."""
    def invoke(*argv: str) -> CliResult:
        root = logging.getLogger()
        saved = root.handlers[:], root.level
        capsys.readouterr()
        try:
            code = cli.main([str(a) for a in argv])
        finally:
            # main() points the root logger at this test's captured stderr: undo it
            root.handlers[:], level = saved
            root.setLevel(level)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)
    return invoke


def write_tree(root, files: dict) -> None:
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def read_tree(root) -> dict:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def write_hex_key(path, key_hex: str) -> str:
    """A key file with the given hex key, mode 0600 (no permission warning)."""
    with open(os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(key_hex + "\n")
    return str(path)
