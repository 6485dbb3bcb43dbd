"""Command line: python -m engine {info,verify,dump,compact,upgrade} ...

Errors print one line on stderr and exit 1 (a traceback only with --debug);
verify exits 1 when it finds problems. A closed pipe (``dump ... | head``) ends the
output silently.
"""

import argparse
import datetime
import json
import os
import sys

from . import open as open_db
from .errors import EngineError
from .db import Database
from .tools import dump, upgrade


def _json_default(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _run(args) -> int:
    if args.command == "upgrade":
        upgrade(args.path, args.output, Database)
        print(f"wrote {args.output}")
        return 0
    if args.command == "compact":
        with open_db(args.path) as db:
            db.write_copy_to(args.output)
            print(f"wrote {args.output}")
        return 0
    with open_db(args.path) as db:
        if args.command == "info":
            for key, value in db.stats().items():
                print(f"{key}: {value}")
            print(f"schema: {json.dumps(db.schema, sort_keys=True)}")
            return 0
        if args.command == "verify":
            problems = db.verify()
            for problem in problems:
                print(problem)
            print("ok" if not problems else f"{len(problems)} problem(s)")
            return 1 if problems else 0
        for obj in dump(db, args.class_name):
            print(json.dumps(obj, default=_json_default, sort_keys=True))
        return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Inspect an engine database file.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="pages, versions, object counts, schema").add_argument("path")
    sub.add_parser("verify", help="check every tree and page").add_argument("path")
    dump_parser = sub.add_parser("dump", help="print objects of a class as JSON lines")
    dump_parser.add_argument("path")
    dump_parser.add_argument("class_name", metavar="CLASS")
    compact = sub.add_parser("compact", help="write a compacted copy")
    compact.add_argument("path")
    compact.add_argument("output")
    upgrade_parser = sub.add_parser("upgrade", help="write an older-format file's objects to a new file")
    upgrade_parser.add_argument("path")
    upgrade_parser.add_argument("output")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # the reader went away (`python -m engine dump ... | head`): not an error to report;
        # point stdout at /dev/null so that the flush at exit cannot complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (EngineError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
