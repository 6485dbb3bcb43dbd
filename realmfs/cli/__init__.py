"""The ``realmfs`` command: argument parsing and the one place errors become exit codes.

Each group of subcommands lives in its own module and registers itself through
``register(subparsers)``; a subcommand's handler returns an exit code (or None
for success). Users see one line per error and a non-zero exit code; ``--debug``
shows the traceback and debug logging.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..errors import EXIT_CODE_MEANINGS, ExitCode, RealmfsError
from ..log import setup_logging
from . import keycmds, mountcmds, offlinecmds

SUBCOMMAND_MODULES = [keycmds, mountcmds, offlinecmds]

log = logging.getLogger("realmfs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realmfs",
        description="Transparent encryption for embedded databases: Realm Core's encrypted "
                    "page format behind a FUSE mount.",
        epilog="exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODE_MEANINGS.items()))
    parser.add_argument("--version", action="version", version=f"realmfs {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in SUBCOMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(debug=args.debug)
    try:
        code = args.handler(args)
    except RealmfsError as error:
        if args.debug:
            log.exception("failed")
        print(f"realmfs: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        # the reader of our output went away (`realmfs decrypt F - | head`): no message,
        # and no second error when Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.ERROR
    except KeyboardInterrupt:
        print("realmfs: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except OSError as error:
        if args.debug:
            log.exception("failed")
        where = f": {error.filename}" if error.filename else ""
        print(f"realmfs: {error.strerror or error}{where}", file=sys.stderr)
        return ExitCode.ERROR
    except Exception as error:  # noqa: BLE001 - the last line of defence for users
        if args.debug:
            raise
        print(f"realmfs: internal error: {type(error).__name__}: {error} "
              "(run with --debug for details and report it)", file=sys.stderr)
        return ExitCode.ERROR
    return ExitCode.OK if code is None else code


if __name__ == "__main__":
    sys.exit(main())
