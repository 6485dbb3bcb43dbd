"""``realmfs encrypt | decrypt | verify | rekey | passwd``: the tools that need no mount.

Each handler is a thin layer over realmfs.tools.offline / realmfs.tools.verify: parse, call,
print results on stdout (errors go through realmfs.cli.main as one line and an
exit code). Progress goes to stderr, only on a terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys

from ..keys import config as configmod
from ..tools import info, offline, repair, verify
from ..keys import keyslots
from ..tools import rekey as rekeymod
from ..errors import ExitCode, Interrupted, NotEncrypted, NotRecognized
from ..tools.progress import Progress
from .keyargs import (KEY_EXIT_CODES, add_key_arguments, add_passphrase_arguments, exit_codes, key_from_args,
                      new_key_setup, read_passphrase, unlock_from_args)

_LAYOUTS = {"auto": None, "realm": True, "header": False}


def _layout_argument(parser, default_help: str) -> None:
    parser.add_argument("--layout", choices=sorted(_LAYOUTS), default="auto",
                        help=f"file layout: Realm Core's ('realm') or realmfs header ('header'); {default_help}")


def register(sub) -> None:
    p = sub.add_parser("encrypt", epilog=exit_codes(("OK", "done"), ("BAD_PATH", "SRC missing"), ("EXISTS", "DST exists"), ("ALREADY_ENCRYPTED", "SRC is already encrypted"), *KEY_EXIT_CODES),
                       help="encrypt a plain file or directory tree into a new DST",
                       description="Encrypt SRC (a plain file, e.g. an unencrypted Realm file, or a "
                                   "directory tree) into DST, which must not exist. A tree becomes a "
                                   "backing directory (with a config) that 'realmfs mount' opens; "
                                   "files matching --realm-pattern are byte-compatible with Realm "
                                   "Core's encrypted format. Written under a temporary name, read "
                                   "back, then renamed.")
    p.add_argument("src", metavar="SRC", help="a plain file or tree; '-' reads standard input into one file")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--realm-pattern", default=configmod.DEFAULT_REALM_PATTERN, metavar="GLOB",
                   help="files kept in Realm Core's layout (default: %(default)s)")
    p.add_argument("--kdf", choices=("scrypt", "argon2id"), default="scrypt",
                   help="passphrase KDF for a new passphrase setup (default: %(default)s)")
    _layout_argument(p, "default: by DST's name for a file, by --realm-pattern in a tree")
    add_key_arguments(p)
    p.set_defaults(handler=run_encrypt)

    p = sub.add_parser("decrypt", epilog=exit_codes(("OK", "done"), ("DAMAGED", "a damaged page stopped the run"), ("NOT_ENCRYPTED", "SRC is plain"), ("NOT_RECOGNIZED", "SRC is not an encrypted file"), ("BAD_PATH", "SRC missing"), ("EXISTS", "DST exists"), ("REKEY_IN_PROGRESS", "finish the rekey first"), *KEY_EXIT_CODES),
                       help="decrypt an encrypted file or backing directory into a new DST",
                       description="Decrypt SRC (one encrypted file of either layout, files written by "
                                   "Realm Core included, or a whole backing directory) into DST, which "
                                   "must not exist. A damaged page stops the run, naming file and page, "
                                   "unless --skip-damaged.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST", help="a new file or directory; '-' writes one file's plaintext "
                                             "to standard output")
    p.add_argument("--skip-damaged", action="store_true",
                   help="write damaged pages as zeros and list them at the end")
    _layout_argument(p, "default: detected from the file (a lone file only)")
    add_key_arguments(p)
    p.set_defaults(handler=run_decrypt)

    p = sub.add_parser("verify", epilog=exit_codes(("OK", "clean"), ("DAMAGED", "damage found (also after --repair if some remains)"), ("NOT_ENCRYPTED", "a plain Realm file"), ("NOT_RECOGNIZED", "not an encrypted file"), ("LOCKED", "--repair while mounted"), ("REKEY_IN_PROGRESS", "finish the rekey first"), *KEY_EXIT_CODES),
                       help="check every page of every file; optionally repair",
                       description="Check the header, size and every page (both IV slots) of every "
                                   "file in BACKING, or of one FILE, without changing anything. Exit 0: "
                                   "clean (warnings allowed); 5: damage found; 3: wrong key.")
    p.add_argument("target", metavar="BACKING|FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="also list never-written pages")
    p.add_argument("--repair", action="store_true",
                   help="roll torn pages back to their old slot and restore a header from its good "
                        "slot, after backing up every page changed")
    p.add_argument("--zero-damaged", action="store_true",
                   help="with --repair: replace pages that cannot be recovered by zeros")
    p.add_argument("--backup-dir", metavar="D",
                   help="where --repair saves what it changes (default: TARGET.realmfs-repair-<time>)")
    p.add_argument("--restore", metavar="D",
                   help="undo a repair: put back everything saved in backup directory D, then verify")
    p.add_argument("--realm-pattern", default=None, metavar="GLOB",
                   help="for a directory without a config: files in Realm Core's layout (default *.realm)")
    _layout_argument(p, "default: from the config, or detected")
    add_key_arguments(p)
    p.set_defaults(handler=run_verify)

    p = sub.add_parser("rekey", epilog=exit_codes(("OK", "done (also: already done)"), ("USAGE", "no --new-key-file"), ("EXISTS", "--new-key-file exists"), ("LOCKED", "mounted"), ("DAMAGED", "a file is damaged: verify --repair first"), *KEY_EXIT_CODES, ("INTERRUPTED", "Ctrl-C: run it again to finish")),
                       help="re-encrypt everything under a new master key (crash-safe)",
                       description="Re-encrypt every file of BACKING under a new random master key. "
                                   "Crash-safe: every file is always wholly under the old or the new "
                                   "key; after an interruption run the same command again to finish. "
                                   "Until then the directory cannot be mounted. The new key goes to "
                                   "--new-key-file, and/or into the passphrase slot that unlocked it.")
    p.add_argument("backing", metavar="BACKING")
    p.add_argument("--new-key-file", metavar="F",
                   help="write the new key here (mode 0600; refuses to overwrite). Required unless "
                        "unlocked by a passphrase or recovery key")
    add_key_arguments(p)
    p.set_defaults(handler=run_rekey)

    p = sub.add_parser("info", epilog=exit_codes(("OK", "shown"), ("BAD_PATH", "BACKING missing"),
                                                 ("DAMAGED", "the config is no realmfs config")),
                       help="show a backing directory's layout, patterns, KDF and key slots (no key needed)",
                       description="Show what BACKING is: config format version, realm and plain name "
                                   "patterns, the file layouts, the key slots with their KDF and its "
                                   "parameters, a pending rekey, file counts and whether it is mounted. "
                                   "Needs no key: nothing shown is secret, and nothing is authenticated "
                                   "('realmfs verify' checks with the key).")
    p.add_argument("backing", metavar="BACKING")
    p.set_defaults(handler=run_info)

    p = sub.add_parser("passwd", epilog=exit_codes(("OK", "done"), ("EXISTS", "recovery key file exists"), ("REKEY_IN_PROGRESS", "finish the rekey first"), *KEY_EXIT_CODES),
                       help="change the passphrase (or add a recovery key); data untouched",
                       description="Replace the passphrase slot of BACKING's config. The master key, "
                                   "and so every data byte, is unchanged: use 'realmfs rekey' to rotate "
                                   "the master key. With --add-recovery-key F, write a new random "
                                   "recovery key to F and add a slot for it instead.")
    p.add_argument("backing", metavar="BACKING")
    p.add_argument("--add-recovery-key", metavar="F",
                   help="write a new recovery key to F (mode 0600) that unlocks BACKING via --key-file F")
    p.add_argument("--kdf", choices=("scrypt", "argon2id"), default="scrypt",
                   help="KDF of the new passphrase slot (default: %(default)s)")
    new = p.add_argument_group("new passphrase (default: asked twice on the terminal)")
    add_passphrase_arguments(new, prefix="new-", what="new passphrase")
    add_key_arguments(p)
    p.set_defaults(handler=run_passwd)


def _progress(verb: str) -> Progress:
    return Progress(verb, stream=sys.stderr)


def _backing_of(path: str) -> str | None:
    return path if os.path.isdir(path) else None


@contextlib.contextmanager
def _ctrl_c_leaves_nothing(dst: str):
    """Ctrl-C during encrypt/decrypt: the output was built under a temporary name, which
    the tool removed (offline._publishing), so say that nothing was written."""
    try:
        yield
    except KeyboardInterrupt:
        if dst == "-":
            raise Interrupted("interrupted: what reached standard output is incomplete; "
                              "run the command again") from None
        if os.path.lexists(dst):    # Ctrl-C between the rename into place and its fsync
            raise Interrupted(f"interrupted just after {dst} was written; check it with "
                              f"'realmfs verify {dst}' ...key options") from None
        raise Interrupted(f"interrupted: {dst} was not created (nothing was written); "
                          "run the command again") from None


# ---------------------------------------------------------------------- handlers
def _stdin_taken(args) -> bool:
    if getattr(args, "key_stdin", False):
        print("realmfs: '-' and --key-stdin both want standard input; give the key another way "
              "(--key-file, $REALMFS_KEY, --key-from-keyring)", file=sys.stderr)
        return True
    return False


def run_encrypt(args) -> int:
    if args.src == "-":
        return _encrypt_stdin(args)
    if os.path.isdir(args.src):
        key, slots = new_key_setup(args)    # --passphrase: a new master key in a slot (--kdf)
    else:
        if args.passphrase or args.passphrase_file or args.extpass:
            print("realmfs: a passphrase needs a backing directory (a config to keep its slot); "
                  "use a key for a single file", file=sys.stderr)
            return ExitCode.USAGE
        key, slots = key_from_args(args), []
    with _ctrl_c_leaves_nothing(args.dst), _progress("encrypt") as progress:
        result = offline.encrypt(args.src, args.dst, key, realm_pattern=args.realm_pattern,
                                 realm_layout=_LAYOUTS[args.layout], keyslot_list=slots, progress=progress)
    for name in result.padded:
        print(f"note: {name} was not a whole number of 4096-byte pages; Realm's layout pads it with zeros")
    what = "backing directory" if os.path.isdir(args.dst) else "encrypted file"
    print(f"encrypted {len(result.files)} file(s), {result.bytes} bytes, into {what} {args.dst}")
    if os.path.isdir(args.dst):
        print(f"mount it with: realmfs mount {args.dst} MOUNTPOINT")
    return 0


def _encrypt_stdin(args) -> int:
    if _stdin_taken(args):
        return ExitCode.USAGE
    key = key_from_args(args)
    with _ctrl_c_leaves_nothing(args.dst), _progress("encrypt") as progress:
        result = offline.encrypt_stream(sys.stdin.buffer, args.dst, key, realm_pattern=args.realm_pattern,
                                        realm_layout=_LAYOUTS[args.layout], progress=progress)
    if result.padded:
        print("note: the input was not a whole number of 4096-byte pages; Realm's layout pads it with zeros")
    print(f"encrypted {result.bytes} bytes from standard input into encrypted file {args.dst}")
    return 0


def _decrypt_stdout(args, key) -> int:
    with _ctrl_c_leaves_nothing("-"), _progress("decrypt") as progress:
        result = offline.decrypt_to_stream(args.src, sys.stdout.buffer, key, skip_damaged=args.skip_damaged,
                                           realm_layout=_LAYOUTS[args.layout], progress=progress)
    _report_zeroed(result.zeroed, sys.stderr)   # standard output carries the data
    return 0


def _report_zeroed(zeroed: list, stream) -> None:
    if zeroed:
        pages = sum(1 for p in zeroed if p.page is not None)
        print(f"{pages} damaged page(s) were written as zeros:", file=stream)
        for line in verify.format_problems(zeroed):
            print(f"  {line}", file=stream)


def run_decrypt(args) -> int:
    key = key_from_args(args, backing=_backing_of(args.src))
    if args.dst == "-":
        return _decrypt_stdout(args, key)
    with _ctrl_c_leaves_nothing(args.dst), _progress("decrypt") as progress:
        result = offline.decrypt(args.src, args.dst, key, skip_damaged=args.skip_damaged,
                                 realm_layout=_LAYOUTS[args.layout], progress=progress)
    print(f"decrypted {len(result.files)} file(s), {result.bytes} bytes, into {args.dst}")
    _report_zeroed(result.zeroed, sys.stdout)
    return 0


def run_verify(args) -> int:
    if args.zero_damaged and not args.repair:
        print("realmfs: --zero-damaged only goes with --repair", file=sys.stderr)
        return ExitCode.USAGE
    key = key_from_args(args, backing=_backing_of(args.target))
    if args.restore:
        restored = repair.restore_backup(args.restore, args.target)
        print(f"restored {len(restored)} file(s) from {args.restore}: {', '.join(restored)}")
    layout = _LAYOUTS[args.layout]
    with _progress("verify") as progress:
        report = verify.verify_path(args.target, key, realm_pattern=args.realm_pattern,
                                    realm_layout=layout, progress=progress)
    if os.path.isfile(args.target) and report.files:
        kinds = {p.kind for p in report.files[0].problems}
        if verify.Kind.NOT_ENCRYPTED in kinds:
            raise NotEncrypted(f"{args.target} is an unencrypted Realm file; nothing to verify")
        if verify.Kind.NOT_RECOGNIZED in kinds:
            detail = next(p.detail for p in report.files[0].problems if p.kind is verify.Kind.NOT_RECOGNIZED)
            raise NotRecognized(f"{args.target} is not encrypted "
                                f"({detail or 'no realmfs header, no Realm IV table'}); nothing to verify")
    for line in verify.format_report(report, verbose=args.verbose):
        print(line)
    if args.repair and report.damaged:
        backup, changes = repair.repair(report, key, zero_damaged=args.zero_damaged, backup_dir=args.backup_dir)
        if not changes:
            print("nothing repairable" + ("" if args.zero_damaged else
                                           " (add --zero-damaged to replace unrecoverable pages by zeros)"))
        else:
            for change in changes:
                print(f"repaired: {change}")
            print(f"backup of every changed page: {backup} "
                  f"(undo with: realmfs verify --restore {backup} {args.target} ...key options)")
            report = verify.verify_path(args.target, key, realm_pattern=args.realm_pattern, realm_layout=layout)
            print(verify.format_report(report)[-1] + " after repair")
    return ExitCode.DAMAGED if report.damaged else ExitCode.OK


def run_rekey(args) -> int:
    configmod.require_directory(args.backing)
    unlocked = unlock_from_args(args, backing=args.backing)
    config = configmod.load(args.backing)
    if (not args.new_key_file and unlocked.kek is None and config is not None and config.rekey is None
            and config.key_check == configmod.key_check_value(unlocked.master)):
        print("realmfs: rekey needs --new-key-file F to put the new key in (or unlock with a "
              "passphrase / recovery key, whose slot then holds the new key)", file=sys.stderr)
        return ExitCode.USAGE
    try:
        with _progress("rekey") as progress:
            result = rekeymod.rekey(args.backing, unlocked.master, unlocked=unlocked,
                                   new_key_file=args.new_key_file, progress=progress)
    except KeyboardInterrupt:
        raise _rekey_interrupted(args.backing) from None
    print(f"{'finished the interrupted' if result.resumed else 'completed the'} rekey of {args.backing}: "
          f"{len(result.rekeyed)} file(s) re-encrypted in this run under a new master key")
    if result.key_file:
        print(f"the new key is in {result.key_file} (mode 0600); the old key no longer opens {args.backing}")
    if result.slots_kept:
        print(f"the new master key is wrapped in {result.slots_kept} key slot(s) of "
              f"{configmod.config_path(args.backing)}: the same passphrase/recovery key still unlocks it")
    for slot in result.slots_dropped:
        print(f"note: {slot} was removed: it could not be re-wrapped without its secret; "
              "add it again with 'realmfs passwd'")
    return 0


def _rekey_interrupted(backing: str) -> Interrupted:
    """Ctrl-C during a rekey: every file is wholly under one key; say how to finish."""
    config = configmod.load(backing)
    if config is None or config.rekey is None:
        return Interrupted(f"interrupted before the rekey of {backing} began; nothing was changed")
    return Interrupted(f"interrupted: the rekey of {backing} is half done (every file is whole, under the "
                       "old or the new key) and the directory cannot be mounted until it is finished; "
                       "run the same 'realmfs rekey' command again to finish it")


def run_info(args) -> int:
    for line in info.info_lines(args.backing):
        print(line)
    return 0


def run_passwd(args) -> int:
    configmod.require_directory(args.backing)
    unlocked = unlock_from_args(args, backing=args.backing)
    if args.add_recovery_key:
        print(offline.add_recovery_key(args.backing, unlocked, args.add_recovery_key)
              + "; unlock with --key-file " + args.add_recovery_key)
        return 0
    secret = read_passphrase(args, prefix="new-", prompt="New passphrase: ", confirm=True)
    change = offline.set_passphrase(args.backing, unlocked, secret, keyslots.default_kdf(args.kdf))
    print(f"{change}. The master key is unchanged and no data was re-encrypted; "
          "the old passphrase no longer unlocks. To rotate the master key itself run 'realmfs rekey'.")
    return 0
