"""Text as people typed it, before a chat client 'improved' it: straight quotes, `--` not a dash.

Chat clients curl quotes, turn the `--` of `--to-disk` into a dash and slip in no-break and
zero-width spaces; matching literally against what was said must undo that first.
"""

from __future__ import annotations

import re

__all__ = ["as_typed"]

_DASHES = re.compile(r"(?<![\w-])[\u2014\u2013\u2012\u2015](?=[A-Za-z])")
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2011": "-",
        "\u00a0": " ",
        "\u202f": " ",
        "\u200b": "",
        "\ufeff": "",
    }
)


def as_typed(text: str) -> str:
    """Text as typed before a chat client 'improved' it: straight quotes, `--` not a dash."""
    return _DASHES.sub("--", text.translate(_TRANSLATE))
