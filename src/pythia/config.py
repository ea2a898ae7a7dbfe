"""The repository config (`.github/pythia.yml`) and the secrets, as validated pydantic models."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path, PureWindowsPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from . import CONFIG_REFERENCE
from .configyaml import ConfigLoader, YAMLProblem
from .streamconfig import (
    STREAM_KINDS,
    DiscordStream,
    DiscourseStream,
    ExportStream,
    GitHubDiscussionsStream,
    SlackStream,
    Stream,
    StreamBase,
    Strict,
    TelegramStream,
    ZulipStream,
)

__all__ = [
    "STREAM_KINDS",
    "Config",
    "ConfigError",
    "DiscordStream",
    "DiscourseStream",
    "Docs",
    "ExportStream",
    "GitHubDiscussionsStream",
    "Limits",
    "Models",
    "Prefilter",
    "Price",
    "Privacy",
    "Project",
    "Publish",
    "Secrets",
    "SlackStream",
    "Stream",
    "StreamBase",
    "TelegramStream",
    "Threads",
    "ZulipStream",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH = Path(".github/pythia.yml")


class ConfigError(Exception):
    """The config could not be read or is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Project(Strict):
    name: str = Field("", description="Project name used in prompts and PRs, e.g. 'uv'.")
    description: str = Field("", description="One or two sentences on what the project is.")
    style: str = Field("", description="Notes on the docs' voice, e.g. 'second person, short'.")


class Docs(Strict):
    root: str = Field(".", description="Folder the globs are relative to, e.g. 'docs'.")
    include: list[str] = Field(
        default_factory=lambda: ["**/*.md", "**/*.mdx"],
        description="Glob patterns of the docs files to index and edit.",
    )
    exclude: list[str] = Field(
        default_factory=lambda: ["**/node_modules/**", "**/CHANGELOG.md"],
        description="Glob patterns never indexed or edited.",
    )
    new_file_dirs: list[str] = Field(
        default_factory=list,
        description="Folders (relative to root) where a proposal may create a new page.",
    )
    allowed_link_domains: list[str] = Field(
        default_factory=list,
        description="Domains new links may point to, besides those the docs already use.",
    )
    generated: list[str] = Field(
        default_factory=list,
        description="Pages the docs build generates (not in the repository) that links may name.",
    )
    check_command: str = Field(
        "",
        description="A build that must pass on the edited docs, e.g. 'mkdocs build --strict'.",
    )
    check_timeout_seconds: int = Field(
        300, ge=10, le=3600, description="Time limit of check_command."
    )
    check_env: list[str] = Field(
        default_factory=list,
        description="Environment variables check_command may see besides PATH, HOME and locale.",
    )

    @field_validator("root")
    @classmethod
    def _inside_repository(cls, root: str) -> str:
        fix = "use a folder relative to the repository root, like 'docs'"
        if root.startswith(("/", "\\")) or PureWindowsPath(root).drive:
            raise ValueError(f"'{root}' is an absolute path; {fix}")
        depth = 0
        for part in root.replace("\\", "/").split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    raise ValueError(f"'{root}' is outside the repository; {fix}")
            elif part not in ("", "."):
                depth += 1
        return root


class Threads(Strict):
    gap_minutes: int = Field(30, ge=1, description="Silence that starts a new thread.")
    settle_minutes: int = Field(60, ge=0, description="A thread is judged once this quiet.")
    context_messages: int = Field(3, ge=0, description="Earlier messages shown as context.")
    max_failures: int = Field(3, ge=1, description="Failures before a thread is given up.")
    max_messages: int = Field(
        50, ge=2, description="Messages of one thread a model sees; the first and latest are kept."
    )
    max_message_chars: int = Field(
        2000, ge=100, description="Longer messages are cut to this many characters for a model."
    )


class Price(Strict):
    input: float = Field(0.0, ge=0, description="USD per million input tokens.")
    output: float = Field(0.0, ge=0, description="USD per million output (and thinking) tokens.")


