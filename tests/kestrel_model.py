"""A rule-based stand-in for Gemini that knows the Kestrel sample chat: the replies a good
model would give, computed from the request, so pipeline tests exercise real prompts."""

from __future__ import annotations

import json
import re

from pythia.ports import GenerateRequest

CONVERSATION = re.compile(r'<conversation id="(T\d+)">(.*?)</conversation>', re.DOTALL)
MESSAGE_INDEX = re.compile(r'<message index="(\d+)"[^>]*role="message"')

# (trigger, category, doc_value, summary, queries)
RULES = [
    (
        "proxy",
        "troubleshooting",
        True,
        "Behind a proxy, set HTTPS_PROXY and point KESTREL_CA_BUNDLE at the corporate CA.",
        ["remote cache proxy", "certificate verify failed"],
    ),
    (
        "kcache",
        "troubleshooting",
        True,
        "KESTREL_CACHE_DIR must be an absolute path; a relative one makes a cache per task.",
        ["KESTREL_CACHE_DIR cache location"],
    ),
    (
        "~/.cache/kestrel",
        "update",
        True,
        "Since 3.0 the local cache lives in ~/.cache/kestrel, not ~/.kestrel/cache.",
        ["local cache location"],
    ),
    (
        "too long",
        "troubleshooting",
        True,
        "On Windows, 'Filename too long' needs long paths enabled.",
        ["windows long paths error"],
    ),
    (
        "--jobs",
        "question",
        False,
        "Parallelism is set with --jobs, as the CLI page says.",
        ["jobs parallel"],
    ),
]

# summary prefix -> (path, search, replace)
EDITS = {
    "Behind a proxy": (
        "docs/troubleshooting.md",
        "## Debug logging\n",
        "## The remote cache hangs behind a proxy\n\n"
        "Since 2.3 Kestrel honours `HTTPS_PROXY` and `NO_PROXY` for the remote cache. If you\n"
        "then see `certificate verify failed`, point Kestrel at your company's CA bundle with\n"
        "`KESTREL_CA_BUNDLE=/path/to/ca.pem`.\n\n"
        "## Debug logging\n",
    ),
    "KESTREL_CACHE_DIR must": (
        "docs/cache.md",
        "```bash\nexport KESTREL_CACHE_DIR=/mnt/data/kestrel-cache\n```\n",
        "```bash\nexport KESTREL_CACHE_DIR=/mnt/data/kestrel-cache\n```\n\n"
        "The path must be absolute: a relative path is resolved against each task's working\n"
        "directory, so every task gets a cache of its own.\n",
    ),
    "Since 3.0": (
        "docs/cache.md",
        "The local cache lives in `~/.kestrel/cache`. Each project gets its own folder "
        "inside it, named",
        "Since Kestrel 3.0 the local cache lives in `~/.cache/kestrel` (or\n"
        "`$XDG_CACHE_HOME/kestrel` when that is set). Each project gets its own folder "
        "inside it, named",
    ),
}


def classify_reply(prompt: str) -> dict[str, object]:
    verdicts = []
    for thread_id, body in CONVERSATION.findall(prompt):
        judged = body.split('role="message"', 1)[-1].lower()
        for trigger, category, value, summary, queries in RULES:
            if trigger in judged:
                verdicts.append(
                    {
                        "thread": thread_id,
                        "category": category,
                        "doc_value": value,
                        "summary": summary,
                        "reason": "stated by a participant",
                        "queries": queries,
                        "keywords": [],
                        "confidence": 0.9,
                    }
                )
                break
        else:
            verdicts.append(
                {
                    "thread": thread_id,
                    "category": "no-doc-value",
                    "doc_value": False,
                    "summary": "chatter",
                    "reason": "nothing for the docs",
                    "queries": [],
                    "keywords": [],
                    "confidence": 0.9,
                }
            )
    return {"verdicts": verdicts}


def propose_reply(prompt: str) -> dict[str, object]:
    for prefix, (path, search, replace) in _edits_for(prompt):
        indices = [int(i) for i in MESSAGE_INDEX.findall(prompt)]
        return {
            "change": True,
            "reason": "",
            "title": prefix.rstrip(":") + " (docs)",
            "summary": "Documents what the community established.",
            "reasoning": "A participant confirmed it worked.",
            "confidence": 0.85,
            "evidence": indices,  # every message it read: its edit rests on them
            "edits": [
                {
                    "path": path,
                    "search": search,
                    "replace": replace,
                    "reason": "missing from the docs",
                }
            ],
        }
    return {"change": False, "reason": "the docs do not need this"}


def _edits_for(prompt: str) -> list[tuple[str, tuple[str, str, str]]]:
    """The edit the classifier's summary names or, when an earlier run's verdict came without
    one, the edit the conversation itself calls for (a model reads the messages too)."""
    named = [(p, edit) for p, edit in EDITS.items() if f"Summary: {p}" in prompt]
    if named:
        return named
    chat = prompt.split("<chat_data>", 1)[-1]
    judged = chat.split('role="message"', 1)[-1].lower()
    for trigger, _, _, summary, _ in RULES:  # the rule the classifier would have applied
        if trigger in judged:
            return [(p, edit) for p, edit in EDITS.items() if summary.startswith(p)]
    return []


def answer(request: GenerateRequest) -> str:
    if request.stage == "classify":
        return json.dumps(classify_reply(request.prompt))
    return json.dumps(propose_reply(request.prompt))
