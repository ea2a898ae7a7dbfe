"""Chat members' handles in published text: a known member's becomes their pseudonym."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .detectors import PLACEHOLDERS
from .models import Message

# Telegram usernames: 5-32 letters, digits and underscores, starting with a letter. Not handles:
# x@y (e-mail), @scope/package (npm), @pytest.fixture and @app.route( (dotted names, calls).
_HANDLE = re.compile(
    r"(?<![\w.-])(?:https?://)?(?:www\.)?(?:t|telegram)\.me/(?P<linked>[A-Za-z]\w{4,31})(?![\w-])"
    r"|(?<![\w@./+-])@(?P<named>[A-Za-z]\w{4,31})(?![\w-]|[/(]|\.\w)",
    re.ASCII,
)


def replace_handles(text: str, *, members: Mapping[str, str] | None = None) -> str:
    """`text` with the Telegram handles in it (`@ivan_petrov_92`, `t.me/ivan_petrov_92`,
    `https://t.me/ivan_petrov_92`) replaced, the whole link included.

    `members` maps the handles of chat members the run saw (without '@'; any case, as Telegram
    ignores it) to their author pseudonym (`user-1a2b3c4d`, see `sources.pseudonym`), so a
    member mentioned by handle reads as the same pseudonym as their own messages. Every other
    handle becomes `[handle]`.

    Code is the caller's to skip: inside a code span `@name` is a decorator or a package, so
    apply this to prose only (the live segments of `safety._live_segments`, say). E-mail
    addresses, npm scopes, dotted names and calls, and `@` inside other URLs are never handles.
    """
    known = {handle.lstrip("@").lower(): name for handle, name in (members or {}).items()}

    def replacement(match: re.Match[str]) -> str:
        name = known.get((match.group("linked") or match.group("named")).lower())
        return name if name is not None else PLACEHOLDERS["handle"]

    return _HANDLE.sub(replacement, text)


def member_handles(messages: Iterable[Message]) -> dict[str, str]:
    """Handle -> author pseudonym for the authors whose handle the platform gave."""
    return {message.handle: message.author for message in messages if message.handle}
