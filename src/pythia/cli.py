"""The `pythia` command: run, index, search, ingest, validate, status, telegram-login."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import ConfigError, load_config, render_json_schema

log = logging.getLogger("pythia")


class UserError(Exception):
    """Something the user can fix; printed as one line, exit code 1."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=Path("."), help="docs repository root")
    parser.add_argument(
        "--config", type=Path, default=None, help="config file (default .github/pythia.yml)"
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pythia",
        description="Keep documentation in step with what the community asks in chat.",
    )
    parser.add_argument("--version", action="version", version=f"pythia {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="read chats, classify, propose and publish")
    _common(run)
    run.add_argument("--dry-run", action="store_true", help="write proposals to --out, no PRs")
    run.add_argument("--out", type=Path, default=Path("pythia-out"), help="dry-run folder")
    run.add_argument("--since", default=None, help="reprocess from this date or message id")
    run.add_argument("--stream", default=None, help="only this stream")
    run.add_argument("--index", type=Path, default=None, help="index file (local use)")
    run.add_argument("--json", action="store_true", help="print the run report as JSON")

    index = commands.add_parser("index", help="build or update the docs index")
    _common(index)
    index.add_argument("--full", action="store_true", help="rebuild from scratch")
    index.add_argument("--docs", type=Path, default=None, help="docs folder (overrides config)")
    index.add_argument("--index", type=Path, default=None, help="index file")
    index.add_argument("--json", action="store_true", help="print figures as JSON")

    search = commands.add_parser("search", help="search the docs index")
    _common(search)
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="number of results")
    search.add_argument("--index", type=Path, default=None, help="index file")
    search.add_argument("--json", action="store_true", help="print hits as JSON")

    ingest = commands.add_parser("ingest", help="show what a run would read, change nothing")
    _common(ingest)
    ingest.add_argument("--stream", default=None, help="only this stream")
    ingest.add_argument("--json", action="store_true", help="print as JSON")

    validate = commands.add_parser("validate", help="check the config")
    _common(validate)

    status = commands.add_parser("status", help="streams, watermarks and proposals")
    _common(status)
    status.add_argument("--json", action="store_true", help="print as JSON")

    commands.add_parser("schema", help="print the config's JSON Schema")

    login = commands.add_parser("telegram-login", help="create a Telegram session string")
    login.add_argument("--log-level", default="warning")

    action = commands.add_parser("action", help="entry point of the GitHub Action")
    _common(action)
    action.add_argument("--mode", default="auto", help="auto, run, index, command or feedback")
    action.add_argument("--dry-run", default="false", help="'true' or 'false'")
    action.add_argument("--since", default="", help="reprocess from this date or message id")
    action.add_argument("--stream", default="", help="only this stream")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(render_json_schema())
        return 0
    if args.command == "validate":
        return _validate(args)
    from . import wiring

    try:
        return wiring.dispatch(args)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        message = wiring.explain(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def _validate(args: argparse.Namespace) -> int:
    path = args.config or args.repo / ".github/pythia.yml"
    if not path.exists():
        print(f"{path}: no such file; copy config/pythia.example.yml there to start")
        return 1
    try:
        load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem)
        return 1
    print("ok")
    return 0


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
