"""`pythia eval retrieval` and its figures, on the Kestrel sample docs, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cassettes.record_sample import sample_repo
from doubles import HashEmbedder
from pythia.app import commands
from pythia.app.cli import main
from pythia.app.options import Options
from pythia.app.workspace import open_workspace
from pythia.retrieval_eval import Question, QuestionsError, load_questions, score

FIXTURES = Path(__file__).parent / "fixtures"
QUESTIONS = FIXTURES / "retrieval/kestrel-questions.jsonl"


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("PYTHIA_LOCAL", "1")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return sample_repo(tmp_path)


def pythia(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_scores_count_the_rank_of_the_first_answer() -> None:
    questions = [
        Question("a", ("x.md",)),
        Question("b", ("y.md", "z.md")),
        Question("c", ("w.md",)),
    ]
    ranked = {"a": ["x.md", "y.md"], "b": ["x.md", "q.md", "z.md"], "c": ["x.md"]}

    result = score("keyword", questions, ranked.__getitem__, k=2)

    assert result.ranks == (1, None, None)
    assert result.recall_at_1 == pytest.approx(1 / 3)
    assert result.recall_at_k == pytest.approx(1 / 3)
    assert result.mrr == pytest.approx(1 / 3)
    assert [miss.got for miss in result.misses] == [("x.md", "q.md"), ("x.md",)]
    assert score("keyword", questions, ranked.__getitem__, k=3).mrr == pytest.approx(
        (1 + 1 / 3) / 3
    )


def test_eval_of_the_stored_index_without_a_key_is_bm25_only(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pythia(capsys, "index", "--repo", repo)

    code, stdout, stderr = pythia(
        capsys, "eval", "retrieval", "--queries", QUESTIONS, "--repo", repo, "--json"
    )

    assert code == 0
    figures = json.loads(stdout)
    assert (figures["questions"], figures["k"], list(figures["modes"])) == (6, 5, ["keyword"])
    keyword = figures["modes"]["keyword"]
    assert keyword["recall@5"] == 1.0 and keyword["misses"] == []
    assert 0 < keyword["recall@1"] <= keyword["mrr"] <= 1
    assert stderr.splitlines() == ["no GEMINI_API_KEY: evaluating BM25 only"]


def test_eval_with_vectors_puts_the_three_modes_side_by_side_and_lists_misses(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = tmp_path / "questions.jsonl"
    queries.write_text(
        QUESTIONS.read_text(encoding="utf-8")
        + json.dumps({"question": "kestrel graph output", "answers": ["missing.md"]})
        + "\n",
        encoding="utf-8",
    )
    options = Options(
        command="eval-retrieval", repo=repo, queries=queries, docs=repo / "docs", k=3
    )

    code = commands.eval_retrieval(open_workspace(options), options, HashEmbedder())

    stdout = capsys.readouterr().out
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0] == "7 questions, the top 3 pages of each mode"
    assert [line.split()[0] for line in lines[3:6]] == ["keyword", "vector", "hybrid"]
    assert "hybrid misses (1):" in lines
    miss = lines.index("hybrid misses (1):")
    assert lines[miss + 1 : miss + 3] == ["  kestrel graph output", "    want missing.md"]
    assert lines[miss + 3].startswith("    got  cli.md")


def test_eval_before_any_index_says_what_to_run(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, stderr = pythia(
        capsys, "eval", "retrieval", "--queries", QUESTIONS, "--repo", repo
    )

    assert (code, stdout) == (1, "")
    assert stderr.splitlines()[-1] == (
        "error: there is no index yet; run `pythia index` first or pass --docs"
    )


@pytest.mark.parametrize(
    "line",
    ['{"question": "q"}', '{"question": "", "answers": ["a.md"]}', "not json", '["q", "a"]'],
)
def test_a_malformed_line_is_named_by_its_number(tmp_path: Path, line: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "fine", "answers": ["a.md"]}\n\n' + line + "\n")

    with pytest.raises(QuestionsError, match=r"q\.jsonl:3: expected"):
        load_questions(path)


def test_a_missing_questions_file_is_one_line_for_the_user(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, stderr = pythia(
        capsys, "eval", "retrieval", "--queries", tmp_path / "nope.jsonl", "--repo", repo,
        "--docs", repo / "docs",
    )

    assert code == 1
    assert stderr.splitlines() == [
        f"error: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory"
    ]
