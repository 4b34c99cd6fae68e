"""The one redactor: secrets out of everything stored or shown (log lines, errors, outputs).

Free of Django, so every client takes one. It removes, in linear time:
- every known secret, and its upper-case, lower-case, URL-encoded and base64 forms
  (base64 at any alignment, as inside an HTTP basic-auth header); for a connection
  string, its password too (raw and URL-decoded);
- the password of any ``scheme://user:password@`` URL, known or not;
- ``password=...`` in a libpq key/value connection string.
Known secrets present in a text are replaced by one compiled pattern (a trie of
them) in a single pass; the URL rule is a hand scan that reads each character a
bounded number of times.
"""

from __future__ import annotations

import base64
import functools
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, urlsplit

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4
# libpq key/value: password=... (quoted with backslash escapes, or up to a space).
# The quoted form is bounded so that an unclosed quote cannot make the scan quadratic.
_KV_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.){0,1024}'|\S+)", re.I)
_URL_USER = re.compile(r"[^:/@\s]*")
_URL_PASSWORD = re.compile(r"[^@\s]*")
_Trie = dict[str, "_Trie"]
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")


class Redactor:
    """Replaces secret values (added any time, from any thread) with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._sorted: tuple[str, ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Redact ``secret`` (and its other forms) from every later call."""
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            return  # too short to tell from ordinary text
        variants = {v for v in secret_variants(secret) if len(v) >= MIN_SECRET_LENGTH}
        with self._lock:
            if not variants <= self._values:
                self._values |= variants
                self._sorted = tuple(sorted(self._values))

    def __call__(self, text: str) -> str:
        with self._lock:
            values = self._sorted
        # Substring tests run at C speed and usually find nothing: only the secrets
        # present go into the one pattern that replaces them all in a single pass.
        present = tuple(value for value in values if value in text)
        if present:
            text = _alternation(present).sub(REDACTED, text)
        text = redact_url_passwords(text)
        return _KV_PASSWORD.sub(rf"\g<key>{REDACTED}", text)


def secret_variants(secret: str) -> set[str]:
    """The forms a secret may take in output: cased, URL-encoded, base64, and the
    password inside it when it is a connection string."""
    cores = {secret}
    password = _url_password(secret)
    if password:
        cores |= {password, unquote(password)}
    match = _KV_PASSWORD.search(secret)
    if match:
        value = match.group(0)[len(match.group("key")) :]
        cores.add(value.strip("'"))
    variants: set[str] = set()
    for core in (c for c in cores if c):
        for form in {core, core.upper(), core.lower(), unquote(core)}:
            variants |= {form, quote(form, safe=""), quote(form), quote_plus(form)}
        variants |= _base64_forms(core.encode())
    return variants


def _base64_forms(data: bytes) -> set[str]:
    """The base64 text of ``data`` wherever it starts in a longer encoded value: for each
    of the three alignments, the characters that depend on ``data`` alone."""
    forms: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        start = -(-8 * offset // 6)  # ceil: the first character free of the padding bytes
        end = 8 * (offset + len(data)) // 6  # the last whole character of data's bits
        core = encoded[start:end]
        if len(core) >= 6:
            forms |= {core, core.replace("+", "-").replace("/", "_")}
    return forms


def _url_password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


@functools.lru_cache(maxsize=256)
def _alternation(values: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(_trie_pattern(values))


def _trie_pattern(values: Iterable[str]) -> str:
    """One regular expression matching any of ``values``, longest first at each place.

    A trie, not a flat alternation: the engine follows one branch per character, so
    the cost does not grow with the number of secrets.
    """
    root: _Trie = {}
    for value in values:
        node = root
        for char in value:
            node = node.setdefault(char, {})
        node[""] = {}
    return _node_pattern(root)


def _node_pattern(node: _Trie) -> str:
    ends_here = "" in node
    branches = [re.escape(char) + _node_pattern(child) for char, child in node.items() if char]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if ends_here:
        # Greedy: the longer secret is tried first, the shorter one still matches.
        return f"(?:{body})?"
    return body


def redact_url_passwords(text: str) -> str:
    """``scheme://user:[redacted]@`` for every password in a URL, in linear time."""
    pieces: list[str] = []
    copied = 0
    position = text.find("://")
    while position != -1:
        user_end = _scan(_URL_USER, text=text, start=position + 3)
        resume = user_end
        scheme_ok = position > 0 and text[position - 1] in _SCHEME_CHARS
        if scheme_ok and user_end < len(text) and text[user_end] == ":":
            password_end = _scan(_URL_PASSWORD, text=text, start=user_end + 1)
            found = password_end < len(text) and text[password_end] == "@"
            if found and password_end > user_end + 1:
                pieces += [text[copied : user_end + 1], REDACTED]
                copied = password_end
            # Every "://" before password_end would stop at the same place: skip them.
            resume = max(resume, password_end)
        position = text.find("://", resume)
    pieces.append(text[copied:])
    return "".join(pieces)


def _scan(pattern: re.Pattern[str], *, text: str, start: int) -> int:
    """Where a run of ``pattern`` (a starred character class) starting at ``start`` ends."""
    match = pattern.match(text, start)
    return match.end() if match else start


def environment_secrets(
    *,
    database_password: str,
    broker_url: str,
    secret_key: str,
    connection_urls: Iterable[str] = (),
    aws_secret_access_key: str = "",
    aws_session_token: str = "",
) -> list[str]:
    """Secrets the portal itself holds (the caller reads them from settings): database
    and broker passwords, the secret key, named connections' passwords, cloud keys."""
    values = [
        database_password,
        _url_password(broker_url),
        secret_key,
        aws_secret_access_key,
        aws_session_token,
        *(_url_password(url) for url in connection_urls),
    ]
    return [value for value in values if value]