def _default_prices() -> dict[str, Price]:
    return {
        "gemini-3.5-flash-lite": Price(input=0.30, output=2.50),
        "gemini-3.8-flash": Price(input=1.50, output=7.50),
        "gemini-3.5-flash": Price(input=1.50, output=9.00),
        "gemini-embedding-001": Price(input=0.15, output=0.0),
    }


class Models(Strict):
    provider: Literal["gemini", "openai"] = Field(
        "gemini",
        description="'gemini', or 'openai' for any OpenAI-compatible API (Ollama, vLLM, ...).",
    )
    base_url: str = Field(
        "",
        description="provider 'openai' only: the API root, e.g. 'http://localhost:11434/v1' "
        "(Ollama); empty is api.openai.com.",
    )
    structured_output: Literal["json_schema", "json_object"] = Field(
        "json_schema",
        description="provider 'openai' only: 'json_object' (JSON mode) for servers without "
        "JSON Schema output; tried automatically when a server refuses the schema.",
    )
    timeout_seconds: float = Field(
        120, gt=0, description="Seconds one model request may take (local models are slow)."
    )
    classify: str = Field("gemini-3.5-flash-lite", description="Model that classifies threads.")
    propose: str = Field("gemini-3.8-flash", description="Model that writes proposals.")
    embedding: str = Field("gemini-embedding-001", description="Embedding model of the index.")
    embedding_dimensions: int = Field(768, ge=8, le=3072, description="Vector size.")
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature.")
    max_output_tokens: int = Field(8192, ge=256, description="Cap on one answer's tokens.")
    thinking_budget: int | None = Field(
        None, ge=0, description="Thinking tokens per call; unset leaves the model's default."
    )
    requests_per_minute: int = Field(60, ge=1, description="Generation requests per minute.")
    tokens_per_minute: int = Field(1_000_000, ge=1000, description="Generation tokens per minute.")
    embedding_requests_per_minute: int = Field(
        100, ge=1, description="Embedding requests per minute (a quota of its own)."
    )
    embedding_tokens_per_minute: int = Field(
        1_000_000, ge=1000, description="Embedding tokens per minute."
    )
    prices: dict[str, Price] = Field(
        default_factory=_default_prices, description="Price table for the cost estimate."
    )


class Limits(Strict):
    max_llm_calls: int = Field(200, ge=1, description="Calls per run before new work stops.")
    max_tokens: int = Field(3_000_000, ge=1000, description="Tokens per run before work stops.")
    classify_share: float = Field(
        0.75, gt=0, le=1, description="Share of both caps classification may use; the rest is "
        "kept for proposals, so a run over a long backlog proposes for what it classified.",
    )  # fmt: skip
    classify_batch_messages: int = Field(100, ge=1, description="Messages per classify call.")
    classify_batch_tokens: int = Field(30_000, ge=1000, description="Tokens per classify call.")
    propose_context_tokens: int = Field(
        12_000, ge=1000, description="Docs text given to one proposal call."
    )
    search_k: int = Field(8, ge=1, description="Chunks retrieved per thread.")
    propose_conversations: int = Field(
        5, ge=1, description="Conversations shown in one proposal call (all count as demand)."
    )
    max_edit_retries: int = Field(2, ge=0, le=5, description="Reflections on failed edits.")
    max_changed_lines: int = Field(80, ge=1, description="Bigger proposals are refused.")
    max_changed_chars: int = Field(
        20_000, ge=100, description="Proposals changing more characters are refused."
    )
    backfill_threads: int = Field(
        200,
        ge=1,
        description="More threads waiting than this make a backfill: their classification, "
        "then their proposals, go to the Gemini Batch API (half price, answered by a later "
        "run); `pythia run --backfill` does it at any size.",
    )
    time_budget_minutes: float = Field(
        25, gt=0, description="Stop starting new work after this long (keep under the job timeout)."
    )


