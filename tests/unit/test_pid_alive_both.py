"""realmfs's ``pid_alive`` and the engine's copy agree: a zombie is not alive (its flocks and
reader slots are free), a running process is. Two copies because the engine never imports
realmfs and realmfs does not depend on the engine."""

import os
import subprocess
import sys

import pytest

from engine.lockfile import pid_alive as engine_pid_alive
from realmfs.storage.backinglock import pid_alive
from tests.engine.test_pid_alive import wait_for_state

BOTH = pytest.mark.parametrize("alive", [pid_alive, engine_pid_alive], ids=["realmfs", "engine"])


@BOTH
def test_a_zombie_is_not_alive(alive):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_for_state(child.pid, b"Z")
        assert not alive(child.pid)
    finally:
        child.wait()
    assert not alive(child.pid)


@BOTH
def test_running_processes_are_alive(alive):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert alive(child.pid) and alive(os.getpid()) and alive(1)     # pid 1: another user's? root's
    finally:
        child.stdin.close()
        child.wait()
    assert not alive(0) and not alive(-1)
