"""The account name rule, in one place and free of Django so every layer can use it.

An account name becomes a PostgreSQL schema, a folder, cloud resource names and
DNS labels, so it must match the WHOLE string: ``\\A`` and ``\\Z`` anchor it
(Python's ``$`` also matches before a trailing newline, which let ``"x-y\\n"``
through a ``^...$`` pattern). Django's ``RegexValidator`` uses ``re.search``,
which these anchors make a whole-string match too.
"""

from __future__ import annotations

import re

ACCOUNT_NAME_PATTERN = r"\A[a-z][a-z0-9-]{2,39}\Z"
ACCOUNT_NAME_RULE = (
    "3 to 40 characters: a lower-case letter first, then lower-case letters, digits and dashes"
)
_ACCOUNT_NAME = re.compile(ACCOUNT_NAME_PATTERN)


def is_account_name(value: object) -> bool:
    """True when ``value`` is a string that is, in full, a valid account name."""
    return isinstance(value, str) and _ACCOUNT_NAME.fullmatch(value) is not None
