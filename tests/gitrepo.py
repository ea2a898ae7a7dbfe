"""Running git in test repositories, with a fixed identity and nothing from the user's config."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` and return its stripped standard output; fail the test on an error."""
    done = subprocess.run(
        ["git", "-c", "user.name=Maintainer", "-c", "user.email=m@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()
