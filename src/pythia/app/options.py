"""What a command was asked to do: one frozen object, from CLI arguments or Action inputs."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TypedDict

from ..actions import mode_for


@dataclass(frozen=True)
class Options:
    """A command and everything it was told: flags, Action inputs, and the runner's environment.

    Built once, by `from_args` (the CLI) or `from_action` (the Action's inputs); nothing after it
    reads argparse or the process environment, so tests build one by hand.
    """

    command: str
    repo: Path = Path(".")
    config: Path | None = None
    log_level: str = "info"
    dry_run: bool = False
    out: Path = Path("pythia-out")
    since: str | None = None
    stream: str | None = None
    index: Path | None = None
    json: bool = False
    full: bool = False
    docs: Path | None = None
    query: str = ""
    k: int = 5
    queries: Path | None = None  # `pythia eval retrieval --queries`
    embedding_cache: Path | None = None  # docs embeddings kept across runs (embedcache.py)
    via_action: bool = False  # `pythia action`: the user set inputs, not flags
    eval_set: Path | None = None  # `pythia eval models --set`
    backfill: bool = False  # `pythia run --backfill`: send the waiting work as batch jobs
    cache: Path | None = None  # the response cache file; None: PYTHIA_CACHE or RUNNER_TEMP's
    no_cache: bool = False
    llm_base_url: str = ""  # the Action's `llm-base-url`, over models.base_url
    # From the runner (GitHub Actions sets these; locally they are usually empty).
    repository: str = ""
    repository_id: str = ""
    api_url: str = ""
    event_path: Path | None = None
    runner_temp: Path | None = None
    cache_env: Path | None = None  # PYTHIA_CACHE
    local_only: bool = False  # PYTHIA_LOCAL=1: keep index and state in .pythia/, never push
    in_actions: bool = False  # GITHUB_ACTIONS=true: workflow commands, masks and groups
    # The process environment, for the one thing that passes it on: a docs check command, which
    # gets only what `docscheck.command_environment` lets through. Never shown (it holds keys).
    environment: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def setting(self, name: str) -> str:
        """How the user sets `name` where they are: the `dry-run` input in a workflow, the
        `--dry-run` flag on the command line (error messages name the one they can change)."""
        return f"the `{name}` input" if self.via_action else f"`--{name}`"

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> Options:
        """The options of a CLI command (`pythia action` goes through `from_action`)."""
        runner = _runner(os.environ if environ is None else environ)
        known = {field.name for field in fields(cls)} - set(runner)
        given = {name: value for name, value in vars(args).items() if name in known}
        return replace(cls(**given), **runner)

    @classmethod
    def from_action(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> Options:
        """The options of an Action step: the mode by event, inputs as the strings they are."""
        env = os.environ if environ is None else environ
        runner = _runner(env)
        out_root = runner["runner_temp"] or Path(".")
        return cls(
            command=mode_for(args.mode, env.get("GITHUB_EVENT_NAME", "")),
            repo=args.repo,
            config=args.config,
            log_level=args.log_level,
            dry_run=str(args.dry_run).strip().lower() == "true",
            out=out_root / "pythia-out",
            since=args.since or None,
            stream=args.stream or None,
            embedding_cache=args.embedding_cache,
            via_action=True,
            llm_base_url=(args.llm_base_url or "").strip(),
            # The Action keeps this folder in the Actions cache (action.yml) when asked to.
            cache=(
                runner["runner_temp"] / "pythia-responses" / "responses.sqlite"
                if str(args.response_cache).strip().lower() == "true" and runner["runner_temp"]
                else None
            ),
            **runner,
        )


    @property
    def cache_path(self) -> Path | None:
        """Where the response cache lives: `--cache`, else PYTHIA_CACHE (the Action sets it
        when its `response-cache` input is "true"); None keeps no cache. It holds chat-derived
        text, so it is never on unless asked for."""
        if self.no_cache:
            return None
        if self.cache is not None:
            return self.cache
        return self.cache_env


class _Runner(TypedDict):
    environment: Mapping[str, str]
    repository: str
    repository_id: str
    api_url: str
    event_path: Path | None
    runner_temp: Path | None
    cache_env: Path | None
    local_only: bool
    in_actions: bool


def _runner(env: Mapping[str, str]) -> _Runner:
    event_path = env.get("GITHUB_EVENT_PATH", "")
    runner_temp = env.get("RUNNER_TEMP", "")
    return {
        "repository": env.get("GITHUB_REPOSITORY", ""),
        "repository_id": env.get("GITHUB_REPOSITORY_ID", ""),
        "api_url": env.get("GITHUB_API_URL", ""),
        "event_path": Path(event_path) if event_path else None,
        "runner_temp": Path(runner_temp) if runner_temp else None,
        "cache_env": Path(env["PYTHIA_CACHE"]) if env.get("PYTHIA_CACHE") else None,
        "local_only": env.get("PYTHIA_LOCAL") == "1",
        "in_actions": env.get("GITHUB_ACTIONS") == "true",
        "environment": dict(env),
    }
