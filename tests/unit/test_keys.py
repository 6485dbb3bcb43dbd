"""Key parsing, key files and ``realmfs keygen`` (realmfs/keys/key.py, realmfs/cli/keycmds.py)."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from realmfs.errors import AlreadyExists, BadPath, ExitCode, KeyFormatError
from realmfs.keys.key import KEY_ENV, Key, key_from_env, parse_key, read_key_file, write_key_file

REPO = Path(__file__).resolve().parents[2]


def assert_one_line_refusal(error: KeyFormatError):
    message = str(error)
    assert "\n" not in message and message
    assert "64 raw bytes" in message and "128 hex digits" in message


def test_raw_64_bytes():
    raw = os.urandom(64)
    key = parse_key(raw)
    assert key.raw == raw and bytes(key) == raw
    assert key.aes_key == raw[:32] and key.mac_key == raw[32:]


def test_raw_bytes_that_look_like_whitespace_or_hex_stay_raw():
    raw = b" " + b"a" * 62 + b"\n"       # 64 bytes: raw, even though it strips to hex digits
    assert parse_key(raw).raw == raw


@pytest.mark.parametrize("shape", ["plain", "upper", "newline", "spaced", "wrapped", "crlf"])
def test_hex_128_digits_with_whitespace(shape):
    raw = os.urandom(64)
    text = raw.hex()
    text = {
        "plain": text,
        "upper": text.upper(),
        "newline": text + "\n",
        "spaced": " ".join(text[i:i + 8] for i in range(0, 128, 8)),
        "wrapped": "\n".join(text[i:i + 32] for i in range(0, 128, 32)) + "\n",
        "crlf": "  " + text[:64] + "\r\n" + text[64:] + "\r\n",
    }[shape]
    assert parse_key(text).raw == raw
    assert parse_key(text.encode()).raw == raw


def test_key_from_env():
    raw = os.urandom(64)
    assert key_from_env({}) is None
    assert key_from_env({KEY_ENV: raw.hex() + "\n"}).raw == raw
    with pytest.raises(KeyFormatError) as caught:
        key_from_env({KEY_ENV: "abc"})
    assert_one_line_refusal(caught.value)
    assert KEY_ENV in str(caught.value)


@pytest.mark.parametrize("material", [
    b"", b"   \n", "  ",                                   # empty
    os.urandom(63), os.urandom(65), os.urandom(1),          # wrong raw length
    "ab" * 63, "ab" * 65, "a" * 127,                        # wrong number of hex digits
    "zz" * 64, "0x" + "ab" * 63, "g" * 128,                 # not hex
    "é" * 64,                                               # non-ASCII text
], ids=lambda m: f"{type(m).__name__}{len(m)}")
def test_refusals_are_one_line_naming_the_form(material):
    with pytest.raises(KeyFormatError) as caught:
        parse_key(material)
    assert_one_line_refusal(caught.value)


def test_wrong_length_says_how_long():
    with pytest.raises(KeyFormatError, match="126 hex digits"):
        parse_key("ab" * 63)
    with pytest.raises(KeyFormatError, match="empty"):
        parse_key("\n\n")
    with pytest.raises(KeyFormatError, match="wrong key length: 10 bytes"):
        Key(b"x" * 10)


def test_repr_and_str_hide_the_key():
    raw = os.urandom(64)
    key = Key(raw)
    for text in (repr(key), str(key), f"{key}", repr([key]), repr({"k": key})):
        assert raw.hex() not in text and raw.hex().upper() not in text
        assert repr(raw) not in text and raw.hex()[:16] not in text
        assert "hidden" in text
    # equality without showing bytes
    assert key == Key(raw) and key != Key(os.urandom(64)) and hash(key) == hash(Key(raw))


def test_error_messages_never_echo_key_material():
    secret = "ab" * 63 + "z"        # 127 hex-ish characters with one bad digit
    with pytest.raises(KeyFormatError) as caught:
        parse_key(secret)
    assert secret[:16] not in str(caught.value)


def test_generate_is_random():
    assert Key.generate() != Key.generate()


def test_read_key_file_0600_is_quiet(tmp_path, caplog):
    raw = os.urandom(64)
    path = tmp_path / "k"
    path.write_text(raw.hex() + "\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert read_key_file(str(path)).raw == raw
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o610])
def test_read_key_file_warns_when_group_or_others_have_access(tmp_path, caplog, mode):
    raw = os.urandom(64)
    path = tmp_path / "k"
    path.write_bytes(raw)                       # raw form in a file works too
    path.chmod(mode)
    with caplog.at_level(logging.WARNING):
        assert read_key_file(str(path)).raw == raw
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "chmod 600" in message and str(path) in message and raw.hex() not in message


def test_read_key_file_missing_or_bad(tmp_path):
    with pytest.raises(BadPath, match="keygen"):
        read_key_file(str(tmp_path / "missing"))
    with pytest.raises(BadPath, match="directory"):
        read_key_file(str(tmp_path))
    bad = tmp_path / "bad"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(KeyFormatError) as caught:
        read_key_file(str(bad))
    assert_one_line_refusal(caught.value)
    assert str(bad) in str(caught.value)


def test_write_key_file_mode_0600_and_no_overwrite(tmp_path):
    path = tmp_path / "k"
    key = Key.generate()
    old_umask = os.umask(0)                     # even with a permissive umask
    try:
        write_key_file(str(path), key)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == key.hex() + "\n"
    assert read_key_file(str(path)) == key
    with pytest.raises(AlreadyExists) as caught:
        write_key_file(str(path), Key.generate())
    assert caught.value.exit_code == ExitCode.EXISTS
    assert read_key_file(str(path)) == key      # untouched
    with pytest.raises(BadPath):
        write_key_file(str(tmp_path / "no" / "k"), key)


def run_cli(*args):
    env = dict(os.environ)
    env.pop(KEY_ENV, None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "realmfs", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_keygen(tmp_path):
    path = tmp_path / "key"
    first = run_cli("keygen", str(path))
    assert first.returncode == ExitCode.OK, first.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_key_file(str(path))
    assert key.hex() not in first.stdout + first.stderr

    second = run_cli("keygen", str(path))
    assert second.returncode == ExitCode.EXISTS
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.stderr
    assert "already exists" in lines[0]
    assert read_key_file(str(path)) == key


def test_text_is_hex_only():
    """A str (what the environment gives) is never taken as 64 raw bytes: a 64-character
    passphrase or a 32-byte key in hex in $REALMFS_KEY must be refused, not used as a key."""
    for text in ("p" * 64, os.urandom(32).hex()):
        with pytest.raises(KeyFormatError) as caught:
            key_from_env({KEY_ENV: text})
        assert_one_line_refusal(caught.value)
    assert parse_key(b"p" * 64).raw == b"p" * 64       # the same 64 bytes from a file are raw
