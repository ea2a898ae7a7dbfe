"""The GitHub Action's entry: picks the mode by event and handles feedback and commands."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import actions
from .wiring import cmd_index, cmd_run, publisher_for
from .workspace import Workspace, docs_paths, open_storage, open_workspace, setup_logging


def _event() -> dict[str, Any]:
    path = os.environ.get("GITHUB_EVENT_PATH", "")
    if not path or not Path(path).is_file():
        return {}
    loaded: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return loaded


def cmd_action(args: argparse.Namespace) -> int:
    mode = actions.mode_for(args.mode, os.environ.get("GITHUB_EVENT_NAME", ""))
    args.dry_run = str(args.dry_run).strip().lower() == "true"
    args.since = args.since or None
    args.stream = args.stream or None
    args.index = None
    args.out = Path(os.environ.get("RUNNER_TEMP") or ".") / "pythia-out"
    args.json = False
    args.full = False
    args.docs = None
    if mode == "run":
        return cmd_run(args)
    if mode == "index":
        return cmd_index(args)
    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    event = _event()
    if mode == "feedback":
        from .commands import record_closed_pr

        with open_storage(workspace, None) as storage:
            ledger = storage.store.load_ledger()
            entry = record_closed_pr(
                event, ledger, branch_prefix=workspace.config.publish.branch_prefix
            )
            if entry is None:
                print("not a Pythia pull request; nothing to record")
                return 0
            storage.store.save_ledger(ledger)
            storage.save(f"pythia: record {entry.status} proposal {entry.fingerprint[:8]}")
        print(f"recorded proposal {entry.fingerprint[:8]} as {entry.status}")
        actions.add_summary(
            f"## Pythia feedback\n\nRecorded proposal `{entry.fingerprint[:8]}` as "
            f"**{entry.status}**.\n"
        )
        return 0
    from .commands import handle_comment

    args.dry_run = False
    with open_storage(workspace, None) as storage:
        ledger = storage.store.load_ledger()
        publisher = publisher_for(workspace, args, ledger)
        outcome = handle_comment(event, publisher=publisher, revise=_reviser(workspace, publisher))
        storage.store.save_ledger(publisher.ledger)
        storage.save(f"pythia: /pythia {outcome.command or 'comment'}")
    print(f"/pythia {outcome.command or '(none)'}: {outcome.status}")
    actions.add_summary(
        f"## Pythia command\n\n`/pythia {outcome.command or '(none)'}`: {outcome.status}\n"
    )
    return 0


def _reviser(workspace: Workspace, publisher: Any) -> Callable[[str, str], Any]:
    """The `/pythia revise` callback: the branch's files, the instruction, one LLM call."""

    def revise(fingerprint: str, instruction: str) -> Any:
        import git

        from . import gemini, safety
        from .revise import Revision, revise_proposal
        from .usage import UsageMeter

        entry = publisher.ledger.get(fingerprint)
        if entry is None or not entry.branch:
            return "this proposal is not in Pythia's ledger"
        sha = publisher.branches.fetch(entry.branch)
        repo = git.Repo(workspace.root)
        current = {
            path: repo.git.show(f"{sha}:{path}", strip_newline_in_stdout=False)
            for path in entry.paths
        }
        base = {path: text for path in entry.paths if (text := workspace.read(path)) is not None}
        docs = [text for path in docs_paths(workspace) if (text := workspace.read(path))]
        meter = UsageMeter.from_config(workspace.config)
        adapters = gemini.from_config(workspace.config, workspace.secrets, meter)
        return revise_proposal(
            entry,
            instruction,
            revision=Revision(current=current, base=base),
            config=workspace.config,
            llm=adapters.llm,
            docs_domains=safety.link_domains(docs),
            repo_root=workspace.root,
        )

    return revise
