"""A synthetic Kestrel community for bench_demand.py: a docs tree, a chat export, and the answers
a good model would give about it.

Nineteen topics, each a section of its own in the docs. Several people ask about each topic in
their own words, and someone who knows answers with the fact the section is missing; the rest of
the chat is greetings, small talk, release notes, questions nobody answers and questions the
docs already answer. Everything is seeded: the same arguments give the same files.

Standard library only, so the benchmark can run under any checkout's virtualenv.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

START = datetime(2024, 6, 3, 8, 0, tzinfo=timezone.utc)
PROJECT = {
    "name": "Kestrel",
    "description": "A command-line task runner with a local and a remote cache.",
    "style": "Second person, present tense, short sentences.",
}


@dataclass(frozen=True)
class Topic:
    """A docs gap: the section it belongs in, how people ask, and what the answer says."""

    key: str
    page: str  # docs-relative
    heading: str
    body: str  # the section's first line as the docs have it now; unique in its page
    details: str  # the rest of the section: what the docs already say about it
    fact: str  # the sentence a good proposal adds below `body`
    marker: str  # lower case; every answer on this topic says it, nothing else does
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    queries: tuple[str, ...]  # what a model would search for; each conversation gets some
    keywords: tuple[str, ...]
    category: str = "question"
    # What a good model writes instead when told part of `fact` was never said (the grounding
    # check's feedback): `fact` without that part. Empty: it has nothing left to add.
    said_only: str = ""


TOPICS = (
    Topic(
        "proxy",
        "remote-cache.md",
        "Networking",
        "Kestrel reaches the remote cache over HTTPS on port 443.",
        "Connections time out after 30 seconds and uploads are retried three times. "
        "Kestrel checks the server's TLS certificate against the system's certificate store.",
        "Behind a proxy, set `HTTPS_PROXY` and point `KESTREL_CA_BUNDLE` at your company's CA.",
        "kestrel_ca_bundle",
        (
            "The remote cache just hangs on the office network, we have a corporate proxy. Ideas?",
            "kestrel cannot reach our cache server through the http proxy at work",
            "Remote cache uploads time out behind the company firewall, what should I set?",
            "Getting certificate verify failed from the remote cache since IT added an "
            "inspecting proxy",
        ),
        (
            "Export HTTPS_PROXY and point KESTREL_CA_BUNDLE at the corporate CA file, "
            "that fixed it here.",
            "Since 2.3 it honours HTTPS_PROXY; for the certificate error set "
            "KESTREL_CA_BUNDLE=/etc/ssl/corp-ca.pem.",
        ),
        ("remote cache proxy", "HTTPS_PROXY remote cache", "certificate verify failed cache"),
        ("HTTPS_PROXY", "KESTREL_CA_BUNDLE", "proxy"),
        "troubleshooting",
    ),
    Topic(
        "cache-location",
        "cache.md",
        "Where the cache lives",
        "The local cache lives in `~/.kestrel/cache`, one folder per project.",
        "Each folder is named after a hash of the project's root path. Cached outputs "
        "are compressed with zstd.",
        "Since 3.0 the local cache lives in `~/.cache/kestrel` (or `$XDG_CACHE_HOME/kestrel`).",
        "~/.cache/kestrel",
        (
            "Where did my cache go after upgrading to 3.0? ~/.kestrel/cache is empty",
            "Which folder holds the local cache on Linux now?",
            "I want to clean the cache by hand, where is it stored these days?",
            "Disk is full, which directory is the kestrel cache in?",
        ),
        (
            "Since 3.0 it is under ~/.cache/kestrel, and XDG_CACHE_HOME is honoured.",
            "It moved to ~/.cache/kestrel with the 3.0 release.",
        ),
        ("local cache location", "cache folder linux", "where is the cache stored"),
        ("cache", "XDG_CACHE_HOME"),
        "update",
        "Since 3.0 the local cache lives in `~/.cache/kestrel`.",
    ),
    Topic(
        "cache-dir",
        "cache.md",
        "Moving the cache",
        "Set `KESTREL_CACHE_DIR` to keep the cache somewhere else.",
        "This helps when your home folder is on a small disk or a network drive.",
        "`KESTREL_CACHE_DIR` must be absolute: a relative path gives every task its own cache.",
        "must be absolute",
        (
            "I set KESTREL_CACHE_DIR=cache and now every task has its own cache folder??",
            "A relative cache dir creates folders all over my monorepo",
            "Why are there dozens of cache folders after I changed the cache directory setting?",
        ),
        (
            "KESTREL_CACHE_DIR must be absolute, a relative one is resolved in each task's "
            "working directory.",
            "The path must be absolute, otherwise every task resolves it on its own.",
        ),
        ("KESTREL_CACHE_DIR relative path", "cache directory setting", "custom cache dir"),
        ("KESTREL_CACHE_DIR",),
        "troubleshooting",
    ),
    Topic(
        "long-paths",
        "troubleshooting.md",
        "Windows builds",
        "Kestrel runs on Windows 10 and later.",
        "Use PowerShell or cmd; paths in `kestrel.toml` use forward slashes on every platform.",
        "If a build fails with `Filename too long`, enable long paths "
        "(`git config --system core.longpaths true` and the `LongPathsEnabled` registry key).",
        "core.longpaths",
        (
            "Build fails on Windows with Filename too long",
            "Restoring task outputs errors with path too long on our windows runners",
            "Windows: error 206 when the cache is restored, any fix?",
        ),
        (
            "Enable long paths: git config --system core.longpaths true plus the "
            "LongPathsEnabled registry key.",
            "You need core.longpaths true and long paths switched on in the registry.",
        ),
        ("windows filename too long", "windows long paths", "windows build error"),
        ("Windows", "long paths"),
        "troubleshooting",
    ),
    Topic(
        "jobs",
        "cli.md",
        "Running tasks in parallel",
        "By default Kestrel runs one task per CPU core.",
        "Tasks that do not depend on each other start as soon as a core is free.",
        "Limit parallel tasks with `--jobs N`, or with `KESTREL_JOBS=N` in CI.",
        "kestrel_jobs",
        (
            "How do I stop kestrel from using all 32 cores on the CI box?",
            "Can I limit how many tasks run at the same time?",
            "Our small runner runs out of memory, is there a concurrency setting?",
        ),
        (
            "Use --jobs 2, or set KESTREL_JOBS=2 in the environment, handy in CI.",
            "KESTREL_JOBS=4 does it without touching the command line.",
        ),
        ("parallel tasks limit", "concurrency jobs", "number of cores"),
        ("--jobs", "parallel"),
        said_only="Limit parallel tasks with `KESTREL_JOBS=N` in CI.",
    ),
    Topic(
        "upgrade-cold",
        "cache.md",
        "When the cache is invalidated",
        "A task's cache key covers its inputs and its command.",
        "Change an input file or the command line and the task runs again; change "
        "nothing and its outputs come from the cache.",
        "The cache key also includes the Kestrel version, so the first run after an upgrade "
        "is cold.",
        "includes the kestrel version",
        (
            "After upgrading every task rebuilt from scratch, is that expected?",
            "Why was the whole cache cold after the 3.2 update?",
            "All cache misses since we bumped the version, did we break something?",
        ),
        (
            "Expected: the cache key includes the kestrel version, so the first run after an "
            "upgrade is cold.",
            "Yes, the key includes the kestrel version on purpose.",
        ),
        ("cache invalidated after upgrade", "cache key version", "cache misses upgrade"),
        ("cache key", "upgrade"),
    ),
    Topic(
        "homebrew",
        "installation.md",
        "Homebrew",
        "Install with `brew install kestrel`.",
        "Upgrade with `brew upgrade kestrel`.",
        "The core formula can lag behind; `brew install kestrel-dev/tap/kestrel` has every "
        "release the day it ships.",
        "kestrel-dev/tap",
        (
            "Is there a Homebrew tap with the latest release?",
            "brew still installs 3.0, how do I get 3.1 on my mac?",
            "macOS install via brew gives me an old version",
        ),
        (
            "The core formula lags; brew install kestrel-dev/tap/kestrel has every release "
            "the same day.",
            "Use the kestrel-dev/tap tap, it is updated by the release job.",
        ),
        ("homebrew install", "brew latest version", "macos install"),
        ("brew", "Homebrew"),
    ),
    Topic(
        "musl",
        "installation.md",
        "Linux binaries",
        "Download the binary for your platform from the releases page.",
        "Put it on your `PATH` and make it executable with `chmod +x kestrel`.",
        "On Alpine and other musl systems, download the `x86_64-unknown-linux-musl` build.",
        "linux-musl",
        (
            "The linux binary does not start on Alpine, it says not found",
            "Does kestrel run in an alpine docker image?",
            "musl support? the binary fails in our alpine container",
        ),
        (
            "Use the kestrel-x86_64-unknown-linux-musl build, the default one needs glibc.",
            "There is a linux-musl build on the releases page for exactly that.",
        ),
        ("alpine linux binary", "musl build", "docker alpine"),
        ("Alpine", "musl"),
        "troubleshooting",
    ),
    Topic(
        "task-env",
        "configuration.md",
        "Environment variables",
        "Tasks inherit the environment Kestrel was started in.",
        "Variables are not part of the cache key unless a task lists them in `inputs`.",
        "Give one task its own variables in an `env` table, like `[tasks.build.env]`.",
        "[tasks.build.env]",
        (
            "How do I set an environment variable for just one task in kestrel.toml?",
            "Can a task get its own env vars without exporting them in the shell?",
            "Per task environment in the config file, possible?",
        ),
        (
            'Add an env table under the task, [tasks.build.env] with NODE_ENV = "production".',
            "Yes, a [tasks.build.env] table, one key per variable.",
        ),
        ("task environment variables", "env per task", "kestrel.toml environment"),
        ("env", "kestrel.toml"),
    ),
    Topic(
        "depends-on",
        "configuration.md",
        "Task dependencies",
        "A task can run after other tasks.",
        "Kestrel works out the order and never runs a task twice in one invocation.",
        'List the tasks that must run first in `depends_on`, like `depends_on = ["build"]`.',
        "depends_on",
        (
            "How do I make test wait for build to finish?",
            "Is there a way to declare that one task needs another first?",
            "Ordering tasks: lint should run before test, how?",
        ),
        (
            'Put depends_on = ["build"] in the test task and kestrel runs build first.',
            "depends_on takes a list of task names, they run before it.",
        ),
        ("task dependencies", "run task before another", "task order"),
        ("depends_on",),
    ),
    Topic(
        "includes",
        "configuration.md",
        "Splitting the config",
        "All tasks are defined in `kestrel.toml` at the project root.",
        "`kestrel list` shows every task the file defines.",
        'Since 3.1, `include = ["tasks/*.toml"]` at the top of `kestrel.toml` reads more files.',
        "include = [",
        (
            "Can I split kestrel.toml into several files?",
            "Our kestrel.toml is 2000 lines, can tasks live in separate files per package?",
            "Does kestrel list show tasks from other toml files?",
        ),
        (
            'Since 3.1 you can write include = ["tasks/*.toml"] at the top of kestrel.toml.',
            'include = ["packages/*/tasks.toml"] works, and kestrel list shows them.',
        ),
        ("split config files", "include toml files", "multiple config files"),
        ("include", "kestrel.toml"),
    ),
    Topic(
        "plugin-install",
        "plugins.md",
        "Installing plugins",
        "Plugins are Python packages that Kestrel loads at start-up.",
        "`kestrel plugins list` shows the plugins that were found.",
        "Install a plugin into the same environment as Kestrel, e.g. "
        "`pipx inject kestrel kestrel-docker`.",
        "same environment",
        (
            "I pip installed a plugin but kestrel does not see it",
            "How do I get kestrel to load a plugin from our private index?",
            "kestrel plugins list is empty after installing kestrel-docker",
        ),
        (
            "It has to be in the same environment as kestrel: pipx inject kestrel kestrel-docker.",
            "Plugins must live in the same environment, pip into the pipx venv or use inject.",
        ),
        ("plugin not loaded", "install plugin", "plugins list empty"),
        ("plugin", "pipx"),
        "troubleshooting",
    ),
    Topic(
        "plugin-api",
        "plugins.md",
        "Plugin compatibility",
        "Each plugin declares the plugin API version it was built for.",
        "Kestrel refuses a plugin built for an API version it does not speak.",
        "Kestrel 3.0 speaks plugin API 3; `KESTREL_PLUGIN_API=2` loads older plugins meanwhile.",
        "kestrel_plugin_api=2",
        (
            "Plugin fails with unsupported plugin API 2 after upgrading",
            "Old plugins stopped loading on 3.0, error about the API version",
            "Why does kestrel refuse my plugin with an API mismatch?",
        ),
        (
            "3.0 speaks plugin API 3; set KESTREL_PLUGIN_API=2 to load old plugins for now.",
            "KESTREL_PLUGIN_API=2 is the escape hatch until the plugin is updated.",
        ),
        ("plugin api version", "plugin compatibility error", "unsupported plugin api"),
        ("plugin API",),
        "troubleshooting",
    ),
    Topic(
        "github-actions",
        "ci.md",
        "GitHub Actions",
        "Run Kestrel in a GitHub Actions job like any other command.",
        "Install it with the `kestrel-dev/setup-kestrel` action.",
        "Keep the cache between runs with `actions/cache`, keyed on `hashFiles('kestrel.lock')`.",
        "hashfiles('kestrel.lock')",
        (
            "How do I keep the kestrel cache between GitHub Actions runs?",
            "The cache is always cold on GitHub CI, what should I cache?",
            "Best way to persist the local cache with actions/cache?",
        ),
        (
            "Cache the kestrel cache folder with actions/cache keyed on hashFiles('kestrel.lock').",
            "actions/cache with key kestrel-${{ hashFiles('kestrel.lock') }} works well.",
        ),
        ("github actions cache", "ci cache between runs", "actions/cache"),
        ("GitHub Actions", "actions/cache"),
    ),
    Topic(
        "gitlab",
        "ci.md",
        "GitLab CI",
        "Kestrel works in GitLab CI jobs.",
        "Use the `kestrel/kestrel` Docker image or install the binary in `before_script`.",
        "GitLab caches only paths inside the project: set "
        "`KESTREL_CACHE_DIR=$CI_PROJECT_DIR/.kestrel-cache` and cache that folder.",
        "$ci_project_dir/.kestrel-cache",
        (
            "On GitLab the cache never survives between pipelines",
            "gitlab runner: how do I reuse the kestrel cache across jobs?",
            "In GitLab CI the cache dir is outside the project so it is not cached",
        ),
        (
            "GitLab only caches paths in the project, so use "
            "KESTREL_CACHE_DIR=$CI_PROJECT_DIR/.kestrel-cache and cache that.",
            "Point the cache at $CI_PROJECT_DIR/.kestrel-cache and list it under cache:paths.",
        ),
        ("gitlab ci cache", "gitlab pipelines cache", "cache between jobs"),
        ("GitLab",),
    ),
    Topic(
        "remote-auth",
        "remote-cache.md",
        "Authentication",
        "The remote cache server can require a token.",
        "Tokens are created on the server's admin page and are read-only or read-write.",
        "Pass the token in `KESTREL_REMOTE_TOKEN`; never write it into `kestrel.toml`.",
        "kestrel_remote_token",
        (
            "How do I pass the token for our remote cache server?",
            "The remote cache returns 401 unauthorized",
            "Where does the auth token for the cache go, config file or env?",
        ),
        (
            "Set KESTREL_REMOTE_TOKEN in the environment, never in kestrel.toml.",
            "KESTREL_REMOTE_TOKEN, as a CI secret.",
        ),
        ("remote cache token", "remote cache authentication", "401 remote cache"),
        ("token", "remote cache"),
    ),
    Topic(
        "explain",
        "cli.md",
        "Why a task ran",
        "Kestrel skips a task when its cache key has not changed.",
        "The run summary marks every task as cached, run or failed.",
        "`kestrel explain TASK` prints which input changed a task's cache key.",
        "kestrel explain",
        (
            "How can I find out why a task reran when nothing changed?",
            "Is there a way to see which input invalidated the cache?",
            "Debugging unexpected cache misses, any tooling?",
        ),
        (
            "Run kestrel explain build, it prints which input changed the cache key.",
            "kestrel explain shows the input that differs from the last run.",
        ),
        ("why did a task rerun", "cache miss reason", "explain cache key"),
        ("explain",),
    ),
    Topic(
        "open-files",
        "troubleshooting.md",
        "Watch mode",
        "`kestrel watch` reruns tasks when their inputs change.",
        "It watches every input file of the tasks you name.",
        "On macOS, raise the open files limit (`ulimit -n 10240`) before `kestrel watch`.",
        "ulimit -n",
        (
            "kestrel watch crashes with too many open files on my Mac",
            "Watch mode dies on big repos with EMFILE",
            "Watching a monorepo fails: OSError too many open files",
        ),
        (
            "Raise the limit with ulimit -n 10240 before kestrel watch, macOS defaults to 256.",
            "ulimit -n 10240 in your shell profile fixes it.",
        ),
        ("watch too many open files", "kestrel watch macos", "EMFILE watch"),
        ("watch", "ulimit"),
        "troubleshooting",
    ),
    Topic(
        "completion",
        "cli.md",
        "Shell completion",
        "Kestrel can complete task names in your shell.",
        "Completion also covers commands and options.",
        'Add `eval "$(kestrel completions zsh)"` to `.zshrc`; bash and fish work the same way.',
        "kestrel completions",
        (
            "How do I get tab completion for task names in zsh?",
            "Completion for the fish shell?",
            "Is there bash completion for task names?",
        ),
        (
            'Add eval "$(kestrel completions zsh)" to your .zshrc; bash and fish the same.',
            "kestrel completions fish > ~/.config/fish/completions/kestrel.fish",
        ),
        ("shell completion", "tab completion zsh", "completions bash fish"),
        ("completions",),
    ),
)

PAGES = {
    "index.md": (
        "Kestrel",
        "Kestrel runs your project's tasks and caches their outputs.",
        [("Quick start", "Write a `kestrel.toml`, then run `kestrel run build`.")],
    ),
    "installation.md": (
        "Installation",
        "Kestrel is a single binary.",
        [("Checking the install", "Run `kestrel --version` to see the installed version.")],
    ),
    "configuration.md": (
        "Configuration",
        "Kestrel reads `kestrel.toml` from the project root.",
        [("Tasks", "Each task is a `[tasks.NAME]` table with a `command` and its `inputs`.")],
    ),
    "cache.md": (
        "The local cache",
        "Kestrel stores task outputs so that unchanged tasks do not run again.",
        [("Clearing the cache", "Run `kestrel cache clean` to remove every cached output.")],
    ),
    "remote-cache.md": (
        "The remote cache",
        "A remote cache shares task outputs between machines.",
        [("Setting up a server", "Point `remote.url` in `kestrel.toml` at your cache server.")],
    ),
    "cli.md": (
        "Command line",
        "Every command takes `--help`.",
        [("kestrel run", "`kestrel run NAME` runs one task and the tasks it depends on.")],
    ),
    "plugins.md": (
        "Plugins",
        "Plugins add task types and commands.",
        [("Writing a plugin", "A plugin exposes a `kestrel_plugin` entry point.")],
    ),
    "ci.md": (
        "Continuous integration",
        "Kestrel needs nothing special on a CI machine.",
        [("Other CI systems", "Keep the cache folder between jobs if your CI can.")],
    ),
    "troubleshooting.md": (
        "Troubleshooting",
        "Common problems and their fixes.",
        [("Debug logging", "Run with `KESTREL_LOG=debug` to see what Kestrel decides.")],
    ),
}

GREETINGS = ("hi all", "good morning", "hello!", "thanks", "gm", "hey everyone", "ok")
SMALL_TALK = (
    "Anyone going to the meetup in Lisbon next month? Would be great to meet.",
    "Our pipeline went from fourteen minutes to four after switching, very happy.",
    "Off-topic but the football last night was something else.",
    "Congrats on the 3.1 release, the new progress output is lovely.",
    "Is anyone else using kestrel for a game engine build? Curious how big your cache gets.",
    "Happy Friday folks, shipping our release with kestrel today.",
    "Just gave a talk about our build setup at work, kestrel got a lot of questions.",
    "Coffee is the real build accelerator.",
    "Haha same here, our CI bill went down a lot.",
    "Nice, good to hear!",
    "Would love to see a recording if there is one.",
    "We are hiring build engineers if anyone is looking, DM me.",
)
ANNOUNCEMENTS = (
    "Release 3.2.1 is out with the fix for the lockfile race.",
    "Heads up: the docs site will be down for maintenance on Saturday morning.",
    "The community call moves to Thursdays from next month.",
    "New blog post about how we cut cold builds in half.",
)
ANSWERED_BY_DOCS = (
    ("How do I run a single task?", "kestrel run NAME, it is on the command line page."),
    ("How do I clear the cache?", "kestrel cache clean, see the cache page of the docs."),
    ("How do I check which version I have?", "kestrel --version, as the install page says."),
    (
        "Where do I point kestrel at our cache server?",
        "remote.url in kestrel.toml, it is in the remote cache docs.",
    ),
)
FOLLOW_UPS = (
    "That worked, thank you so much!",
    "Confirmed, that fixed it for me too.",
    "Would be good to have that in the docs, I could not find it.",
    "Great, and thanks for the quick answer.",
    "Oh nice, did not know that.",
    "+1, same problem here last week",
    "Can confirm on macOS as well.",
    "Same for us on the CI machines.",
)
CLARIFY = (
    "Which version are you on?",
    "Is that on Linux or macOS?",
    "Do you see anything with KESTREL_LOG=debug?",
)
NUDGES = ("anyone?", "bump, still stuck on this", "+1 I would like to know too")

# Share of threads by kind; doc-worthy ones ("answered") are about 30 %.
KINDS = {
    "answered": 0.30,
    "small talk": 0.22,
    "greeting": 0.15,
    "announcement": 0.10,
    "answered by the docs": 0.13,
    "unanswered": 0.10,
}


def write_docs(root: Path) -> None:
    """The docs tree: every page of PAGES, its filler sections, then its topics' sections."""
    for page, (title, intro, extra) in PAGES.items():
        sections = [*extra]
        sections += [(t.heading, f"{t.body}\n{t.details}") for t in TOPICS if t.page == page]
        text = f"# {title}\n\n{intro}\n"
        for heading, body in sections:
            text += f"\n## {heading}\n\n{body}\n"
        (root / page).parent.mkdir(parents=True, exist_ok=True)
        (root / page).write_text(text, encoding="utf-8")


