"""``realmfs init | mount | unmount (umount) | status``: the mount lifecycle on the command line.

Handlers return exit codes; every refusal is a RealmfsError, turned into one line
and its exit code by ``realmfs.cli.main``.
"""

from __future__ import annotations

import logging
import os

from ..keys import config as configmod
from ..fs import daemon, launcher, logfiles, mounttable, unmounting
from ..storage.backinglock import is_locked, read_owner
from ..errors import BadPath, Busy
from ..log import STRICT_ENV, enable_strict, setup_logging
from ..fs.nesting import refuse_nested_init
from .keyargs import KEY_EXIT_CODES, add_key_arguments, exit_codes, key_from_args, new_key_setup

log = logging.getLogger("realmfs")


def register(sub) -> None:
    p = sub.add_parser("init", epilog=exit_codes(("OK", "done"), ("BAD_PATH", "BACKING missing, not a directory or inside a backing directory"),
                                             ("EXISTS", "already initialised"),
                                             ("LOCKED", "BACKING is inside a backing directory in use"),
                                             *KEY_EXIT_CODES), help="make BACKING an encrypted directory (writes its config)",
                       description="Write an authenticated config into BACKING (format version, key "
                                   "check value, options) so that a wrong key is refused before "
                                   "anything is read, even while BACKING is empty.")
    p.add_argument("backing", metavar="BACKING")
    p.add_argument("--realm-pattern", default=configmod.DEFAULT_REALM_PATTERN, metavar="GLOB",
                   help="files kept in Realm Core's own layout (default: %(default)s)")
    p.add_argument("--plain-pattern", action="append", metavar="GLOB", dest="plain_patterns",
                   help="files (and everything in directories) kept unencrypted; repeat for more "
                        "(default: Realm Core's auxiliary files for the realm pattern, e.g. "
                        "*.realm.lock, *.realm.management; see docs/file-format.md; '' for none)")
    add_key_arguments(p)
    p.set_defaults(handler=run_init)

    p = sub.add_parser("mount", epilog=exit_codes(
                           ("OK", "mounted"), ("NOT_ENCRYPTED", "a plain Realm file in BACKING"),
                           ("NOT_RECOGNIZED", "BACKING has no config and files nobody encrypted"),
                           ("LOCKED", "BACKING already mounted"),
                           ("BAD_PATH", "missing/not a directory/mountpoint not empty or a mount"),
                           ("MOUNT_FAILED", "FUSE failed"), ("REKEY_IN_PROGRESS", "finish the rekey"),
                           ("DAMAGED", "config fails authentication"), *KEY_EXIT_CODES),
                       help="mount BACKING (ciphertext) on MOUNTPOINT (plaintext)",
                       description="Mount the encrypted directory BACKING on MOUNTPOINT. Returns once "
                                   "the mountpoint answers; the daemon keeps running in the background.")
    p.add_argument("backing", metavar="BACKING")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground (no daemon)")
    p.add_argument("--read-only", action="store_true", help="mount read-only")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                   help="FUSE mount options passed through, e.g. -o allow_other")
    p.add_argument("--log-file", metavar="F", help="daemon log (default: /run/realmfs/<backing>.log)")
    p.add_argument("--status-fd", type=int, help=argparse_suppress())
    p.add_argument("--detach", action="store_true", help=argparse_suppress())
    add_key_arguments(p)
    p.set_defaults(handler=run_mount)

    for name in ("unmount", "umount"):
        p = sub.add_parser(name, epilog=exit_codes(("OK", "unmounted and sealed (or a dead mount detached)"),
                                               ("BAD_PATH", "not a realmfs mount"),
                                               ("BUSY", "files open: the processes are named")),
                           help="write back, seal and unmount MOUNTPOINT" if name == "unmount"
                           else "alias of unmount",
                           description="Write back everything, fsync every backing file and unmount. "
                                       "Refuses (exit 8) while processes hold files open, naming them.")
        p.add_argument("mountpoint", metavar="MOUNTPOINT")
        p.add_argument("--lazy", action="store_true", help="detach even if busy (seals when the last user closes)")
        p.set_defaults(handler=run_unmount)

    p = sub.add_parser("status", help="list active realmfs mounts")
    p.set_defaults(handler=run_status)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def run_init(args) -> int:
    configmod.require_directory(args.backing)
    refuse_nested_init(args.backing)
    key, slots = new_key_setup(args)      # a key, or a new master key wrapped under a passphrase
    config = configmod.create(args.backing, key, realm_pattern=args.realm_pattern, keyslots=slots,
                              plain_patterns=args.plain_patterns)
    print(f"initialised {args.backing} (files matching {args.realm_pattern} use Realm Core's layout, "
          f"{' '.join(config.plain_globs) or 'no files'} stay unencrypted); "
          f"mount it with: realmfs mount {args.backing} MOUNTPOINT")
    return 0


