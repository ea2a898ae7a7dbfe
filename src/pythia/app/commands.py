"""The CLI's commands besides `run` and `ingest`: index, search, eval, status and telegram-login."""

from __future__ import annotations

import getpass
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .. import actions, db, index, model_eval, retrieval_eval, safety
from ..models import Hit
from ..ports import Embedder
from ..search import SearchIndex
from . import compose, report, run
from .options import Options
from .workspace import UserError, Workspace, open_storage


def cmd_index(workspace: Workspace, options: Options) -> int:
    if options.docs is not None:
        workspace = workspace.with_docs_root(options.docs)
    missing = compose.no_embedder(workspace)
    if missing:
        print(f"{missing}: indexing for keyword (BM25) search only", file=sys.stderr)
    indexed = run.index_only(workspace, options)
    stats = indexed.stats
    search = f"BM25 only ({missing})" if missing else "hybrid"
    actions.add_summary(
        "## Pythia index\n\n"
        + actions.table(
            ["files changed", "chunks", "embedded", "reused", "deleted", "seconds", "search"],
            [
                [
                    stats.files_changed,
                    stats.chunks_total,
                    stats.chunks_embedded,
                    stats.chunks_reused,
                    stats.chunks_deleted,
                    f"{stats.seconds:.1f}",
                    search,
                ]
            ],
        )
        + "\n### Time\n"
        + actions.time_table(indexed.report)
    )
    report.record(indexed.report, options)
    if options.json:
        print(json.dumps(asdict(stats), sort_keys=True))
        return 0
    where = (
        f"{workspace.config.publish.data_branch} branch"
        if indexed.on_data_branch
        else str(indexed.index_path)
    )
    print(f"{indexed.report.outcome} in {stats.seconds:.2f}s -> {where}"
          + (" (pushed)" if indexed.saved else ""))
    return 0


def cmd_search(workspace: Workspace, options: Options) -> int:
    with open_storage(workspace, options) as storage:
        if not storage.index_path.exists():
            raise UserError("there is no index yet; run `pythia index` first")
        conn = db.connect(storage.index_path)
        try:
            embedder = compose.optional_embedder(workspace)
            if embedder is None:
                print(f"{compose.no_embedder(workspace)}: searching with BM25 only",
                      file=sys.stderr)  # fmt: skip
            elif not index.has_vectors(conn):
                print("the index has no vectors: searching with BM25 only", file=sys.stderr)
                embedder = None
            hits = compose.RunSearch(workspace, conn, embedder).search(options.query, options.k)
        finally:
            conn.close()
    if options.json:
        print(json.dumps({"hits": [_hit_json(hit) for hit in hits]}, ensure_ascii=False))
        return 0
    if not hits:
        print("no matches")
    for number, hit in enumerate(hits, 1):
        anchor = f"#{hit.anchor}" if hit.anchor else ""
        print(f"{number}. {hit.path}{anchor}  {hit.heading}  (score {hit.score:.4f})")
        print(f"   {' '.join(hit.text.split())[:160]}")
    return 0


def _hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "path": hit.path,
        "heading": hit.heading,
        "anchor": hit.anchor,
        "score": round(hit.score, 6),
        "text": hit.text,
    }


def cmd_eval_retrieval(workspace: Workspace, options: Options) -> int:
    return eval_retrieval(workspace, options, compose.optional_embedder(workspace))


def eval_retrieval(workspace: Workspace, options: Options, embedder: Embedder | None) -> int:
    """Score keyword, vector and hybrid search on `--queries` (answers are docs-relative)."""
    assert options.queries is not None  # argparse requires it
    questions = retrieval_eval.load_questions(options.queries)
    if embedder is None:
        why = compose.no_embedder(workspace) or "no embedder"
        print(f"{why}: evaluating BM25 only", file=sys.stderr)
    with _evaluated_index(workspace, options, embedder) as conn:
        if embedder is not None and not index.has_vectors(conn):
            print("the index has no vectors: evaluating BM25 only", file=sys.stderr)
            embedder = None
        results = retrieval_eval.evaluate(
            SearchIndex(conn, embedder=embedder), questions, k=options.k
        )
    if options.json:
        print(json.dumps(retrieval_eval.as_json(results), indent=2, ensure_ascii=False))
        return 0
    print(retrieval_eval.render(results))
    return 0


