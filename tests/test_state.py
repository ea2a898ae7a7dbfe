"""State documents, their merges and store, and the data branch against real git repositories."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gitrepo import git
from pythia.databranch import INDEX_SUBJECT, DataBranch, DataBranchError
from pythia.gitenv import BOT_EMAIL, auth_env
from pythia.state import (
    Failure,
    Ledger,
    LedgerEntry,
    StateStore,
    StreamState,
    merge_ledgers,
    merge_stream_states,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's global git config (signing, hooks, default branch) must not leak in.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def docs_repo(tmp_path: Path) -> Path:
    """A clone of a docs repo whose origin is a local bare repository."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    (work / "docs").mkdir()
    (work / "docs" / "cache.md").write_text("# Cache\n\nKestrel caches in ~/.kestrel/cache.\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "docs")
    git(work, "push", "-q", "origin", "HEAD:main")
    return work


def remote_file(docs_repo: Path, path: str) -> str:
    return git(docs_repo.parent / "origin.git", "show", f"pythia-data:{path}")


def entry(fingerprint: str, status: str, minutes: int = 0, **extra: object) -> LedgerEntry:
    when = T0 + timedelta(minutes=minutes)
    return LedgerEntry.model_validate(
        {"fingerprint": fingerprint, "status": status, "created_at": when, "updated_at": when}
        | extra
    )


# --- documents and merges --------------------------------------------------------------------


def test_stream_state_keeps_done_ids_sorted_and_above_the_watermark() -> None:
    state = StreamState(stream="tg", watermark=10)
    state.mark_done([15, 12, 9, 12])
    assert state.done_ids == [12, 15]
    state.advance(12)
    assert (state.watermark, state.done_ids) == (12, [15])
    state.advance(5)
    assert state.watermark == 12


def test_record_failure_counts_and_truncates_the_error() -> None:
    state = StreamState(stream="tg")
    state.record_failure("tg:7", "boom")
    assert state.record_failure("tg:7", "x" * 1000) == 2
    assert len(state.failures["tg:7"].last_error) == 300


def test_merge_stream_states_loses_no_progress() -> None:
    ours = StreamState(
        stream="tg",
        watermark=100,
        done_ids=[105, 110],
        failures={"tg:50": Failure(count=1, last_error="timeout")},
        last_read_at=T0,
        messages_read_total=40,
    )
    theirs = StreamState(
        stream="tg",
        watermark=104,
        done_ids=[108],
        failures={"tg:50": Failure(count=2, last_error="429"), "tg:60": Failure(count=1)},
        last_read_at=T0 + timedelta(hours=1),
        messages_read_total=35,
    )
    merged = merge_stream_states(ours, theirs)
    assert merged.watermark == 104
    assert merged.done_ids == [105, 108, 110]
    assert merged.failures["tg:50"] == Failure(count=2, last_error="429")
    assert set(merged.failures) == {"tg:50", "tg:60"}
    assert merged.last_read_at == T0 + timedelta(hours=1)
    assert merged.messages_read_total == 40


def test_merge_ledgers_by_status_precedence_then_time() -> None:
    ours = Ledger()
    theirs = Ledger()
    ours.put(entry("a", "open", 5, pr_number=3))
    theirs.put(entry("a", "rejected", 1))
    ours.put(entry("b", "waiting", 9))
    theirs.put(entry("b", "open", 2, pr_number=4, branch="pythia/b-bbbbbbbb"))
    ours.put(entry("c", "merged", 1))
    theirs.put(entry("c", "rejected", 3))
    theirs.put(entry("d", "failed", 0))
    merged = merge_ledgers(ours, theirs)
    assert merged.proposals["a"].status == "rejected"
    assert merged.proposals["a"].pr_number == 3  # filled in from the losing side
    assert merged.proposals["b"].status == "open"
    assert merged.proposals["c"].status == "rejected"
    assert sorted(merged.proposals) == ["a", "b", "c", "d"]


# --- the store -------------------------------------------------------------------------------


def test_store_round_trips_and_never_stores_unknown_fields(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    state = StreamState(stream="zulip-help", watermark=7, done_ids=[9])
    store.save_stream(state)
    ledger = Ledger()
    ledger.put(entry("f1", "open", pr_number=12, title="Document HTTPS_PROXY"))
    store.save_ledger(ledger)
    assert store.load_stream("zulip-help") == state
    assert store.load_ledger() == ledger
    assert [s.stream for s in store.streams()] == ["zulip-help"]
    assert store.warnings == []


def test_store_rebuilds_a_corrupt_file_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "tg.json").write_text("{not json")
    store = StateStore(tmp_path)
    assert store.load_stream("tg") == StreamState(stream="tg")
    assert len(store.warnings) == 1
    assert "tg.json was not valid JSON" in store.warnings[0]
    assert "tg.json" in caplog.text


def test_store_salvages_the_valid_parts_of_an_old_file(tmp_path: Path) -> None:
    (tmp_path / "tg.json").write_text(
        json.dumps({"watermark": 42, "done_ids": "oops", "failures": {}, "legacy": 1})
    )
    ledger = {"proposals": {"ok": entry("ok", "open").model_dump(mode="json"), "bad": {"x": 1}}}
    (tmp_path / "ledger.json").write_text(json.dumps(ledger))
    store = StateStore(tmp_path)
    state = store.load_stream("tg")
    assert (state.watermark, state.done_ids) == (42, [])
    assert list(store.load_ledger().proposals) == ["ok"]
    assert len(store.warnings) == 2


# --- the data branch -------------------------------------------------------------------------


def test_auth_env_keeps_the_token_out_of_urls_and_argv() -> None:
    env = auth_env("https://github.com/kestrel/docs.git", "ghs_secret")
    assert env["GIT_CONFIG_KEY_1"] == "http.https://github.com/.extraheader"
    assert env["GIT_CONFIG_VALUE_0"] == ""
    encoded = base64.b64encode(b"x-access-token:ghs_secret").decode()
    assert env["GIT_CONFIG_VALUE_1"] == f"AUTHORIZATION: basic {encoded}"
    assert auth_env("/tmp/origin.git", "ghs_secret") == {}
    assert auth_env("https://github.com/kestrel/docs.git", None) == {}


def test_first_run_creates_an_orphan_branch_and_leaves_the_checkout_alone(
    docs_repo: Path,
) -> None:
    before = git(docs_repo, "rev-parse", "HEAD")
    with DataBranch(docs_repo) as data:
        assert data.created
        store = data.store
        store.save_stream(StreamState(stream="tg", watermark=5))
        data.index_path.write_bytes(b"index v1")
        assert data.save("pythia: run 1") is True
        assert data.save("pythia: nothing new") is False
    assert git(docs_repo, "rev-parse", "HEAD") == before
    assert git(docs_repo, "branch", "--show-current") == "main"
    assert git(docs_repo, "status", "--porcelain") == ""
    origin = docs_repo.parent / "origin.git"
    assert git(origin, "rev-list", "--count", "pythia-data") == "2"  # state, then the index
    assert git(origin, "log", "-1", "--format=%an <%ae>|%s", "pythia-data") == (
        f"github-actions[bot] <{BOT_EMAIL}>|{INDEX_SUBJECT}"
    )
    # An orphan: no history shared with main.
    with pytest.raises(subprocess.CalledProcessError):
        git(origin, "merge-base", "main", "pythia-data")
    assert json.loads(remote_file(docs_repo, "state/tg.json"))["watermark"] == 5


def test_a_later_run_fetches_the_state_and_replaces_the_index_commit(docs_repo: Path) -> None:
    with DataBranch(docs_repo) as data:
        data.store.save_stream(StreamState(stream="tg", watermark=5))
        data.index_path.write_bytes(b"index v1")
        data.save("pythia: run 1")
    for run, index in ((2, b"index v2"), (3, b"index v3")):
        with DataBranch(docs_repo) as data:
            assert not data.created
            assert data.store.load_stream("tg").watermark == 5 + run - 2
            data.store.save_stream(StreamState(stream="tg", watermark=5 + run - 1))
            data.index_path.write_bytes(index)
            assert data.save(f"pythia: run {run}")
    origin = docs_repo.parent / "origin.git"
    subjects = git(origin, "log", "--format=%s", "pythia-data").splitlines()
    assert subjects == [INDEX_SUBJECT, "pythia: run 3", "pythia: run 2", "pythia: run 1"]
    # Only the newest index is reachable: old ones do not pile up in history.
    blobs = git(
        origin, "log", "--format=", "--raw", "--no-abbrev", "pythia-data", "--", "index.sqlite"
    )
    assert len(blobs.splitlines()) == 1
    assert remote_file(docs_repo, "index.sqlite") == "index v3"


def test_an_index_only_run_amends_instead_of_stacking(docs_repo: Path) -> None:
    with DataBranch(docs_repo) as data:
        data.store.save_stream(StreamState(stream="tg", watermark=1))
        data.index_path.write_bytes(b"v1")
        data.save("run 1")
    origin = docs_repo.parent / "origin.git"
    count = git(origin, "rev-list", "--count", "pythia-data")
    with DataBranch(docs_repo) as data:
        data.index_path.write_bytes(b"v2")
        assert data.save("reindex")
    assert git(origin, "rev-list", "--count", "pythia-data") == count
    assert remote_file(docs_repo, "index.sqlite") == "v2"


def test_two_runs_racing_lose_nothing(docs_repo: Path) -> None:
    with DataBranch(docs_repo) as data:
        data.store.save_stream(StreamState(stream="tg", watermark=10))
        data.save("run 0")
    first, second = DataBranch(docs_repo), DataBranch(docs_repo)
    with first, second:
        store = first.store
        store.save_stream(StreamState(stream="tg", watermark=20, done_ids=[25]))
        store.save_stream(StreamState(stream="zulip", watermark=3))
        ledger = store.load_ledger()
        ledger.put(entry("a", "open", 1, pr_number=1))
        ledger.put(entry("shared", "waiting", 1))
        store.save_ledger(ledger)
        first.index_path.write_bytes(b"first")

        store = second.store
        store.save_stream(StreamState(stream="tg", watermark=15, done_ids=[30]))
        ledger = store.load_ledger()
        ledger.put(entry("b", "open", 2, pr_number=2))
        ledger.put(entry("shared", "open", 0, pr_number=9))
        store.save_ledger(ledger)
        second.index_path.write_bytes(b"second")

        assert first.save("first run")
        assert second.save("second run")  # rejected once, merged, pushed
    tg = json.loads(remote_file(docs_repo, "state/tg.json"))
    assert (tg["watermark"], tg["done_ids"]) == (20, [25, 30])
    assert json.loads(remote_file(docs_repo, "state/zulip.json"))["watermark"] == 3
    proposals = json.loads(remote_file(docs_repo, "state/ledger.json"))["proposals"]
    assert sorted(proposals) == ["a", "b", "shared"]
    assert proposals["shared"]["status"] == "open"
    assert remote_file(docs_repo, "index.sqlite") == "second"


def test_a_push_that_keeps_losing_gives_up_with_a_clear_error(docs_repo: Path) -> None:
    with DataBranch(docs_repo) as data:
        data.store.save_stream(StreamState(stream="tg", watermark=1))
        data.save("run 0")

    class Contested(DataBranch):
        def _push(self) -> bool:
            return False

    with Contested(docs_repo, max_attempts=2) as data:
        data.store.save_stream(StreamState(stream="tg", watermark=2))
        with pytest.raises(DataBranchError, match="2 attempts"):
            data.save("never lands")


def test_a_missing_remote_is_one_clear_error(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "lonely")
    with pytest.raises(DataBranchError, match="no git remote 'origin'"):
        DataBranch(tmp_path / "lonely").open()


def test_eight_concurrent_saves_lose_nothing(docs_repo: Path) -> None:
    """Eight runs (a matrix job each, say) save at the same moment: every stream's state and
    every ledger entry, `/pythia` commands answered included, lands on the branch."""
    with DataBranch(docs_repo) as data:
        data.store.save_stream(StreamState(stream="s0", watermark=1))
        data.save("run 0")
    runs = [DataBranch(docs_repo, sleep=lambda _seconds: None) for _ in range(8)]
    for number, run in enumerate(runs):
        run.open()
        run.store.save_stream(StreamState(stream=f"s{number}", watermark=100 + number))
        ledger = run.store.load_ledger()
        ledger.put(entry("shared", "open", number, pr_number=7, handled_comments=[number]))
        ledger.put(entry(f"p{number}", "open", number, pr_number=10 + number))
        run.store.save_ledger(ledger)
    barrier = threading.Barrier(len(runs))
    errors: list[BaseException] = []

    def save(run: DataBranch) -> None:
        barrier.wait()
        try:
            run.save(f"run of {run.store.streams()[-1].stream}")
        except BaseException as error:  # the assertion below shows it
            errors.append(error)

    workers = [threading.Thread(target=save, args=(run,)) for run in runs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for run in runs:
        run.close()
    assert errors == []
    for number in range(8):
        state = json.loads(remote_file(docs_repo, f"state/s{number}.json"))
        assert state["watermark"] == 100 + number
    proposals = json.loads(remote_file(docs_repo, "state/ledger.json"))["proposals"]
    assert sorted(proposals) == sorted(["shared", *(f"p{n}" for n in range(8))])
    assert proposals["shared"]["handled_comments"] == list(range(8))


def test_merging_ledger_entries_keeps_every_answered_command() -> None:
    ours = entry("x", "open", 2, pr_number=5, handled_comments=[1, 3])
    theirs = entry("x", "open", 1, pr_number=5, handled_comments=[2, 3], reason="r")
    merged = merge_ledgers(Ledger(proposals={"x": ours}), Ledger(proposals={"x": theirs}))
    assert merged.proposals["x"].handled_comments == [1, 2, 3]
    assert merged.proposals["x"].reason == "r"


def test_a_protected_data_branch_is_one_line_and_no_retry(docs_repo: Path) -> None:
    origin = docs_repo.parent / "origin.git"
    attempts = docs_repo.parent / "attempts"
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        f"echo x >> {attempts}\n"
        "echo 'GH006: Protected branch update failed for refs/heads/pythia-data.' >&2\n"
        "exit 1\n"
    )
    hook.chmod(0o755)
    with DataBranch(docs_repo, sleep=lambda _seconds: None) as data:
        data.store.save_stream(StreamState(stream="tg", watermark=1))
        with pytest.raises(DataBranchError, match="protected") as raised:
            data.save("run 0")
    assert "\n" not in str(raised.value) and "rerun" not in str(raised.value)
    assert len(attempts.read_text().splitlines()) == 1
