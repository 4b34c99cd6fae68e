"""Limits on the shape of a config: nesting depth, total size, string length.

Checked before anything recursive (deepcopy, defaults, JSON Schema) touches a
value, by one loop over an explicit stack, so a config nested 100,000 deep or a
string of a megabyte is refused in time bounded by the limits, not by the input.
The defaults hold for every blueprint; a blueprint may tighten them under
``limits:`` in blueprint.yaml, never loosen them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_MAX_DEPTH = 32  # containers inside containers; the config mapping itself is level 1
DEFAULT_MAX_BYTES = 256 * 1024  # the config as compact JSON, about
DEFAULT_MAX_STRING_LENGTH = 4096  # characters in any one string, keys included
# Keys jsonschema writes as ".key" in a JSON path; others as "['key']".
_PLAIN_KEY = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class InputLimits:
    max_depth: int = DEFAULT_MAX_DEPTH
    max_bytes: int = DEFAULT_MAX_BYTES
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH


def child_path(path: str, key: object) -> str:
    """A JSON path one level down, written as jsonschema writes them ($.a, $[0], $['a b'])."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if len(text) > 40:  # a path names the field; a key of a megabyte would drown it
        text = text[:37] + "..."
    if _PLAIN_KEY.fullmatch(text):
        return f"{path}.{text}"
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{escaped}']"


def _scalar_size(value: object) -> int:
    """About how many bytes a scalar takes as JSON, without turning a huge number into text."""
    if isinstance(value, str | bytes):
        return len(value) + 2
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    return 24


def limit_problems(value: object, *, limits: InputLimits) -> list[tuple[str, str]]:
    """(JSON path, message) for each limit the value breaks; [] when within all of them.

    Stops at the first size overflow, so the work is bounded by ``limits.max_bytes``.
    """
    problems: list[tuple[str, str]] = []
    size = 0
    stack: list[tuple[object, str, int]] = [(value, "$", 1)]
    while stack:
        item, path, level = stack.pop()
        if isinstance(item, dict | list | tuple):
            if level > limits.max_depth:
                problems.append((path, f"nested deeper than {limits.max_depth} levels"))
                continue
            size += 2 + len(item)  # brackets and commas, counted before looking inside
            if size > limits.max_bytes:
                problems.append(_too_large(limits))
                break
            children = []
            entries = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in entries:
                if isinstance(item, dict):
                    key_text = str(key)
                    size += len(key_text) + 3
                    if len(key_text) > limits.max_string_length:
                        problems.append(
                            (
                                child_path(path, key_text),
                                f"the key is {len(key_text)} characters long, "
                                f"more than the limit of {limits.max_string_length}",
                            )
                        )
                        continue
                    key = key_text
                children.append((child, child_path(path, key), level + 1))
            stack.extend(reversed(children))
        else:
            # An over-long string is refused on its own; it need not also overflow the size.
            size += min(_scalar_size(item), limits.max_string_length + 2)
            if isinstance(item, str) and len(item) > limits.max_string_length:
                problems.append(
                    (
                        path,
                        f"{len(item)} characters long, more than the limit of "
                        f"{limits.max_string_length}",
                    )
                )
        if size > limits.max_bytes:
            problems.append(_too_large(limits))
            break
    return problems


def _too_large(limits: InputLimits) -> tuple[str, str]:
    return ("$", f"larger than the limit of {limits.max_bytes} bytes (as JSON)")


def nul_problems(value: object) -> list[tuple[str, str]]:
    """(JSON path, message) for each string, value or key, holding a NUL character.

    PostgreSQL's JSON cannot store NUL; saying so here beats failing at the save.
    A loop, like limit_problems, and meant to run after it.
    """
    found: list[tuple[str, str]] = []
    stack: list[tuple[object, str]] = [(value, "$")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            found.append((path, "must not contain NUL characters"))
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in str(key):
                    found.append((child_path(path, str(key)), "must not contain NUL characters"))
                stack.append((child, child_path(path, str(key))))
        elif isinstance(item, list | tuple):
            stack.extend((child, child_path(path, index)) for index, child in enumerate(item))
    return found
