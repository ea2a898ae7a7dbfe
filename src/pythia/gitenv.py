"""The environment git commands run in: the bot's identity and the token, never in argv."""

from __future__ import annotations

import base64
from pathlib import Path

import git

BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"


class NoRemote(Exception):
    """The repository has no such git remote: Pythia must run inside a clone."""


def bot_env() -> dict[str, str]:
    """The bot identity for commits, through the environment so no git config is touched."""
    return {
        "GIT_AUTHOR_NAME": BOT_NAME,
        "GIT_AUTHOR_EMAIL": BOT_EMAIL,
        "GIT_COMMITTER_NAME": BOT_NAME,
        "GIT_COMMITTER_EMAIL": BOT_EMAIL,
    }


def auth_env(remote_url: str, token: str | None) -> dict[str, str]:
    """Pass the token as an `http.extraheader` through GIT_CONFIG_* variables.

    Not `-c` on the command line: GitPython puts the whole command line into GitCommandError
    messages (and `ps` shows it), which would leak the token. The key is URL-qualified because
    git keeps only the most specific match (git-config(1), "http.<url>.*"), so a generic key
    would lose to the header actions/checkout persists; the empty value first clears that one
    ("an empty value will reset the extra headers to the empty list").
    """
    if not token or not remote_url.startswith(("https://", "http://")):
        return {}
    scheme, rest = remote_url.split("://", 1)
    key = f"http.{scheme}://{rest.split('/', 1)[0]}/.extraheader"
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": key,
        "GIT_CONFIG_VALUE_0": "",
        "GIT_CONFIG_KEY_1": key,
        "GIT_CONFIG_VALUE_1": f"AUTHORIZATION: basic {basic}",
    }


def remote_url(repo_path: Path, remote: str) -> str:
    """The URL of `remote`, with a relative local path made absolute."""
    try:
        url = str(git.Repo(repo_path).git.remote("get-url", remote))
    except (git.GitCommandError, git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise NoRemote(
            f"{repo_path} has no git remote '{remote}'; run Pythia inside a clone of the repo"
        ) from None
    if "://" not in url and not url.startswith("git@"):
        candidate = (Path(repo_path) / url).resolve()
        if candidate.exists():
            return str(candidate)
    return url
