"""Masking rules for logical database clones: parsing, type checks, transformers.

Pure Python, no database access: the driver (``logical.py``) introspects the
source and hands column types in. Transformers work on fields of PostgreSQL's
COPY text format (``\\N`` is NULL, backslash escapes), so a row can be masked
without parsing it into Python values.

Deterministic transformers are keyed with a per-clone secret (HMAC-SHA256), and
the key depends only on the transformer kind, not on the column: the same
source value gives the same masked value in every table, so joins on masked
columns (``orders.customer_email = users.email``) still match.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TRANSFORMERS = ("email", "name", "phone", "hash", "null", "fixed", "redact", "keep")

# Substrings of column names that suggest personal data; a column that matches
# and has no rule is reported (an error with ``masking_strict``).
PERSONAL_HINTS = ("email", "phone", "name", "address", "password", "token", "ssn", "card", "iban")

REDACTED = "REDACTED"
EMAIL_DOMAIN = "example.invalid"
EMAIL_HEX = 16  # 64 bits: no collision expected below billions of distinct inputs
EMAIL_LENGTH = len("u_") + EMAIL_HEX + 1 + len(EMAIL_DOMAIN)
PHONE_PREFIX = "555"
PHONE_LENGTH = 10
HASH_MIN_LENGTH = 16

# Outputs are picked by HMAC from these lists: plausible, and never derived from
# the source value's text.
FIRST_NAMES = (
    "Ada", "Alan", "Alice", "Amara", "Anna", "Arjun", "Ben", "Carla", "Chen", "Clara",
    "Daniel", "Diego", "Elena", "Emil", "Emma", "Farah", "Felix", "Grace", "Hana", "Hugo",
    "Ines", "Ivan", "Jack", "Jana", "Kai", "Kenji", "Lara", "Leo", "Lina", "Luca",
    "Maya", "Mei", "Milan", "Nadia", "Noah", "Nora", "Omar", "Olga", "Paul", "Priya",
    "Rosa", "Ravi", "Sara", "Sam", "Sofia", "Tariq", "Tom", "Uma", "Vera", "Victor",
    "Wen", "Yara", "Yusuf", "Zoe", "Aiko", "Bruno", "Cyrus", "Dina", "Eli", "Freya",
    "Gita", "Hiro", "Iris", "Jonas",
)  # fmt: skip
LAST_NAMES = (
    "Abbott", "Banks", "Carver", "Dalton", "Ellis", "Fischer", "Garcia", "Hayes", "Ito",
    "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn",
    "Rossi", "Silva", "Tanaka", "Ueda", "Varga", "Weber", "Xu", "Young", "Zimmer",
    "Andersen", "Brooks", "Costa", "Dubois", "Evans", "Ferreira", "Grant", "Horvat",
    "Iqbal", "Jovanovic", "Keller", "Lindqvist", "Mendes", "Novak", "Olsen", "Park",
    "Reyes", "Sato", "Torres", "Vogel", "Walsh", "Yilmaz", "Berg", "Chandra", "Duarte",
    "Eriksen", "Fontaine", "Gallo", "Hoffmann", "Kaur", "Lopez", "Meyer", "Nguyen",
    "Ortiz", "Popescu", "Ramos", "Schmidt", "Wolff",
)  # fmt: skip

# Type names (pg_type.typname of the base type) each transformer can write.
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "citext", "name"})
_ALLOWED_TYPES: dict[str, frozenset[str]] = {
    "email": TEXT_TYPES,
    "name": TEXT_TYPES,
    "redact": TEXT_TYPES,
    "phone": TEXT_TYPES | {"int8", "numeric"},
    "hash": TEXT_TYPES | {"uuid", "bytea"},
}
# Transformers that map many inputs to one output: refused on a column that is
# unique on its own (the post-data unique index would fail after the copy).
NON_INJECTIVE = frozenset({"name", "phone", "redact", "fixed"})

NULL_FIELD = b"\\N"
_COPY_ESCAPES = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
_ESCAPE_RE = re.compile(rb"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_EMAIL_RE = re.compile("u_[0-9a-f]{" + str(EMAIL_HEX) + "}@" + re.escape(EMAIL_DOMAIN))
_PHONE_RE = re.compile(PHONE_PREFIX + "[0-9]{" + str(PHONE_LENGTH - len(PHONE_PREFIX)) + "}")
_HEX_RE = re.compile(
    r"(\\x)?[0-9a-f]{16,64}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)

_EMAIL_SUFFIX = b"@" + EMAIL_DOMAIN.encode()
_PHONE_PREFIX_B = PHONE_PREFIX.encode()
_PHONE_DIGITS = PHONE_LENGTH - len(PHONE_PREFIX)
_PHONE_MODULUS = 10**_PHONE_DIGITS

# Per-kind caches are cleared when they grow past this (bounded memory on huge tables).
CACHE_LIMIT = 500_000


class MaskingError(ValueError):
    """A masking rule is invalid or cannot be applied; the message names the rule."""


@dataclass(frozen=True)
class Rule:
    """One masking rule: ``schema.table.column`` -> transformer (``value`` for fixed)."""

    key: str  # as written in the blueprint, for messages
    schema: str
    table: str
    column: str
    transformer: str
    value: str | None = None

    @property
    def table_name(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class ColumnType:
    """What a transformer needs to know about the target column."""

    type_sql: str  # format_type(), for messages and casts
    base_type: str  # pg_type.typname of the base type (domains resolved)
    max_length: int | None = None  # varchar(n) / char(n)
    numeric_digits: int | None = None  # integer digits allowed by numeric(p, s)
    not_null: bool = False
    unique_alone: bool = False  # a unique index on this column only


def parse_rules(mapping: Mapping[str, Any] | None) -> list[Rule]:
    """Parse ``{"table.column": transformer}``; raise MaskingError naming the rule."""
    rules: list[Rule] = []
    seen: dict[tuple[str, str, str], str] = {}
    for key, spec in (mapping or {}).items():
        parts = str(key).split(".")
        if len(parts) == 2:
            schema, table, column = "public", parts[0], parts[1]
        elif len(parts) == 3:
            schema, table, column = parts
        else:
            raise MaskingError(
                f"masking rule {key!r}: expected 'table.column' or 'schema.table.column'"
            )
        if not all(parts):
            raise MaskingError(f"masking rule {key!r}: empty name")
        value: str | None = None
        if isinstance(spec, Mapping):
            if list(spec) != ["fixed"]:
                raise MaskingError(f"masking rule {key!r}: a mapping must be {{fixed: VALUE}}")
            transformer, value = "fixed", _fixed_text(spec["fixed"])
        elif isinstance(spec, str) and spec in TRANSFORMERS and spec != "fixed":
            transformer = spec
        else:
            raise MaskingError(
                f"masking rule {key!r}: unknown transformer {spec!r}; use one of "
                "email, name, phone, hash, null, redact, keep or {fixed: VALUE}"
            )
        ident = (schema, table, column)
        if ident in seen:
            raise MaskingError(f"masking rule {key!r}: same column as rule {seen[ident]!r}")
        seen[ident] = str(key)
        rules.append(Rule(str(key), schema, table, column, transformer, value))
    return rules


def _fixed_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):  # YAML true/false -> PostgreSQL boolean literals
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise MaskingError(f"fixed value {value!r} must be a string, number, boolean or null")


def check_rule(*, rule: Rule, col: ColumnType) -> None:
    """Refuse, before any data moves, a rule whose output cannot fit the column."""
    kind = rule.transformer
    where = f"masking rule {rule.key!r} ({kind} on {col.type_sql})"
    allowed = _ALLOWED_TYPES.get(kind)
    if allowed is not None and col.base_type not in allowed:
        raise MaskingError(f"{where}: {kind} cannot write a value of type {col.type_sql}")
    if kind == "email" and col.max_length is not None and col.max_length < EMAIL_LENGTH:
        raise MaskingError(
            f"{where}: masked e-mails are {EMAIL_LENGTH} characters, the column allows "
            f"{col.max_length}"
        )
    if kind == "phone":
        if col.max_length is not None and col.max_length < PHONE_LENGTH:
            raise MaskingError(
                f"{where}: masked phones are {PHONE_LENGTH} digits, the column allows "
                f"{col.max_length}"
            )
        if col.numeric_digits is not None and col.numeric_digits < PHONE_LENGTH:
            raise MaskingError(f"{where}: masked phones need {PHONE_LENGTH} integer digits")
    if kind == "hash" and col.max_length is not None and col.max_length < HASH_MIN_LENGTH:
        raise MaskingError(
            f"{where}: hashes need at least {HASH_MIN_LENGTH} characters, the column allows "
            f"{col.max_length}"
        )
    if (kind == "null" or (kind == "fixed" and rule.value is None)) and col.not_null:
        raise MaskingError(f"{where}: the column is NOT NULL")
    fixed_length = len(rule.value) if kind == "fixed" and rule.value is not None else 0
    if col.max_length is not None and fixed_length > col.max_length:
        raise MaskingError(
            f"{where}: the fixed value has {fixed_length} characters, the column allows "
            f"{col.max_length}"
        )
    if kind in NON_INJECTIVE and col.unique_alone:
        raise MaskingError(
            f"{where}: the column is unique but {kind} can give equal values for different "
            "inputs; use email or hash"
        )


def looks_personal(column: str) -> bool:
    lowered = column.lower()
    return any(hint in lowered for hint in PERSONAL_HINTS)


def unescape_field(field: bytes) -> bytes:
    """Decode one COPY text field (not ``\\N``) into the value's bytes."""
    if b"\\" not in field:
        return field

    def one(match: re.Match[bytes]) -> bytes:
        seq = match.group(1)
        if seq[:1] == b"x" and len(seq) > 1:
            return bytes([int(seq[1:], 16)])
        if seq[:1].isdigit() and seq[:1] not in (b"8", b"9"):
            return bytes([int(seq, 8) & 0xFF])
        return _COPY_ESCAPES.get(seq, seq)

    return _ESCAPE_RE.sub(one, field)


