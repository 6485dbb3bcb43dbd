"""Secret store (Linux kernel keyring via keyctl) and the progress line."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import uuid

import pytest

from realmfs.keys import keyring
from realmfs.errors import ExitCode
from realmfs.keys.key import Key
from realmfs.tools.progress import Progress
from tests.offline.conftest import write_tree


def keyctl_usable() -> bool:
    if not shutil.which("keyctl"):
        return False
    return subprocess.run(["keyctl", "show", "@u"], capture_output=True).returncode == 0


needs_keyctl = pytest.mark.skipif(not keyctl_usable(), reason="keyctl (Debian keyutils) not usable here")


@pytest.fixture
def keyring_name(monkeypatch):
    monkeypatch.setenv(keyring.BACKEND_ENV, "keyctl")
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    keyring.remove(name)


@needs_keyctl
def test_store_load_remove(keyring_name):
    key = Key.generate()
    keyring.store(keyring_name, key)
    assert keyring.load(keyring_name) == key
    with pytest.raises(Exception) as caught:
        keyring.store(keyring_name, Key.generate())
    assert caught.value.exit_code == ExitCode.EXISTS
    keyring.remove(keyring_name)
    with pytest.raises(keyring.KeyringError):
        keyring.load(keyring_name)


@needs_keyctl
def test_keygen_keyring_and_key_from_keyring(run, keyring_name, tmp_path):
    result = run("keygen", "--keyring", keyring_name)
    assert result.code == 0 and "kernel user keyring" in result.out, result
    write_tree(tmp_path / "src", {"x.realm": os.urandom(8192)})
    assert run("encrypt", tmp_path / "src", tmp_path / "b", "--key-from-keyring", keyring_name).code == 0
    assert run("verify", tmp_path / "b", "--key-from-keyring", keyring_name).code == 0
    missing = run("verify", tmp_path / "b", "--key-from-keyring", keyring_name + "-nope")
    assert missing.code == ExitCode.KEYRING and "keygen --keyring" in missing.err


def test_no_backend_is_one_clear_error(monkeypatch):
    monkeypatch.delenv(keyring.BACKEND_ENV, raising=False)
    monkeypatch.setattr(keyring.shutil, "which", lambda name: None)
    monkeypatch.setitem(__import__("sys").modules, "keyring", None)    # not importable
    with pytest.raises(keyring.KeyringError) as caught:
        keyring.load("x")
    assert "keyutils" in str(caught.value)


def test_keygen_without_target_is_a_usage_error(run):
    assert run("keygen").code == ExitCode.USAGE


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal():
    quiet = io.StringIO()
    with Progress("encrypt", 2, 8192, stream=quiet) as progress:
        progress.file("a")
        progress.advance(4096)
    assert quiet.getvalue() == ""
    tty = Tty()
    with Progress("encrypt", 2, 8192, stream=tty) as progress:
        progress.file("a")
        progress.advance(4096)
        progress.file("b")
    shown = tty.getvalue()
    assert "[1/2]" in shown and "[2/2] 4.0 KiB/8.0 KiB b" in shown and shown.endswith("\r")


def test_cli_prints_no_progress_when_not_on_a_terminal(run, tmp_path, key_file):
    k, _ = key_file()
    write_tree(tmp_path / "src", {"a.bin": os.urandom(100000)})
    result = run("encrypt", tmp_path / "src", tmp_path / "b", "--key-file", k)
    assert result.code == 0 and result.err == ""
