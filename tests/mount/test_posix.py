"""POSIX metadata on the mount against ext4 (issue 10 items 3-6, issue 12 item 6).

Each scenario of posixops.py runs in a directory of the mount and in a plain directory
of this machine's disk, in a process of its own, and both must observe the same. Every
scenario runs three ways (``where``): as root on root's mount; as an unprivileged user
on root's mount with ``-o allow_other`` (root's daemon then gives new nodes to the
user, the case a root daemon must get right); and as that user on a mount the user made
itself (its own daemon, through the setuid fusermount).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from realmfs.storage.backinglock import pid_alive
from tests.mount import posixops
from tests.mount.conftest import REPO, Env, run_cli
from tests.mount.unprivileged import Unprivileged


def run_scenario(name: str, root: str, user: Unprivileged | None = None, params: dict | None = None) -> dict:
    """posixops.SCENARIO run in ``root`` by a process of its own (as ``user`` if given)."""
    command = [sys.executable, "-m", "tests.mount.posixops", name, root]
    env = {**os.environ, "PYTHONPATH": REPO, "POSIXOPS_PARAMS": json.dumps(params or {})}
    if user is None:
        result = subprocess.run(command, capture_output=True, env=env, timeout=120, cwd=REPO)
    else:
        result = user.run(command, env=env, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def differences(mount: dict, plain: dict) -> dict:
    return {key: (mount.get(key), plain.get(key)) for key in plain.keys() | mount.keys()
            if mount.get(key) != plain.get(key)}


@dataclass
class Where:
    """A directory on the mount and one on the plain disk, both writable by ``user``."""
    mount_dir: str
    plain_dir: str
    user: Unprivileged | None
    own_mount: bool = False       # the user's daemon: it cannot give anything to another group

    def compare(self, scenario: str, params: dict | None = None) -> dict:
        expected = run_scenario(scenario, self.plain_dir, self.user, params)
        return expected, differences(run_scenario(scenario, self.mount_dir, self.user, params), expected)


def _user_dirs(e: Env, user: Unprivileged, mount_dir: str, own_mount: bool) -> Where:
    os.chown(mount_dir, user.uid, user.gid)
    return Where(mount_dir, user.make_dir(e.tmp, "plain"), user, own_mount)


@pytest.fixture(params=["root", "user on root's mount", "user's own mount"])
def where(request, tmp_path):
    if request.param == "root":
        e = request.getfixturevalue("env")
        e.mount()
        plain = tmp_path / "plain"
        plain.mkdir()
        return Where(e.mountpoint, str(plain), None)
    user = request.getfixturevalue("user")
    if request.param == "user's own mount":
        e = request.getfixturevalue("user_env")
        result = e.mount_cli("-o", "allow_other")
        assert result.returncode == 0, result.stderr.decode()
        return _user_dirs(e, user, e.m(), own_mount=True)
    e = request.getfixturevalue("user_env")
    e.user = None                                   # root mounts, the user works in it
    e.mount(options=["allow_other"])
    os.mkdir(e.m("work"))
    return _user_dirs(e, user, e.m("work"), own_mount=False)


def test_long_paths_and_name_max_names_work_as_on_ext4(where):
    expected, diff = where.compare("long_paths")
    assert expected["create"] == 5000 and expected["deep_stat"][0][2] == 2    # the oracle did it all
    assert diff == {}


def test_times_with_nanoseconds_and_stat_leaves_atime_alone(where):
    expected, diff = where.compare("times")
    assert expected["stat"][0] == [978_307_200_123_456_789, 1_577_836_800_987_654_321]
    assert diff == {}


def test_owners_and_set_id_bits_as_on_ext4(where, user):
    other_gid = user.member_gid if where.own_mount else user.other_gid
    for directory in (where.mount_dir, where.plain_dir):
        posixops.prepare_owners(directory, other_gid)
    expected, diff = where.compare("owners", {"member_gid": user.member_gid})
    assert expected["sg"][1] == oct(0o42775) and expected["sg/dir/sub"] is None
    assert diff == {}


def test_an_unprivileged_user_mounts_uses_and_unmounts(user_env, user):
    """Issue 12 item 6: the user mounts with -o allow_other (fusermount, /etc/fuse.conf),
    works on the mount, another user (root here) sees it, and the user unmounts."""
    e = user_env
    result = e.mount_cli("-o", "allow_other")
    assert result.returncode == 0, result.stderr.decode()
    with open(f"/proc/{e.current.pid}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert {int(u) for u in uids} == {user.uid}        # the daemon is the user's, not root's
    written = user.run([sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write('mine')",
                        e.m("hello")])
    assert written.returncode == 0, written.stderr
    st = os.stat(e.m("hello"))                          # root is "other": allow_other lets it in
    assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
    with open(e.m("hello")) as f:
        assert f.read() == "mine"
    pid = e.current.pid
    unmounted = run_cli("unmount", e.mountpoint, user=user)
    assert unmounted.returncode == 0, unmounted.stderr.decode()
    e.forget_mount()
    assert not pid_alive(pid)
    assert e.decrypt("hello") == b"mine"



def _libfuse_major() -> int:
    """The libfuse major version the daemon's binding loads (it reads the same environment)."""
    from realmfs.fs import fusebinding
    return fusebinding.MAJOR


def test_directory_entries_carry_the_inode_numbers_stat_shows(where):
    expected, diff = where.compare("entries")
    assert set(expected["d_ino is st_ino"]) == {"f", "s", "p", "h"}
    assert all(expected["d_ino is st_ino"].values())
    assert diff == {}


@pytest.mark.parametrize("open_before_link", [False, True], ids=["closed", "open"])
def test_every_name_of_a_hard_link_shows_the_same_attributes_at_once(request, where, user,
                                                                    open_before_link):
    if open_before_link and _libfuse_major() < 3:
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "libfuse 2 cannot invalidate a name: the first name of a file linked while open "
            "stays cached for up to attr_timeout (linkattrs.py)")))
    expected, diff = where.compare("links", {"member_gid": user.member_gid,
                                             "open_before_link": open_before_link})
    assert expected["unlink f3 seen"][0][2] == 2 and expected["unlink f3 same times"] is True
    assert diff == {}
