"""Durations in settings, written as people write them: ``3d``, ``1d``, ``1h``, ``30m``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
_ONE = re.compile(r"([1-9][0-9]{0,4})([dhm])")


def parse_durations(text: str, *, name: str) -> tuple[timedelta, ...]:
    """A comma-separated list (``3d,1d,1h``), longest first; ValueError naming ``name``."""
    found = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _ONE.fullmatch(item)
        if match is None:
            raise ValueError(
                f"{name}: {item!r} is not a duration (a whole number and d, h or m, e.g. 3d,1d,1h)"
            )
        found.append(timedelta(**{_UNITS[match.group(2)]: int(match.group(1))}))
    return tuple(sorted(set(found), reverse=True))


def describe(duration: timedelta) -> str:
    """``3 days``, ``1 hour``, ``30 minutes``: for messages."""
    seconds = int(duration.total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
