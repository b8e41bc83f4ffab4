"""The one strict YAML reader for user files (scenarios, `--set` values, hardware files): safe
types only, no duplicate keys, finite numbers, bounded size, nesting and alias expansion."""

from __future__ import annotations

import math
import re
from typing import Any, Final

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from megawatt.errors import InputError

__all__ = [
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_NODES",
    "StrictLoader",
    "describe",
    "load_yaml",
    "surrogate",
]

MAX_CHARS: Final = 4 * 1024 * 1024
"""Longest YAML text read, in characters (a scenario or hardware file is a few thousand)."""

MAX_DEPTH: Final = 32
"""Deepest nesting of mappings and lists, aliases expanded (a scenario needs 6)."""

MAX_NODES: Final = 100_000
"""Most values in a document once every alias is expanded where it is used (a 'billion laughs'
file of a few aliases expands to billions)."""


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys, non-finite numbers, nesting deeper than
    `MAX_DEPTH`, recursive aliases and documents that expand to more than `MAX_NODES` values,
    and reads `1e9` as a float, as YAML 1.2 does."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # PyYAML composes recursively: stop before Python's recursion limit does.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nesting deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse recursive aliases, and documents whose aliases expand past `MAX_NODES` values or
    `MAX_DEPTH` levels. Each node is measured once (aliases share nodes), so this is linear in
    the text, not in the expansion."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            on_path.discard(key)
            if size[key] > MAX_NODES:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"aliases expand to more than {MAX_NODES:,} values (a 'billion laughs' "
                    "file?); write the values out or use fewer aliases",
                    node.start_mark,
                )
            if depth[key] > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"aliases expand to nesting deeper than {MAX_DEPTH} levels",
                    node.start_mark,
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to a value that contains it", node.start_mark
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


def _unique_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:
            raise ConstructorError(
                None, None, f"a mapping key must be a plain value; got {key!r}", key_node.start_mark
            ) from None
        if duplicate:
            raise ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (the last one would silently win); keep one",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


def _finite_float(loader: StrictLoader, node: yaml.ScalarNode) -> float:
    value = SafeConstructor.construct_yaml_float(loader, node)
    if not math.isfinite(value):
        raise ConstructorError(
            None,
            None,
            f"{node.value!r} is not a finite number; give a finite value",
            node.start_mark,
        )
    return float(value)


def surrogate(text: str) -> str | None:
    """The first lone surrogate in `text` (an escape such as \\ud800, or an undecodable byte of
    a command line), which no file can hold as UTF-8; None when there is none."""
    return next((c for c in text if "\ud800" <= c <= "\udfff"), None)


def _text(loader: StrictLoader, node: yaml.ScalarNode) -> str:
    value = SafeConstructor.construct_yaml_str(loader, node)
    bad = surrogate(value)
    if bad is not None:
        raise ConstructorError(
            None,
            None,
            f"{bad!a} is a lone surrogate, not a character; remove the escape",
            node.start_mark,
        )
    return str(value)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
StrictLoader.add_constructor("tag:yaml.org,2002:str", _text)
StrictLoader.add_constructor("tag:yaml.org,2002:float", _finite_float)
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def describe(exc: yaml.YAMLError) -> str:
    """Where and what, on one line, to follow a file name: ' line 3, column 1: not valid YAML:
    duplicate key ...'."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "malformed").split())
        return f"{at}: not valid YAML: {problem}"
    return f": not valid YAML: {' '.join(str(exc).split())}"


def load_yaml(text: str, where: str, error: type[InputError] = InputError) -> Any:
    """Parse one YAML document with `StrictLoader`; any problem raises `error` naming `where`,
    the line and column, what is wrong and how to fix it."""
    if len(text) > MAX_CHARS:
        raise error(
            f"{where}: {len(text):,} characters is more than the {MAX_CHARS:,} a YAML input may "
            "hold. Is it the right file?"
        )
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise error(f"{where}{describe(exc)}.") from None
    except RecursionError:
        raise error(f"{where}: not valid YAML: nested too deeply. Flatten it.") from None
