"""The architecture as DESIGN.md §4 draws it, checked on the code's own imports (those inside
functions included): the pipeline reaches no adapter, and no module imports in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MODULES = {
    ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): path
    for path in (SRC / "pythia").rglob("*.py")
}
ADAPTER_LIBRARIES = {
    "google", "github", "telethon", "zulip", "git", "openai", "slack_sdk", "requests", "sqlean",
}  # fmt: skip
ADAPTER_MODULES = ("pythia.gemini", "pythia.openai_compat", "pythia.publish", "pythia.app",
                   "pythia.databranch", "pythia.gitenv", "pythia.sources.")  # fmt: skip


def imports(name: str) -> set[str]:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)]
            target = ".".join([*base, node.module] if node.level and node.module else base)
            target = target if node.level else str(node.module)
            found.add(target)
            found.update(
                f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES
            )
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def reach(start: str) -> tuple[set[str], set[str]]:
    """The project modules and the other top-level packages `start` can end up importing."""
    seen: set[str] = set()
    libraries: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for target in imports(name):
            if target in MODULES:
                todo.append(target)
            elif not target.startswith("pythia"):
                libraries.add(target.split(".")[0])
    return seen, libraries


def test_the_pipeline_reaches_no_adapter() -> None:
    modules, libraries = reach("pythia.pipeline")
    assert not libraries & ADAPTER_LIBRARIES
    assert not [m for m in modules if m.startswith(ADAPTER_MODULES)]


def test_no_module_imports_in_a_circle() -> None:
    graph = {name: {t for t in imports(name) if t in MODULES and t != name} for name in MODULES}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in graph[name]:
            if target == "pythia" or name == "pythia":
                continue  # the package's face holds only its version
            if state.get(target) == 1:
                raise AssertionError(" -> ".join([*path, name, target]))
            if target not in state:
                visit(target, [*path, name])
        state[name] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [])


def test_no_module_is_over_500_lines() -> None:
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in lines.items() if n > 500} == {}
