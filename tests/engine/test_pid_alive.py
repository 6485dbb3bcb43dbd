"""The engine's ``pid_alive``: a zombie is not alive (its reader slot may be reclaimed), a
running process is, and so is this one. realmfs's copy answers the same (tests/unit)."""

import os
import subprocess
import sys
import time

from engine.lockfile import pid_alive


def wait_for_state(pid: int, state: bytes) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == state:
                return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never reached state {state!r}")


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_for_state(child.pid, b"Z")         # exited, not reaped yet
        assert not pid_alive(child.pid)
    finally:
        child.wait()
    assert not pid_alive(child.pid)


def test_a_running_process_is_alive():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert pid_alive(child.pid) and pid_alive(os.getpid())
    finally:
        child.stdin.close()
        child.wait()
    assert not pid_alive(0) and not pid_alive(-1)
