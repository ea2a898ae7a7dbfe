"""The redaction corpus: no secret or piece of personal data may survive `redact()`, and text
that only looks like one (versions, hashes, dates, code) must come through unchanged. Also
`replace_handles()`, for the chat handles `redact()` leaves to it.

`python tests/safety/test_redact_corpus.py` prints the figures per format.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from stdnum import iban, luhn

from pythia.redact import Origin, redact, replace_handles

CORPUS = Path(__file__).parents[1] / "fixtures" / "redaction" / "corpus.yaml"
# Splits token prefixes in the file so secret scanners do not take it for a leak.
_SPLIT = "{~}"
_MARKED = re.compile(r"\[\[(.+?)\]\]", re.S)
# A leak is any run of this many characters of a marked value left in the output.
_SURVIVING = 5
MAX_FALSE_REDACTIONS = 2


@dataclass(frozen=True)
class Case:
    kind: str
    text: str
    origin: Origin
    values: tuple[str, ...]  # the marked values; empty for a look-alike
    context: str  # the text around them

    def redacted(self) -> str:
        return redact(self.text, origin=self.origin)

    def surviving(self) -> list[str]:
        """The pieces of marked values still in the redacted text (and not in the context)."""
        output = self.redacted()
        return [
            piece
            for value in self.values
            for piece in (value[i : i + _SURVIVING] for i in range(len(value) - _SURVIVING + 1))
            if piece in output and piece not in self.context
        ]


def _load() -> tuple[list[Case], list[Case]]:
    data = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))

    def case(row: dict[str, str]) -> Case:
        raw = row["text"].replace(_SPLIT, "")
        return Case(
            kind=row["kind"],
            text=_MARKED.sub(r"\1", raw),
            origin="docs" if row.get("origin") == "docs" else "chat",
            values=tuple(_MARKED.findall(raw)),
            context=_MARKED.sub("\0", raw),
        )

    return [case(row) for row in data["leaks"]], [case(row) for row in data["lookalikes"]]


LEAKS, LOOKALIKES = _load()


def test_the_corpus_is_large_and_its_values_have_valid_checksums() -> None:
    assert len(LEAKS) >= 120 and len(LOOKALIKES) >= 50
    assert all(case.values for case in LEAKS)
    assert not any(case.values for case in LOOKALIKES)
    assert len({case.kind for case in LEAKS + LOOKALIKES}) == len(LEAKS + LOOKALIKES)
    for case in LEAKS:
        value = case.values[0]
        if case.kind.startswith("card-"):
            assert luhn.is_valid(re.sub(r"\D", "", value)), case.kind
        if case.kind.startswith("iban-"):
            assert iban.is_valid(value), case.kind


@pytest.mark.parametrize("case", LEAKS, ids=[case.kind for case in LEAKS])
def test_no_part_of_a_secret_survives(case: Case) -> None:
    assert case.surviving() == [], case.redacted()


def test_lookalikes_survive() -> None:
    changed = [case for case in LOOKALIKES if case.redacted() != case.text]
    assert len(changed) <= MAX_FALSE_REDACTIONS, "\n".join(
        f"{case.kind}: {case.text!r} -> {case.redacted()!r}" for case in changed
    )


def test_digit_dense_text_is_left_alone() -> None:
    # Its time (it was once quadratic): tests/benchmarks/bench_pathological.py.
    assert redact("1 " * 2000) == "1 " * 2000


# ---------------------------------------------------------------- chat handles

MEMBERS = {"Ivan_Petrov_92": "user-1a2b3c4d", "mira_okafor": "user-5e6f7a8b"}


def test_handles_become_placeholders_without_a_member_list() -> None:
    text = "ask @ivan_petrov_92, t.me/mira_okafor or https://t.me/ivan_petrov_92."
    assert replace_handles(text) == "ask [handle], [handle] or [handle]."


def test_members_read_as_their_own_author_pseudonyms() -> None:
    text = "@ivan_petrov_92 said it, @IVAN_PETROV_92 again, then t.me/mira_okafor; @lena_k99 too"
    assert replace_handles(text, members=MEMBERS) == (
        "user-1a2b3c4d said it, user-1a2b3c4d again, then user-5e6f7a8b; [handle] too"
    )


@pytest.mark.parametrize(
    "text",
    [
        "mail ivan_petrov_92@kestrel-users.org",
        'npm i @types/node and "@kestrel/cli": "^2.3.0"',
        "@pytest.fixture and @app.route('/') and @dataclass(frozen=True)",
        "see https://medium.com/@kestrel_blog/caching-4f2a",
        "thanks @bob",  # shorter than any Telegram username
        "art.me/ivan_petrov_92",
    ],
)
def test_things_that_are_not_handles_stay(text: str) -> None:
    assert replace_handles(text) == text


def figures() -> str:
    """Leaks and false redactions, overall and per format family."""
    leaked = [case for case in LEAKS if case.surviving()]
    changed = [case for case in LOOKALIKES if case.redacted() != case.text]
    families = Counter(case.kind.split("-")[0] for case in LEAKS)
    leaked_families = Counter(case.kind.split("-")[0] for case in leaked)
    lines = [
        f"leaks: {len(leaked)} of {len(LEAKS)} cases",
        f"false redactions: {len(changed)} of {len(LOOKALIKES)} look-alikes",
        *(
            f"  {family}: {leaked_families[family]} leaked of {count}"
            for family, count in sorted(families.items())
        ),
        *(f"  leaked {case.kind}: {case.redacted()!r}" for case in leaked),
        *(f"  changed {case.kind}: {case.redacted()!r}" for case in changed),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(figures())
