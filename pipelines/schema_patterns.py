"""JSON Schema ``pattern`` with JSON Schema's meaning, not Python's.

JSON Schema patterns are ECMA-262 regular expressions, where ``$`` (no flags) matches
only at the very end of the string. Python's ``$`` also matches just before a trailing
newline, so with jsonschema's stock ``re.search`` the value ``"nl-probe\\n"`` passes
``^[a-z-]+$``: the newline reached Terraform state keys and resource names. The choice
made here: every ``$`` that is an anchor (not escaped, not inside ``[...]``) is
rewritten to ``\\Z``, which matches only at the end. The match stays a search, as
JSON Schema says (``"abc"`` matches ``"xabcx"``), so unanchored patterns keep their
meaning and anchored ones now cover the whole string. Patterns are compiled with
``re.ASCII``, so ``\\d`` and ``\\w`` mean ``[0-9]`` and ``[A-Za-z0-9_]`` as in ECMA-262
(Python's would take Arabic-Indic digits for ``\\d``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

# Keywords whose value is data, not a schema: a "pattern" key in there is not a keyword.
_DATA_KEYWORDS = frozenset({"default", "enum", "const", "examples"})
# Keywords whose value maps names (any names, "default" too) to schemas.
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def _translate(pattern: str) -> str:
    """The pattern with each anchor ``$`` as ``\\Z`` (escapes and ``[...]`` kept as they are)."""
    out: list[str] = []
    index, in_class = 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # As Python parses it: a "]" first in the class (after an optional "^") is literal.
            end = index + 1
            if pattern[end : end + 1] == "^":
                end += 1
            if pattern[end : end + 1] == "]":
                end += 1
            out.append(pattern[index:end])
            index = end
            continue
        elif char == "$":
            char = r"\Z"
        out.append(char)
        index += 1
    return "".join(out)


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A JSON Schema pattern compiled with JSON Schema's end-of-string meaning (re.error if bad)."""
    return re.compile(_translate(pattern), re.ASCII)


def pattern(
    validator: Validator, patrn: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """The ``pattern`` keyword, with ``compile_pattern``'s meaning."""
    if validator.is_type(instance, "string") and not compile_pattern(patrn).search(instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def validation_schema(schema: Any) -> Any:
    """A copy of the schema whose ``patternProperties`` keys have ``compile_pattern``'s meaning.

    Those keys are read by jsonschema itself in several keywords (patternProperties,
    additionalProperties, unevaluatedProperties) with ``re.search``, so they are
    rewritten in place of overriding each keyword: ``(?a)`` + each ``$`` as ``\\Z``.
    The blueprint keeps its schema as written, for people to read.
    """
    if isinstance(schema, list):
        return [validation_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    copied: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DATA_KEYWORDS:
            copied[key] = value
        elif key == "patternProperties" and isinstance(value, dict):
            copied[key] = {
                "(?a)" + _translate(str(name)): validation_schema(sub)
                for name, sub in value.items()
            }
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            copied[key] = {name: validation_schema(sub) for name, sub in value.items()}
        else:
            copied[key] = validation_schema(value)
    return copied


def pattern_problems(schema: Any) -> list[str]:
    """Each pattern of a schema that does not compile, as "'<pattern>': <reason>"."""
    problems = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        if isinstance(node.get("patternProperties"), dict):
            found += [key for key in node["patternProperties"] if isinstance(key, str)]
        for patrn in found:
            try:
                compile_pattern(patrn)
            except (re.error, ValueError) as exc:  # ValueError: (?u) against re.ASCII
                problems.append(f"{patrn!r}: {exc}")
        for key, value in node.items():
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                stack.extend(value.values())
            elif key not in _DATA_KEYWORDS:
                stack.append(value)
    return problems