def messages(count: int, *, seed: int = 12, start: datetime = START) -> list[dict[str, Any]]:
    """`count` messages of the community's chat as JSONL export rows, in id order."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** 0.7 for rank in range(len(TOPICS))]
    rows: list[dict[str, Any]] = []
    moment = start

    def post(text: str, author: int, reply_to: int | None = None) -> int:
        nonlocal moment
        moment += timedelta(minutes=rng.randint(1, 9), seconds=rng.randint(0, 59))
        row: dict[str, Any] = {
            "id": len(rows) + 1,
            "author": f"telegram:{1000 + author}",
            "date": moment.isoformat().replace("+00:00", "Z"),
            "text": text,
        }
        if reply_to is not None:
            row["reply_to"] = reply_to
        rows.append(row)
        return len(rows)

    def people() -> int:
        return rng.randrange(150)

    def regulars() -> int:  # the few who answer
        return 150 + rng.randrange(8)

    while len(rows) < count:
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        asker = people()
        if kind in ("answered", "unanswered"):
            topic = rng.choices(TOPICS, weights=weights)[0]
            last = post(rng.choice(topic.questions), asker)
            if kind == "unanswered":
                if rng.random() < 0.5:
                    post(rng.choice(NUDGES), people(), last)
            else:
                if rng.random() < 0.3:
                    last = post(rng.choice(CLARIFY), regulars(), last)
                    last = post("3.1 on Ubuntu, same on my laptop.", asker, last)
                last = post(rng.choice(topic.answers), regulars(), last)
                for _ in range(rng.randint(1, 4)):
                    last = post(rng.choice(FOLLOW_UPS), rng.choice([asker, people()]), last)
                if rng.random() < 0.5:
                    post("thanks", asker, last)
        elif kind == "answered by the docs":
            question, answer = rng.choice(ANSWERED_BY_DOCS)
            last = post(answer, regulars(), post(question, asker))
            if rng.random() < 0.5:
                post(rng.choice(FOLLOW_UPS[:2]), asker, last)
        elif kind == "small talk":
            last = post(rng.choice(SMALL_TALK), asker)
            for _ in range(rng.randint(1, 6)):
                last = post(rng.choice(SMALL_TALK), people(), last)
        elif kind == "announcement":
            last = post(rng.choice(ANNOUNCEMENTS), regulars())
            for _ in range(rng.randint(0, 3)):
                last = post(
                    rng.choice(("Thanks for the heads up!", "Nice!", "Finally :)")), people(), last
                )
        else:
            post(rng.choice(GREETINGS), asker)
        moment += timedelta(minutes=rng.randint(35, 150))  # silence: a new thread begins
    return rows[:count]


def write_export(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")


# --- what a good model answers ----------------------------------------------------------------

_MESSAGE = re.compile(
    r'<message index="(\d+)"[^>]*role="(\w+)"[^>]*>\n(.*?)\n</message>', re.DOTALL
)
_CONVERSATION = re.compile(r'<conversation id="(T\d+)">(.*?)</conversation>', re.DOTALL)
_DOCS_FILE = re.compile(r'<docs_file path="([^"]+)">')


def topic_of(text: str) -> Topic | None:
    """The topic whose answer `text` contains (the answers are what make a thread doc-worthy)."""
    lowered = " ".join(text.lower().split())
    for topic in TOPICS:
        if topic.marker in lowered:
            return topic
    return None


def judged(block: str) -> Iterator[tuple[int, str]]:
    """(index, text) of the messages to judge in a prompt block; context is left out."""
    for index, role, text in _MESSAGE.findall(block):
        if role == "message":
            yield int(index), text


@dataclass(frozen=True)
class ClassifyAnswer:
    reply: dict[str, Any]
    worthy: tuple[str, ...]  # the topic of each conversation judged worth documenting


def classify_reply(prompt: str) -> ClassifyAnswer:
    """One verdict per conversation: doc-worthy when someone gave a topic's missing fact."""
    verdicts = []
    worthy = []
    for thread_id, block in _CONVERSATION.findall(prompt):
        text = "\n".join(text for _, text in judged(block))
        topic = topic_of(text)
        if topic is None:
            verdicts.append(
                {
                    "thread": thread_id,
                    "category": "no-doc-value",
                    "doc_value": False,
                    "summary": "Chatter, or a question nobody answered or the docs already answer.",
                    "reason": "Nothing the docs would gain.",
                    "queries": [],
                    "keywords": [],
                    "confidence": 0.9,
                }
            )
            continue
        worthy.append(topic.key)
        # A model words its queries after the conversation, so repeats search differently.
        pick = random.Random(text).sample(range(len(topic.queries)), 2)
        verdicts.append(
            {
                "thread": thread_id,
                "category": topic.category,
                "doc_value": True,
                "summary": topic.fact.replace("`", ""),
                "reason": "A participant stated a fact the docs do not have.",
                "queries": [topic.queries[i] for i in pick],
                "keywords": list(topic.keywords),
                "confidence": 0.85,
            }
        )
    return ClassifyAnswer({"verdicts": verdicts}, tuple(worthy))