def escape_field(value: bytes) -> bytes:
    """Encode a value's bytes as one COPY text field."""
    return (
        value.replace(b"\\", b"\\\\")
        .replace(b"\t", b"\\t")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
    )


FieldTransform = Callable[[bytes], bytes]


class Masker:
    """Transformers keyed with one per-clone secret. Thread-safe (caches are plain
    dicts; a lost race only recomputes the same value)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the masking key must have at least 16 bytes")
        # One sub-key per kind: a hash column never reveals an e-mail's masked form.
        self._keys = {
            kind: hmac.digest(key, b"portal-mask:" + kind.encode(), "sha256")
            for kind in ("email", "name", "phone", "hash")
        }
        self._caches: dict[str, dict[bytes, bytes]] = {kind: {} for kind in self._keys}

        self._hmacs = {kind: _Hmac(k) for kind, k in self._keys.items()}

    def hmac_blocks(self, kind: str) -> tuple[bytes, bytes]:
        """(sub-key xor ipad, sub-key xor opad) of one kind: what a transformer running
        elsewhere (SQL on the source's server) needs. Secret, like the key."""
        return self._hmacs[kind].blocks

    # Value-level API: str in, str out, None is NULL.
    def mask(
        self, *, rule: Rule | str, value: str | None, col: ColumnType | None = None
    ) -> str | None:
        """``rule``: a rule, or a transformer name (its rule with default options)."""
        full_rule = rule if isinstance(rule, Rule) else _bare_rule(rule)
        field = NULL_FIELD if value is None else escape_field(value.encode())
        out = self.field_transform(rule=full_rule, col=col or ColumnType("text", "text"))(field)
        return None if out == NULL_FIELD else unescape_field(out).decode()

    def field_transform(self, *, rule: Rule, col: ColumnType) -> FieldTransform:
        """A function from one COPY text field to its masked field."""
        kind = rule.transformer
        if kind == "keep":
            return _identity
        if kind == "null":
            return lambda field: NULL_FIELD
        if kind == "fixed":
            out = NULL_FIELD if rule.value is None else escape_field(rule.value.encode())
            return lambda field: out
        if kind == "redact":
            marker = REDACTED[: col.max_length] if col.max_length else REDACTED
            redacted = marker.encode()
            return lambda field: NULL_FIELD if field == NULL_FIELD else redacted
        make: Callable[[bytes], bytes] = self._make_email
        if kind == "name":
            make = self._name_maker(col.max_length)
        elif kind == "phone":
            make = self._make_phone
        elif kind == "hash":
            make = self._hash_maker(col)
        # Share the cache across columns only when the output does not depend on the
        # column (a name truncated to varchar(8), a hash as uuid, ... get their own).
        shared = (kind in ("email", "phone") or (kind == "name" and not col.max_length)) or (
            kind == "hash" and col.base_type in TEXT_TYPES and (col.max_length or 64) >= 64
        )
        cache = self._caches[kind] if shared else {}
        pad_insensitive = col.base_type == "bpchar"  # char(n) compares without trailing blanks

        def transform(field: bytes) -> bytes:
            if field == NULL_FIELD:
                return field
            out = cache.get(field)
            if out is None:
                raw = unescape_field(field) if b"\\" in field else field
                if pad_insensitive:
                    raw = raw.rstrip(b" ")
                out = make(raw)
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                cache[field] = out
            return out

        if pad_insensitive:
            # The cache is keyed by the escaped field, so "a " and "a" must not share it
            # unless stripped first: strip before the lookup.
            def transform_bpchar(field: bytes) -> bytes:
                return transform(field if field == NULL_FIELD else field.rstrip(b" "))

            return transform_bpchar
        return transform

    # The makers inline the HMAC (two hash-state copies) instead of calling digest():
    # they run once per distinct value, millions of times on big tables.

    def _make_email(self, raw: bytes) -> bytes:
        inner, outer = self._hmacs["email"].states()
        i = inner.copy()
        i.update(raw)
        o = outer.copy()
        o.update(i.digest())
        return b"u_" + o.hexdigest()[:EMAIL_HEX].encode() + _EMAIL_SUFFIX

    def _make_phone(self, raw: bytes) -> bytes:
        inner, outer = self._hmacs["phone"].states()
        i = inner.copy()
        i.update(raw)
        o = outer.copy()
        o.update(i.digest())
        number = int.from_bytes(o.digest()[:8], "big") % _PHONE_MODULUS
        return b"%s%0*d" % (_PHONE_PREFIX_B, _PHONE_DIGITS, number)

    def _name_maker(self, max_length: int | None) -> Callable[[bytes], bytes]:
        inner, outer = self._hmacs["name"].states()
        names = [[n.encode() for n in row] for row in name_table(max_length)]
        n_first, n_last = len(FIRST_NAMES), len(LAST_NAMES)

        def make(raw: bytes) -> bytes:
            i = inner.copy()
            i.update(raw)
            o = outer.copy()
            o.update(i.digest())
            d = o.digest()
            return names[int.from_bytes(d[:4], "big") % n_first][
                int.from_bytes(d[4:8], "big") % n_last
            ]

        return make

    def _hash_maker(self, col: ColumnType) -> Callable[[bytes], bytes]:
        hmac_ = self._hmacs["hash"]
        if col.base_type == "uuid":

            def make_uuid(raw: bytes) -> bytes:
                h = hmac_(raw)[:16].hex()
                return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()

            return make_uuid
        if col.base_type == "bytea":
            # bytea's hex input format, with the backslash escaped for COPY text.
            return lambda raw: b"\\\\x" + hmac_(raw).hex().encode()
        width = min(64, col.max_length or 64)
        inner, outer = hmac_.states()

        def make_hex(raw: bytes) -> bytes:
            i = inner.copy()
            i.update(raw)
            o = outer.copy()
            o.update(i.digest())
            return o.hexdigest()[:width].encode()

        return make_hex


def name_table(max_length: int | None) -> list[list[str]]:
    """Masked names by [first-name index][last-name index], cut to ``max_length``."""
    return [
        [f"{first} {last}"[:max_length] if max_length else f"{first} {last}" for last in LAST_NAMES]
        for first in FIRST_NAMES
    ]


class _Hmac:
    """HMAC-SHA256 with the key's inner and outer states computed once (RFC 2104).

    Same result as ``hmac.digest(key, msg, "sha256")``, about five times faster per
    call, which matters at millions of values.
    """

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\0") if len(key) <= 64 else hashlib.sha256(key).digest()
        block = block.ljust(64, b"\0")
        self.blocks = (bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block))
        self._inner = hashlib.sha256(self.blocks[0])
        self._outer = hashlib.sha256(self.blocks[1])

    def states(self) -> tuple[Any, Any]:
        return self._inner, self._outer

    def __call__(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _identity(field: bytes) -> bytes:
    return field


def _bare_rule(kind: str) -> Rule:
    if kind not in TRANSFORMERS or kind == "fixed":
        raise MaskingError(f"unknown transformer {kind!r}")
    return Rule(kind, "public", "t", "c", kind)


class RowMasker:
    """Masks rows of COPY text (``b"f1\\tf2\\n"``): only the masked fields are touched.

    ``collect`` (index -> set) records the distinct source fields of columns as they
    stream by, for the leak scan; a set stops growing at ``collect_limit`` and is
    then marked incomplete (``overflowed``), so memory stays bounded.
    """

    def __init__(
        self,
        *,
        transforms: Iterable[tuple[int, FieldTransform]],
        collect: Mapping[int, set[bytes]] | None = None,
        collect_limit: int = 2_000_000,
        width: int | None = None,
    ) -> None:
        collect = collect or {}
        self.transforms = [
            (i, f, collect.get(i)) for i, f in transforms if f is not _identity or i in collect
        ]
        self.limit = collect_limit
        self.overflowed: set[int] = set()
        # With the row's column count (``width``) known and every touched field before
        # the last one, split only up to the last touched field: the rest of the row,
        # newline included, stays one untouched piece (the driver puts masked columns
        # first in its COPY column lists for this).
        last = max((i for i, _, _ in self.transforms), default=-1)
        self.maxsplit = last + 1 if width is not None and last + 1 < width else -1

    def __call__(self, line: bytes) -> bytes:
        whole = self.maxsplit < 0
        fields = line[:-1].split(b"\t") if whole else line.split(b"\t", self.maxsplit)
        for index, transform, seen in self.transforms:
            field = fields[index]
            if seen is not None:
                if len(seen) < self.limit:
                    seen.add(field)
                else:
                    self.overflowed.add(index)
            fields[index] = transform(field)
        return b"\t".join(fields) + b"\n" if whole else b"\t".join(fields)


def could_produce(*, rule: Rule, value: str, col: ColumnType) -> bool:
    """True if ``value`` has the shape of this transformer's output.

    Used by the leak scan: a target value equal to a source value is only a leak
    if masking could not have produced it (a source that holds already-masked
    values, e.g. a clone of a clone, or a real person called "Ada Weber" in the
    source while a masked row got that plausible name by chance, is not a leak).
    """
    kind = rule.transformer
    if kind == "email":
        return _EMAIL_RE.fullmatch(value) is not None
    if kind == "phone":
        return _PHONE_RE.fullmatch(value) is not None
    if kind == "hash":
        return _HEX_RE.fullmatch(value) is not None
    if kind == "name":
        return value in name_outputs(col.max_length)
    if kind == "redact":
        return value == (REDACTED[: col.max_length] if col.max_length else REDACTED)
    if kind == "fixed":
        return value == rule.value
    return kind == "keep"


_NAME_OUTPUTS: dict[int | None, frozenset[str]] = {}


def name_outputs(max_length: int | None) -> frozenset[str]:
    """Every value the name transformer can give a column of this length."""
    names = _NAME_OUTPUTS.get(max_length)
    if names is None:
        names = frozenset(
            f"{first} {last}"[:max_length] if max_length else f"{first} {last}"
            for first in FIRST_NAMES
            for last in LAST_NAMES
        )
        _NAME_OUTPUTS[max_length] = names
    return names


def key_fingerprint(key: bytes) -> str:
    """A short, non-reversible label for a key (to tell clones apart in logs)."""
    return hashlib.sha256(b"portal-mask-id:" + key).hexdigest()[:8]
