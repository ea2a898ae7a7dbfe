"""The chat sources a run reads: each configured stream's adapter, built from config and
secrets (network clients are created lazily, adapters imported only when a stream needs them).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

from ..config import (
    DiscordStream,
    DiscourseStream,
    ExportStream,
    GitHubDiscussionsStream,
    Secrets,
    SlackStream,
    Stream,
    TelegramStream,
    ZulipStream,
)
from ..ports import ChatSource
from ..sources import SourceError, UnreadableSource
from .options import Options
from .workspace import UserError, Workspace


def build_source(
    stream: Stream, *, secrets: Secrets, salt: str, repository: str = "", api_url: str = ""
) -> ChatSource:
    """The real source for one configured stream (network clients are created lazily);
    `repository` and `api_url` are the run's (GITHUB_REPOSITORY, GITHUB_API_URL)."""
    if not salt:
        raise SourceError(
            "the pseudonym salt is empty; set privacy.salt or run inside a repository"
        )
    if isinstance(stream, TelegramStream):
        from ..sources.telegram import TelegramSource, connect_client

        return TelegramSource(stream, client=connect_client(stream, secrets=secrets), salt=salt)
    if isinstance(stream, ZulipStream):
        from ..sources.zulip import ZulipSource, make_client

        zulip_stream = stream
        return ZulipSource(
            zulip_stream,
            client_factory=lambda: make_client(zulip_stream, secrets=secrets),
            salt=salt,
        )
    if isinstance(stream, ExportStream):
        from ..sources.export import ExportSource

        return ExportSource(stream, salt=salt)
    if isinstance(stream, DiscordStream):
        from ..sources.discord import DiscordSource, make_http

        discord_stream = stream
        return DiscordSource(
            discord_stream,
            http_factory=lambda: make_http(discord_stream, secrets=secrets),
            salt=salt,
        )
    if isinstance(stream, SlackStream):
        from ..sources.slack import SlackSource, make_web

        slack_stream = stream
        return SlackSource(
            slack_stream, web_factory=lambda: make_web(slack_stream, secrets=secrets), salt=salt
        )
    if isinstance(stream, GitHubDiscussionsStream):
        from ..sources.github_discussions import GitHubDiscussionsSource

        token = secrets.github_token
        return GitHubDiscussionsSource(
            stream,
            token=token.get_secret_value() if token is not None else None,
            salt=salt,
            repository=repository,
            api_url=api_url,
        )
    if isinstance(stream, DiscourseStream):
        from ..sources.discourse import DiscourseSource

        key, username = secrets.discourse_api_key, secrets.discourse_api_username
        return DiscourseSource(
            stream,
            salt=salt,
            api_key=key.get_secret_value() if key is not None else None,
            api_username=username.get_secret_value() if username is not None else None,
        )
    raise SourceError(f"stream kind of '{stream.id}' is not supported")


def chosen_streams(workspace: Workspace, options: Options) -> list[Stream]:
    """The configured streams (or only `--stream`), started at `--since` when given, with
    export paths resolved against the repository."""
    config = workspace.config
    chosen = [config.stream(options.stream)] if options.stream else list(config.streams)
    if options.since:
        start = _since(options.since, options)
        chosen = [stream.model_copy(update={"start": start}) for stream in chosen]
    return [_resolved(workspace, stream) for stream in chosen]


def _since(value: str, options: Options) -> int | date:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UserError(
            f"{options.setting('since')} '{value}' is neither a message id nor a YYYY-MM-DD date"
        ) from None


def _resolved(workspace: Workspace, stream: Stream) -> Stream:
    if isinstance(stream, ExportStream) and not Path(stream.path).is_absolute():
        return stream.model_copy(update={"path": str((workspace.root / stream.path).resolve())})
    return stream


def build_sources(workspace: Workspace, streams: Sequence[Stream]) -> list[ChatSource]:
    """The configured streams' sources; one that cannot even be set up (a missing secret, a
    malformed session) becomes a stream that fails alone when read, not the whole run."""
    sources: list[ChatSource] = []
    for stream in streams:
        try:
            sources.append(
                build_source(
                    stream,
                    secrets=workspace.secrets,
                    salt=workspace.salt,
                    repository=workspace.repository,
                    api_url=workspace.api_url,
                )
            )
        except SourceError as error:
            sources.append(UnreadableSource(stream.id, str(error)))
    return sources
