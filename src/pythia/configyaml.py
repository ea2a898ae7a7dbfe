"""Reading a config file's YAML strictly: duplicate keys, deep nesting and impossible dates
are told as one line with the line number, where PyYAML would stay silent or fail deep inside."""

from __future__ import annotations

from typing import Any

import yaml

MAX_YAML_DEPTH = 50


class YAMLProblem(yaml.YAMLError):
    """Well-formed YAML that a config must not contain; `message` says what and what to do."""

    def __init__(self, message: str, mark: yaml.Mark) -> None:
        super().__init__(message)
        self.message = message
        self.line = mark.line + 1


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and deep nesting, and names bad dates.

    PyYAML keeps the last of two equal keys without a word, composes nodes recursively (10,000
    nested brackets end in RecursionError), and lets `datetime.date`'s ValueError escape for a
    timestamp-shaped value like 2026-13-45.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YAMLProblem(
                    f"the YAML is nested more than {MAX_YAML_DEPTH} levels deep; "
                    "a Pythia config needs only a few levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` may be overridden key by key; that is its purpose
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                seen = first_line.get(key)
            except TypeError:
                continue  # unhashable: SafeLoader itself reports it
            if seen is not None:
                raise YAMLProblem(
                    f"the key '{key}' appears twice in the same mapping (first on line {seen}); "
                    "keep only one",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return loader.construct_yaml_timestamp(node)  # type: ignore[no-untyped-call]
    except ValueError as error:
        raise YAMLProblem(
            f"{node.value} is not a real date ({error}); write an existing date as YYYY-MM-DD",
            node.start_mark,
        ) from None


ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)
