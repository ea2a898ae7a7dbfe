"""The `pythia` command: parse arguments, open the workspace, run a command, errors in one line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import CONFIG_REFERENCE, __version__, actions
from ..config import ConfigError, Secrets, load_config
from ..configschema import render_json_schema
from ..ports import one_line
from .options import Options
from .workspace import UserError, Workspace

LOG_LEVELS = ("debug", "info", "warning", "error")

def user_errors() -> tuple[type[Exception], ...]:
    """Errors a user can fix, told in one line; anything else is a bug and keeps its traceback.

    Imported only when something failed, so a quick command never loads the adapters.
    """
    from .. import db, index
    from ..databranch import DataBranchError
    from ..edits import EditError
    from ..gemini import GeminiError
    from ..gitenv import NoRemote
    from ..model_eval import EvalSetError
    from ..openai_compat import OpenAIError
    from ..ports import MalformedReply, PublishError
    from ..retrieval_eval import QuestionsError
    from ..sources import SourceError
    from ..sources.telegram import LoginError

    return (
        UserError,
        ConfigError,
        LoginError,
        GeminiError,
        OpenAIError,
        EvalSetError,
        SourceError,
        DataBranchError,
        NoRemote,
        EditError,
        MalformedReply,
        PublishError,
        actions.UnknownEvent,
        db.DatabaseError,
        index.EmbeddingMismatch,
        index.DocsRootMissing,
        QuestionsError,
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=Path("."), help="docs repository root")
    parser.add_argument(
        "--config", type=Path, default=None, help="config file (default .github/pythia.yml)"
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")


def _cache_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache", type=Path, default=None,
        help="response cache file (default: PYTHIA_CACHE, or RUNNER_TEMP/pythia-cache in Actions)",
    )
    parser.add_argument("--no-cache", action="store_true", help="keep no response cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pythia",
        description="Keep documentation in step with what the community asks in chat.",
    )
    parser.add_argument("--version", action="version", version=f"pythia {__version__}")
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run_ = commands_.add_parser("run", help="read chats, classify, propose and publish")
    _common(run_)
    run_.add_argument("--dry-run", action="store_true", help="write proposals to --out, no PRs")
    run_.add_argument("--out", type=Path, default=Path("pythia-out"), help="dry-run folder")
    run_.add_argument("--since", default=None, help="reprocess from this date or message id")
    run_.add_argument("--stream", default=None, help="only this stream")
    run_.add_argument("--index", type=Path, default=None, help="index file (local use)")
    run_.add_argument("--json", action="store_true", help="print the run report as JSON")
    _embedding_cache(run_)
    run_.add_argument(
        "--backfill", action="store_true",
        help="send the waiting classification and proposal work as Gemini batch jobs",
    )
    _cache_flags(run_)

    index_ = commands_.add_parser("index", help="build or update the docs index")
    _common(index_)
    index_.add_argument("--full", action="store_true", help="rebuild from scratch")
    index_.add_argument("--docs", type=Path, default=None, help="docs folder (overrides config)")
    index_.add_argument("--index", type=Path, default=None, help="index file")
    index_.add_argument("--json", action="store_true", help="print figures as JSON")
    _embedding_cache(index_)

    search = commands_.add_parser("search", help="search the docs index")
    _common(search)
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="number of results")
    search.add_argument("--index", type=Path, default=None, help="index file")
    search.add_argument("--json", action="store_true", help="print hits as JSON")

    evaluate = commands_.add_parser("eval", help="measure Pythia against a set of questions")
    evaluations = evaluate.add_subparsers(dest="evaluation", required=True, metavar="WHAT")
    retrieval = evaluations.add_parser(
        "retrieval", help="recall@1, recall@k and MRR of keyword, vector and hybrid search"
    )
    retrieval.set_defaults(command="eval-retrieval")
    _common(retrieval)
    retrieval.add_argument(
        "--queries", type=Path, required=True,
        help='JSON Lines: {"question": ..., "answers": ["docs-relative page path", ...]}',
    )
    retrieval.add_argument("--index", type=Path, default=None, help="index file")
    retrieval.add_argument(
        "--docs", type=Path, default=None, help="index this docs folder first (in --index or a "
        "temporary file)",
    )
    retrieval.add_argument("-k", type=int, default=5, help="pages that count as found")
    retrieval.add_argument("--json", action="store_true", help="print figures as JSON")

    models_ = evaluations.add_parser(
        "models",
        help="doc-worthy precision and recall, page accuracy, edit apply rate, refusals, cost",
    )
    models_.set_defaults(command="eval-models")
    _common(models_)
    models_.add_argument(
        "--set", dest="eval_set", type=Path, required=True,
        help="JSON Lines of labelled conversations (see README, 'Evaluating models')",
    )
    models_.add_argument("--index", type=Path, default=None, help="index file")
    models_.add_argument(
        "--docs", type=Path, default=None, help="index this docs folder first (in --index or a "
        "temporary file)",
    )
    models_.add_argument("--json", action="store_true", help="print figures as JSON")
    _cache_flags(models_)

    ingest = commands_.add_parser("ingest", help="show what a run would read, change nothing")
    _common(ingest)
    ingest.add_argument("--stream", default=None, help="only this stream")
    ingest.add_argument("--json", action="store_true", help="print as JSON")

    validate = commands_.add_parser("validate", help="check the config")
    _common(validate)

    status = commands_.add_parser("status", help="streams, watermarks and proposals")
    _common(status)
    status.add_argument("--json", action="store_true", help="print as JSON")

    commands_.add_parser("schema", help="print the config's JSON Schema")

    login = commands_.add_parser("telegram-login", help="create a Telegram session string")
    login.add_argument("--log-level", default="warning")

    action_ = commands_.add_parser("action", help="entry point of the GitHub Action")
    _common(action_)
    action_.add_argument("--mode", default="auto", help="auto, run, index, command or feedback")
    action_.add_argument("--dry-run", default="false", help="'true' or 'false'")
    action_.add_argument("--since", default="", help="reprocess from this date or message id")
    action_.add_argument("--stream", default="", help="only this stream")
    _embedding_cache(action_)
    action_.add_argument(
        "--llm-base-url", default="", help="OpenAI-compatible API root (over models.base_url)"
    )
    action_.add_argument(
        "--response-cache", default="true",
        help="'true' keeps model answers in RUNNER_TEMP, sealed with the provider's key",
    )
    return parser


def _optional_path(value: str) -> Path | None:
    return Path(value) if value else None


def _embedding_cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embedding-cache",
        type=_optional_path,  # the action passes "" for none
        default=None,
        help="SQLite file that keeps docs embeddings across runs (never chat text)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()  # a run's time budget counts from here, indexing included
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(render_json_schema())
        return 0
    try:
        if args.command == "validate":
            return _validate(Options.from_args(args))
        if args.command == "telegram-login":
            from .commands import cmd_telegram_login

            return cmd_telegram_login()
        options = (
            Options.from_action(args) if args.command == "action" else Options.from_args(args)
        )
        return dispatch(options, started=started)
    except ConfigError as error:
        if actions.in_actions():
            actions.fail(error.problems)
        else:
            for problem in error.problems:
                print(problem, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not isinstance(error, user_errors()):
            raise
        # In a workflow: an annotation and a job summary; on a terminal: one `error:` line.
        actions.fail([one_line(error, limit=2000)])
        return 1


def dispatch(options: Options, *, started: float | None = None) -> int:
    """Open the workspace, set up logging, and carry out `options.command`."""
    from .workspace import open_workspace

    workspace = open_workspace(options)
    setup_logging(options, workspace.secrets)
    if options.command == "run":
        from .report import finish
        from .run import run

        return finish(run(workspace, options, started=started), options)
    return _command(options.command)(workspace, options)


def _command(name: str) -> Callable[[Workspace, Options], int]:
    if name in ("feedback", "command"):
        from . import action

        return action.cmd_feedback if name == "feedback" else action.cmd_command
    if name == "ingest":
        from . import ingesting

        return ingesting.cmd_ingest
    from . import commands

    found: dict[str, Callable[[Workspace, Options], int]] = {
        "index": commands.cmd_index,
        "search": commands.cmd_search,
        "status": commands.cmd_status,
        "eval-retrieval": commands.cmd_eval_retrieval,
        "eval-models": commands.cmd_eval_models,
    }
    return found[name]


def setup_logging(options: Options, secrets: Secrets) -> None:
    values = secrets.values()
    if options.in_actions:
        actions.mask(values)
    level = (options.log_level or "info").lower()
    if level not in LOG_LEVELS:
        raise UserError(f"log level '{level}' is not one of {', '.join(LOG_LEVELS)}")
    actions.configure_logging(level=level, secrets=values, actions=options.in_actions)


def _validate(options: Options) -> int:
    path = options.config or options.repo / ".github/pythia.yml"
    if not path.exists():
        print(f"{path}: no such file; start from the reference, {CONFIG_REFERENCE}")
        return 1
    try:
        load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