def cmd_eval_models(workspace: Workspace, options: Options) -> int:
    """Classification and proposal with the configured models over a labelled set."""
    from ..usage import UsageMeter

    assert options.eval_set is not None  # argparse requires it
    cases = model_eval.load_cases(options.eval_set)
    if options.docs is not None:
        if not options.docs.is_dir():
            raise UserError(f"--docs {options.docs} is not a folder")
        folder = options.docs.resolve()
        options = replace(options, docs=folder)
        if folder.is_relative_to(workspace.root):
            workspace = workspace.with_docs_root(folder)
        else:  # a corpus outside the repository is a repository of its own here
            docs = workspace.config.docs.model_copy(update={"root": "."})
            config = workspace.config.model_copy(update={"docs": docs})
            workspace = replace(workspace, root=folder, config=config)
    # No caps: an evaluation runs the whole set; the cost is what it reports.
    meter = UsageMeter(prices=workspace.config.models.prices)
    llm, embedder = compose.models(workspace, meter, cache=options.cache_path)
    docs_texts = workspace.docs_texts()
    with _evaluated_index(workspace, options, embedder) as conn:
        search = compose.RunSearch(
            workspace, conn, embedder if index.has_vectors(conn) else None
        ).search
        results = model_eval.evaluate(
            cases,
            config=workspace.config,
            llm=llm,
            search=search,
            read=workspace.read,
            meter=meter,
            docs_prefix=workspace.docs_prefix,
            repo_root=workspace.root,
            docs_domains=safety.link_domains(docs_texts),
            checks=compose.edit_checks(workspace, options, docs_texts),
        )
    if options.json:
        print(json.dumps(model_eval.as_json(results), indent=2, ensure_ascii=False))
        return 0
    models = workspace.config.models
    names = f"{models.provider}: {models.classify} / {models.propose}"
    print(model_eval.render(results, model=names))
    return 0


@contextmanager
def _evaluated_index(
    workspace: Workspace, options: Options, embedder: Embedder | None
) -> Iterator[db.Connection]:
    """`--docs` freshly indexed (into `--index` or a temporary file), else the stored index."""
    if options.docs is not None:
        with tempfile.TemporaryDirectory() as tmp:
            index_path = options.index or Path(tmp) / "index.sqlite"
            compose.update_docs_index(workspace.with_docs_root(options.docs), index_path, embedder)
            with _connected(index_path) as conn:
                yield conn
        return
    with open_storage(workspace, options) as storage:
        if not storage.index_path.exists():
            raise UserError("there is no index yet; run `pythia index` first or pass --docs")
        with _connected(storage.index_path) as conn:
            yield conn


@contextmanager
def _connected(path: Path) -> Iterator[db.Connection]:
    conn = db.connect(path)
    try:
        yield conn
    finally:
        conn.close()


def cmd_status(workspace: Workspace, options: Options) -> int:
    with open_storage(workspace, options) as storage:
        streams = storage.store.streams()
        ledger = storage.store.load_ledger()
    data: dict[str, list[dict[str, Any]]] = {
        "streams": [
            {
                "stream": s.stream,
                "watermark": s.watermark,
                "last_read_at": s.last_read_at,
                "failing_threads": len(s.failures),
            }
            for s in streams
        ],
        "proposals": [
            {"fingerprint": e.fingerprint, "status": e.status, "title": e.title, "url": e.url}
            for e in ledger.proposals.values()
        ],
    }
    if options.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    for stream in data["streams"]:
        print(
            f"{stream['stream']}: watermark {stream['watermark']}, last read "
            f"{stream['last_read_at'] or 'never'}, {stream['failing_threads']} failing threads"
        )
    for proposal in data["proposals"]:
        print(f"{proposal['status']:>8}  {proposal['title']}  {proposal['url'] or ''}")
    if not data["streams"] and not data["proposals"]:
        print("no state yet: Pythia has not run here")
    return 0


def cmd_telegram_login() -> int:
    from ..sources.telegram import login

    login(ask=input, ask_secret=getpass.getpass, say=print)
    return 0
