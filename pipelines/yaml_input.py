"""Reading YAML the portal is given (config files, blueprint.yaml), with limits.

``yaml.safe_load`` alone builds no objects but expands aliases without bound: a
"billion laughs" file of a few hundred bytes holds 10^9 values once expanded, and
everything that walks the data (JSON Schema, error messages) then runs for ever.
Here the document is composed first (libyaml's ``CSafeLoader`` when available: much
faster; libyaml also refuses nesting beyond 1000 levels), its node graph is checked
by two loops over explicit stacks (size of the text, nesting, alias uses, values once
aliases are expanded), and only then are Python objects built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from portal.errors import PortalError

MAX_YAML_BYTES = 1024 * 1024  # size of the text
MAX_YAML_DEPTH = 64  # collections inside collections
MAX_YAML_ALIASES = 100  # uses of an anchor (*name, <<: *name)
MAX_YAML_VALUES = 100_000  # scalars and collections, with aliases expanded

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlInputError(PortalError):
    """A YAML input that is unreadable or over a limit; the message names the source."""


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _where(node: Node) -> str:
    return f"line {node.start_mark.line + 1}"


def _check_nodes(root: Node, *, source: str) -> None:
    """Refuse deep nesting, many alias uses, and documents that expand to too many values."""
    seen: set[int] = set()
    aliases = 0
    stack: list[tuple[Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:  # a second way to the same node: an alias
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise YamlInputError(
                    f"{source}: more than {MAX_YAML_ALIASES} uses of anchors (*alias), "
                    f"the limit (the anchor on {_where(node)})"
                )
            continue
        seen.add(id(node))
        if depth > MAX_YAML_DEPTH:
            raise YamlInputError(
                f"{source}: nested deeper than {MAX_YAML_DEPTH} levels ({_where(node)})"
            )
        stack.extend((child, depth + 1) for child in _children(node))
    # Expanded: each alias counts as a full copy. Stops at the limit, so cycles end too.
    count = 0
    expanded = [root]
    while expanded:
        node = expanded.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise YamlInputError(
                f"{source}: holds more than {MAX_YAML_VALUES} values once its aliases are "
                "expanded, the limit"
            )
        expanded.extend(_children(node))


def load_yaml(text: str | bytes, *, source: str) -> Any:
    """The one YAML document in ``text`` (None when empty), or YamlInputError naming ``source``."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_YAML_BYTES:
        raise YamlInputError(f"{source}: {size} bytes, more than the limit of {MAX_YAML_BYTES}")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, source=source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise YamlInputError(f"{source} is not valid YAML: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5000 digits
        raise YamlInputError(f"{source} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's mapping of parameter names to values ({} when empty).

    Raises YamlInputError (field "--config") when the file is missing, too large, not
    UTF-8 YAML, over a limit of this module, or not a mapping.
    """
    file = Path(path)
    if not file.is_file():
        raise YamlInputError(f"no such file: {path}", field="--config")
    if file.stat().st_size > MAX_YAML_BYTES:
        raise YamlInputError(
            f"{path}: {file.stat().st_size} bytes, more than the limit of {MAX_YAML_BYTES}",
            field="--config",
        )
    try:
        data = load_yaml(file.read_bytes(), source=str(path))
    except YamlInputError as exc:
        raise YamlInputError(exc.message, field="--config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise YamlInputError(
            f"{path} must hold a mapping of parameter names to values", field="--config"
        )
    return data