def _after_dead_daemon(backing: str) -> str:
    return (f"{backing} is as of the last write that daemon finished (writes it had not synced are "
            f"lost); check it with: realmfs verify {backing}")


def _clear_dead_mount(mountpoint: str) -> str | None:
    """Detach a realmfs mount at ``mountpoint`` whose daemon died; returns its backing."""
    entry = mounttable.find_mount(mountpoint)
    if entry is None or not mounttable.daemon_gone(entry):
        return None
    try:
        unmounting.unmount(entry.mountpoint)
    except Busy as error:
        raise BadPath(f"{entry.mountpoint} is a dead realmfs mount (its daemon died) that processes still "
                      f"use ({error}); close them, then run 'realmfs unmount {entry.mountpoint}' "
                      "and mount again") from None
    log.warning("%s was a dead realmfs mount of %s (its daemon died): detached it; %s",
                entry.mountpoint, entry.backing, _after_dead_daemon(entry.backing))
    return entry.backing


def run_mount(args) -> int:
    key = key_from_args(args, backing=args.backing)   # passphrase / recovery-key slots too
    cleared = None if args.detach else _clear_dead_mount(args.mountpoint)
    if args.foreground:
        if args.detach:
            # spawned by 'realmfs mount': the key is read, now leave the spawning process
            # (it waits for this exit) and serve as a grandchild nobody has to reap
            if os.fork():
                os._exit(0)
        if args.log_file:
            # the default log keeps its first line, naming the backing directory, across
            # rotations: pruning reads it (fs/logfiles.py)
            default = os.path.basename(args.log_file) == logfiles.log_name(args.backing)
            setup_logging(debug=args.debug, logfile=args.log_file,
                          head=logfiles.head_line(args.backing) if default else None)
        if os.environ.get(STRICT_ENV):
            enable_strict(os.environ[STRICT_ENV])
        logging.getLogger().setLevel(logging.DEBUG if args.debug else logging.INFO)
        logging.getLogger("fuse").setLevel(logging.INFO)   # fusepy logs every errno at DEBUG
        return daemon.serve(args.backing, args.mountpoint, key, read_only=args.read_only,
                            extra_options=args.options, status_fd=args.status_fd)
    stale = None
    if os.path.isdir(args.backing) and not is_locked(args.backing):
        stale = (read_owner(args.backing) or {}).get("pid")
    started = launcher.start(args.backing, args.mountpoint, key, read_only=args.read_only,
                             extra_options=args.options, log_file=args.log_file, debug=args.debug)
    if stale and cleared != started.backing:
        log.warning("took over the lock of %s left by realmfs pid %s, which died while mounting it; %s",
                    started.backing, stale, _after_dead_daemon(started.backing))
    print(f"mounted {started.backing} on {started.mountpoint} (daemon pid {started.pid}, "
          f"log {started.log_file}); unmount with: realmfs unmount {started.mountpoint}")
    return 0


def run_unmount(args) -> int:
    entry = unmounting.unmount(args.mountpoint, lazy=args.lazy)
    if entry.daemon_gone:
        print(f"detached the dead mount {entry.mountpoint}: its daemon had died, so nothing could be "
              f"written back or sealed; {_after_dead_daemon(entry.backing)}")
        return 0
    how = "detached" if args.lazy else "unmounted and sealed"
    print(f"{how} {entry.mountpoint} (backing {entry.backing})")
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return (f"{days}d" if days else "") + f"{hours:02d}:{minutes:02d}:{seconds:02d}"


def run_status(args) -> int:
    rows = mounttable.status()
    if not rows:
        print("no realmfs mounts")
        return 0
    header = ("MOUNTPOINT", "BACKING", "PID", "UPTIME", "OPEN", "STATE")
    table = [header] + [(r["mountpoint"], r["backing"], str(r["pid"] or "-"), _duration(r["uptime"]),
                         str(r["open_files"]), r["state"] + (" (read-only)" if r["read_only"] else ""))
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0
