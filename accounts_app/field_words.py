"""A field's rules in words, for people: what a pattern asks for, and the limits of a value.

Forms show these before a value is typed (help text) and in their errors, never a raw
regular expression. ``pattern_in_words`` reads the simple patterns blueprints use for
names (``^[a-z][a-z0-9_]{1,30}$``: character classes and counts); anything richer
(groups, alternatives) gets no description, and the caller falls back on the field's
own description or a plain "not in the expected format".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Character-class members people have words for: (one, many).
NAMED_RANGES = {
    "a-z": ("lower-case letter", "lower-case letters"),
    "A-Z": ("capital letter", "capital letters"),
    "0-9": ("digit", "digits"),
}
NAMED_CHARACTERS = {
    "_": ("underscore", "underscores"),
    "-": ("dash", "dashes"),
    ".": ("dot", "dots"),
}
_ATOM = re.compile(
    r"""
    (?P<cls>\[(?P<members>(?:[a-zA-Z0-9]-[a-zA-Z0-9]|\\[-.]|[_.-])+)\])
    | (?P<literal>\\[-.]|[_a-z0-9-])
    """,
    re.VERBOSE,
)
_QUANTIFIER = re.compile(r"\{(?P<low>\d+)(?:,(?P<high>\d+))?\}|(?P<sym>[*+?])")
_MEMBER = re.compile(r"[a-zA-Z0-9]-[a-zA-Z0-9]|\\?[-._]")


@dataclass(frozen=True)
class _Atom:
    one: str  # "a lower-case letter, digit or underscore"
    many: str  # "lower-case letters, digits or underscores"


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _class_atom(members: str) -> _Atom | None:
    ones: list[str] = []
    manys: list[str] = []
    for member in _MEMBER.findall(members):
        named = NAMED_RANGES.get(member) or NAMED_CHARACTERS.get(member.lstrip("\\"))
        if named is None:
            return None
        if named[0] not in ones:
            ones.append(named[0])
            manys.append(named[1])
    if not ones:
        return None
    return _Atom(one=_a(_either(ones)), many=_either(manys))


def _literal_atom(text: str) -> _Atom:
    char = text.lstrip("\\")
    named = NAMED_CHARACTERS.get(char)
    if named is not None:
        return _Atom(one=_a(named[0]), many=named[1])
    return _Atom(one=f'"{char}"', many=f'"{char}"s')


def _counted(atom: _Atom, *, low: int, high: int | None) -> str:
    if high is None:
        return atom.one if low == 1 else f"{low} {atom.many}"
    if low == high:
        return _counted(atom, low=low, high=None)
    if low == 0:
        return f"up to {high} {atom.many}"
    return f"{low} to {high} {atom.many}"


def pattern_in_words(pattern: str) -> str | None:
    """``^[a-z][a-z0-9_]{1,30}$`` -> "a lower-case letter, then 1 to 30 lower-case letters,
    digits or underscores"; None for a pattern this cannot put in words."""
    body = pattern
    body = body[1:] if body.startswith("^") else body
    for end in ("\\Z", "$"):
        if body.endswith(end):
            body = body[: -len(end)]
            break
    parts: list[str] = []
    at = 0
    while at < len(body):
        match = _ATOM.match(body, at)
        if match is None:
            return None
        atom = (
            _class_atom(match.group("members"))
            if match.group("cls")
            else _literal_atom(match.group("literal"))
        )
        if atom is None:
            return None
        at = match.end()
        quantifier = _QUANTIFIER.match(body, at)
        if quantifier is None:
            parts.append(atom.one)
            continue
        at = quantifier.end()
        symbol = quantifier.group("sym")
        if symbol == "*":
            parts.append(f"any number of {atom.many}")
        elif symbol == "+":
            parts.append(f"one or more {atom.many}")
        elif symbol == "?":
            parts.append(f"optionally {atom.one}")
        else:
            high = quantifier.group("high")
            parts.append(
                _counted(atom, low=int(quantifier.group("low")), high=int(high) if high else None)
            )
    if not parts:
        return None
    return ", then ".join(parts)


def limits_in_words(schema: dict[str, Any], *, kind: str) -> str:
    """The limits of a value before it is typed: "3 to 40 characters", "from 1 to 6",
    "at most 20". Empty when the schema sets none."""
    if kind == "string":
        low, high = schema.get("minLength"), schema.get("maxLength")
        if low and high:
            return f"{low} to {high} characters"
        if high:
            return f"at most {high} characters"
        if low:
            return f"at least {low} characters"
        return ""
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"from {low} to {high}"
        if high is not None:
            return f"at most {high}"
        if low is not None:
            return f"at least {low}"
        return ""
    if kind == "array":
        low, high = schema.get("minItems"), schema.get("maxItems")
        if low and high:
            return f"{low} to {high}"
        if high:
            return f"at most {high}"
        if low:
            return f"at least {low}"
    return ""


def sentence(text: str) -> str:
    """The text with a capital first letter and a full stop."""
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."