def _compiles(pattern: str) -> str:
    """A pattern the prefilter can use; checked here so `validate` catches what `run` would."""
    try:
        re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise ValueError(
            f"'{pattern}' is not a valid regular expression ({error}); fix the pattern or remove it"
        ) from None
    return pattern


Regex = Annotated[str, AfterValidator(_compiles)]


class Prefilter(Strict):
    min_chars: int = Field(25, ge=0, description="Threads with less text are dropped.")
    ignore_bots: bool = Field(True, description="Drop messages sent by bots.")
    ignore_patterns: list[Regex] = Field(
        default_factory=lambda: [
            r"^[\W_]*(hi|hello|hey|yo|thanks|thank you|thx|ty|ok|okay|\+1|lol|gm|good morning"
            r"|bye)(\s+(all|everyone|everybody|folks|guys|team|there|y'?all))?[\W_]*$"
        ],
        description="Regexes (case-insensitive); messages matching one are ignored.",
    )


# The data branch is force-pushed; pointing it at a branch people work on would erase their work.
COMMON_DEFAULT_BRANCHES = frozenset({"main", "master"})


class Publish(Strict):
    draft: bool = Field(True, description="Open PRs as drafts.")
    labels: list[str] = Field(default_factory=lambda: ["pythia"], description="Labels on PRs.")
    base_branch: str = Field("", description="Branch PRs target; empty means the default.")
    branch_prefix: str = Field("pythia/", description="Prefix of proposal branches.")
    data_branch: str = Field("pythia-data", description="Orphan branch holding index and state.")
    max_open_prs: int = Field(5, ge=0, description="Open Pythia PRs at most.")
    max_prs_per_run: int = Field(2, ge=0, description="New PRs per run at most.")
    evidence_quotes: bool = Field(True, description="Quote (redacted) messages in PR bodies.")
    dashboard: bool = Field(True, description="Keep a 'Pythia dashboard' issue up to date.")
    min_confidence: float = Field(0.5, ge=0, le=1, description="Less confident proposals wait.")
    min_conversations: int = Field(
        1, ge=1, description="Propose a docs gap only once this many conversations asked about it."
    )
    min_people: int = Field(
        1, ge=1, description="Propose a docs gap only once this many people asked about it."
    )
    require_answer: bool = Field(
        False,
        description="Propose only from conversations with an accepted answer or a reply from "
        "a stream's trusted_authors.",
    )

    @field_validator("data_branch")
    @classmethod
    def _branch_of_its_own(cls, branch: str, info: ValidationInfo) -> str:
        if branch and branch == info.data.get("base_branch"):
            why = f"'{branch}' is also publish.base_branch"
        elif branch in COMMON_DEFAULT_BRANCHES:
            why = f"'{branch}' is a usual default branch name"
        else:
            return branch
        raise ValueError(
            f"{why}, and the bot force-pushes the data branch; "
            "give it a name of its own, like 'pythia-data'"
        )


class Privacy(Strict):
    salt: str = Field("", description="Salt of author pseudonyms; empty uses the repository id.")


DEFAULT_CATEGORIES = ["troubleshooting", "question", "information", "update", "no-doc-value"]


