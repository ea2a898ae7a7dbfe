"""`pythia ingest`: what a run would read and settle, through the pipeline's own ingest.

A module of its own so that the command loads only the sources, the config and the state
(not the index, search or model code the other commands need): its time is mostly startup.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

from .. import threads
from ..ingest import ingest
from . import sourcing
from .options import Options
from .workspace import Workspace, open_storage


def cmd_ingest(workspace: Workspace, options: Options) -> int:
    """What a run would read and settle, through the pipeline's own ingest; nothing is saved."""
    now = datetime.now(timezone.utc)
    config = workspace.config
    sources = sourcing.build_sources(workspace, sourcing.chosen_streams(workspace, options))
    results = []
    with open_storage(workspace, options) as storage:
        for source in sources:
            read = ingest(source, config=config, store=storage.store, now=now)
            report = read.report
            entry: dict[str, Any] = {"stream": source.stream, "watermark": report.watermark_before}
            if report.error and read.after is None:
                entry["error"] = report.error
                results.append(entry)
                continue
            done = set(read.state.done_ids) | {i for t in read.settled for i in t.message_ids}
            entry.update(
                new_messages=report.messages_read,
                threads=report.threads,
                settled_threads=report.threads_settled,
                unsettled_threads=report.threads - report.threads_settled,
                watermark_if_all_settled_recorded=threads.next_watermark(
                    [m.id for m in read.fetched], done=done, watermark=read.after
                ),
                interrupted=report.error,
            )
            results.append(entry)
    if options.json:
        print(json.dumps({"streams": results}, indent=2, default=str))
    for entry in results if not options.json else []:
        if "error" in entry:
            print(f"{entry['stream']}: error: {entry['error']}")
            continue
        print(
            f"{entry['stream']}: {entry['new_messages']} new messages in "
            f"{entry['threads']} threads ({entry['settled_threads']} settled); watermark "
            f"{entry['watermark']} -> {entry['watermark_if_all_settled_recorded']}"
        )
    if results and all("error" in entry for entry in results):
        print("error: no stream could be read", file=sys.stderr)
        return 1
    return 0