@dataclass(frozen=True)
class ProposeAnswer:
    reply: dict[str, Any]
    topics: tuple[str, ...]  # the topics of the conversations shown, one per conversation
    section: str | None  # "page#heading" edited, None for no change


UNSAID = "are not in the conversation or the docs"


def propose_reply(prompt: str) -> ProposeAnswer:
    """An edit below the first line of the section of the conversations' topic, when that
    section's page is among the files shown (a model edits only what it was given)."""
    chat = prompt.split("<chat_data>", 1)[-1].split("</chat_data>", 1)[0]
    found: list[str] = []
    indices: list[int] = []
    for block in chat.split("<conversation>")[1:]:
        shown = list(judged(block))
        indices += [index for index, _ in shown]
        topic = topic_of("\n".join(text for _, text in shown))
        found.append(topic.key if topic else "-")
    counted = sorted({key for key in found if key != "-"}, key=found.count, reverse=True)
    topic = next((t for t in TOPICS if counted and t.key == counted[0]), None)
    files = _DOCS_FILE.findall(prompt)
    path = next((p for p in files if topic and p.endswith("/" + topic.page)), None)
    if topic is None or path is None:
        reply = {"change": False, "reason": "The files shown do not cover what was asked."}
        return ProposeAnswer(reply, tuple(found), None)
    fact = topic.fact
    if UNSAID in prompt:  # the grounding check's feedback on an earlier answer
        fact = topic.said_only
        if not fact:
            reply = {"change": False, "reason": "What the edit needs was not said."}
            return ProposeAnswer(reply, tuple(found), None)
    reply = {
        "change": True,
        "reason": "",
        "title": f"{topic.heading}: {fact.replace('`', '')[:80]}",
        "summary": "Documents what several people asked and someone answered.",
        "reasoning": "The answer was confirmed by the people who asked.",
        "confidence": 0.85,
        "evidence": indices,  # every message shown: the answer is usually not in the first three
        "edits": [
            {
                "path": path,
                "search": topic.body,
                "replace": f"{topic.body}\n\n{fact}",
                "reason": "missing from the docs",
            }
        ],
    }
    return ProposeAnswer(reply, tuple(found), f"{topic.page}#{topic.heading}")