class Config(Strict):
    """The whole of `.github/pythia.yml`."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"title": "Pythia configuration"}
    )

    project: Project = Field(default_factory=Project)
    docs: Docs = Field(default_factory=Docs)
    streams: list[Stream] = Field(default_factory=list)
    threads: Threads = Field(default_factory=Threads)
    models: Models = Field(default_factory=Models)
    limits: Limits = Field(default_factory=Limits)
    prefilter: Prefilter = Field(default_factory=Prefilter)
    publish: Publish = Field(default_factory=Publish)
    privacy: Privacy = Field(default_factory=Privacy)
    categories: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CATEGORIES),
        description="Classification categories; 'no-doc-value' is always added.",
    )

    @field_validator("streams")
    @classmethod
    def _unique_ids(cls, streams: list[Stream]) -> list[Stream]:
        seen: set[str] = set()
        for stream in streams:
            if stream.id in seen:
                raise ValueError(f"stream id '{stream.id}' is used twice; ids must be unique")
            seen.add(stream.id)
        return streams

    @field_validator("categories")
    @classmethod
    def _with_no_value(cls, categories: list[str]) -> list[str]:
        return categories if "no-doc-value" in categories else [*categories, "no-doc-value"]

    def stream(self, stream_id: str) -> Stream:
        for stream in self.streams:
            if stream.id == stream_id:
                return stream
        known = ", ".join(s.id for s in self.streams) or "none"
        raise ConfigError([f"stream '{stream_id}' is not in the config (known: {known})"])

    def digest(self) -> str:
        """A short hash of the settings that shape the index."""
        relevant = {"docs": self.docs.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


class Secrets(BaseModel):
    """Secrets, read only from the environment and never printed."""

    model_config = ConfigDict(frozen=True)

    gemini_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    github_token: SecretStr | None = None
    telegram_api_id: int | None = None
    telegram_api_hash: SecretStr | None = None
    telegram_session: SecretStr | None = None
    telegram_bot_token: SecretStr | None = None
    zulip_api_key: SecretStr | None = None
    discord_bot_token: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    discourse_api_key: SecretStr | None = None
    discourse_api_username: SecretStr | None = None
    pythia_cache_secret: SecretStr | None = None  # seals the response cache (responsecache.py)

    def cache_secret(self, provider: str) -> str | None:
        """What seals the response cache: PYTHIA_CACHE_SECRET, else the provider's API key."""
        key = self.openai_api_key if provider == "openai" else self.gemini_api_key
        chosen = self.pythia_cache_secret or key
        return chosen.get_secret_value() if chosen else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Secrets:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(name.upper(), "").strip()
            if name == "gemini_api_key" and not raw:
                raw = env.get("GOOGLE_API_KEY", "").strip()
            if raw:
                values[name] = raw
        try:
            return cls(**values)
        except ValidationError as error:
            raise ConfigError(_problems(error, prefix="env")) from None

    def values(self) -> list[str]:
        """Every secret value that is set, for masking."""
        found: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
        return found


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in STREAM_KINDS and path.endswith("]"):
            continue  # the discriminator's own branch name adds nothing for the reader
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"is not a known key; check its spelling against {CONFIG_REFERENCE}"
    if kind == "missing":
        return "is required"
    if kind == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"'{ctx.get('tag')}' is not one of {expected}"
    if kind == "union_tag_not_found":
        return f"needs a 'kind' ({', '.join(STREAM_KINDS[:-1])} or {STREAM_KINDS[-1]})"
    message = str(error["msg"])
    return message[len("Value error, ") :] if message.startswith("Value error, ") else message


def _problems(error: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for item in error.errors():
        loc = _location(tuple(item["loc"]))
        if item["type"] == "union_tag_invalid" and loc.endswith("]"):
            loc += ".kind"
        problems.append(f"{prefix + '.' if prefix else ''}{loc}: {_describe(item)}")
    return problems


def parse_config(data: Any) -> Config:
    """Validate already-parsed YAML; raises ConfigError with one line per problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["(top level): the config must be a mapping of keys to values"])
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_problems(error)) from None


def load_config(path: Path) -> Config:
    """Read and validate a config file; a missing file gives the defaults."""
    if not path.exists():
        return Config()
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=ConfigLoader)
    except YAMLProblem as error:
        raise ConfigError([f"{path}: line {error.line}: {error.message}"]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            [f"{path}: not valid YAML{where}; check indentation and quoting"]
        ) from None
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise ConfigError(
            [
                f"{path}: is not UTF-8 text (byte {byte:#04x} at position {error.start}); "
                "save the file as UTF-8"
            ]
        ) from None
    except OSError as error:
        raise ConfigError([f"{path}: cannot be read ({error.strerror})"]) from None
    return parse_config(data)
