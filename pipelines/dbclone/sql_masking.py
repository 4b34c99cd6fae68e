"""Masking as SQL run by the source's server: ``COPY (SELECT masked ...) TO STDOUT``.

The same transformers as ``masking.Masker`` (the tests compare both on many values),
written with PostgreSQL's built-in ``sha256()`` so nothing is installed on the source:
``hmac(k, m) = sha256((k xor opad) || sha256((k xor ipad) || m))``. The source's
backends then do the hashing, on as many cores as tables copy at once, and only
masked values ever leave the source. The HMAC key blocks (``session``) reach the
server as settings in the source psql's ``PGOPTIONS`` (``postgres.copy_table_binary``),
never in argv or in a statement's text.

The input of a transformer is the value's text in UTF-8 (``textsend(col::text)``:
the text's bytes in the session's client encoding, with no conversion on a UTF-8
server and session), which is what the Python transformer gets from COPY's text
format on a UTF-8 session; the caller uses this module only on such sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from pipelines.dbclone.clone_plan import DETERMINISTIC, TablePlan
from pipelines.dbclone.masking import (
    EMAIL_DOMAIN,
    EMAIL_HEX,
    FIRST_NAMES,
    LAST_NAMES,
    PHONE_LENGTH,
    PHONE_PREFIX,
    REDACTED,
    ColumnType,
    Masker,
    Rule,
    name_outputs,
)

SETTING_PREFIX = "portal_mask."
_PHONE_DIGITS = PHONE_LENGTH - len(PHONE_PREFIX)
_PHONE_MODULUS = 10**_PHONE_DIGITS


@dataclass(frozen=True)
class MaskedSelect:
    """A query giving a table's copied columns, masked; and the settings it reads."""

    query: sql.Composed
    session: dict[str, str] = field(repr=False)  # secret: HMAC key blocks, hex


def masked_select(*, plan: TablePlan, masker: Masker) -> MaskedSelect:
    """``SELECT`` of ``plan.columns`` in order, each masked column cast to its type."""
    rules = {rule.column: (rule, ctype) for rule, ctype in plan.rules}
    kinds = sorted({r.transformer for r, _ in plan.rules if r.transformer in DETERMINISTIC})
    session: dict[str, str] = {}
    keys: list[sql.Composable] = []
    for kind in kinds:
        inner, outer = masker.hmac_blocks(kind)
        for part, block in (("i", inner), ("o", outer)):
            setting = f"{SETTING_PREFIX}{kind}_{part}"
            session[setting] = block.hex()
            keys.append(
                sql.SQL("decode(current_setting({}), 'hex') AS {}").format(
                    sql.Literal(setting), sql.Identifier(f"{kind}_{part}")
                )
            )
    digests: list[sql.Composable] = []
    outputs: list[sql.Composable] = []
    for column in plan.columns:
        ref = sql.SQL("t.{}").format(sql.Identifier(column))
        ruled = rules.get(column)
        if ruled is None or ruled[0].transformer == "keep":
            outputs.append(ref)
            continue
        rule, ctype = ruled
        if rule.transformer in DETERMINISTIC:
            digest = sql.Identifier(f"d{len(digests)}")
            digests.append(
                sql.SQL("sha256(k.{o} || sha256(k.{i} || textsend({ref}::text))) AS {d}").format(
                    o=sql.Identifier(f"{rule.transformer}_o"),
                    i=sql.Identifier(f"{rule.transformer}_i"),
                    ref=ref,  # char(n)::text drops trailing blanks, as Python does
                    d=digest,
                )
            )
            expr = _from_digest(rule=rule, col=ctype, d=sql.SQL("h.{}").format(digest))
        else:
            expr = _constant(rule=rule, col=ctype, ref=ref)
        outputs.append(sql.SQL("CAST({} AS {})").format(expr, sql.SQL(ctype.type_sql)))
    table = sql.Identifier(plan.table.schema, plan.table.name)
    select = sql.SQL(", ").join(outputs)
    if not digests:
        query = sql.SQL("SELECT {} FROM ONLY {} AS t").format(select, table)
        return MaskedSelect(query=query, session=session)
    # The digests once per row (OFFSET 0 keeps the planner from copying each
    # digest into every expression that reads it); the key blocks decoded once.
    query = sql.SQL(
        "WITH k AS MATERIALIZED (SELECT {keys}) "
        "SELECT {select} FROM ONLY {table} AS t CROSS JOIN k "
        "CROSS JOIN LATERAL (SELECT {digests} OFFSET 0) AS h"
    ).format(
        keys=sql.SQL(", ").join(keys),
        select=select,
        table=table,
        digests=sql.SQL(", ").join(digests),
    )
    return MaskedSelect(query=query, session=session)


def _uint32(d: sql.Composable, offset: int) -> sql.Composed:
    """Bytes ``offset`` to ``offset + 3`` of a digest, big-endian, as a bigint (get_byte:
    a third of the cost of a hex round trip through bit(32))."""
    b = [sql.SQL("get_byte({}, {})").format(d, sql.Literal(offset + i)) for i in range(4)]
    return sql.SQL("(({}::bigint << 24) | ({} << 16) | ({} << 8) | {})").format(*b)


def _hex(d: sql.Composable, digits: int) -> sql.Composed:
    """The first ``digits`` hex digits of a digest (only the bytes needed are encoded)."""
    encoded = sql.SQL("encode(substr({}, 1, {}), 'hex')").format(d, sql.Literal((digits + 1) // 2))
    return (
        encoded if digits % 2 == 0 else sql.SQL("left({}, {})").format(encoded, sql.Literal(digits))
    )


def _from_digest(*, rule: Rule, col: ColumnType, d: sql.Composable) -> sql.Composable:
    kind = rule.transformer
    if kind == "email":
        return sql.SQL("'u_' || {} || {}").format(
            _hex(d, EMAIL_HEX), sql.Literal("@" + EMAIL_DOMAIN)
        )
    if kind == "phone":
        # The first 8 bytes as an unsigned 64-bit number, modulo 10^7, in bigint:
        # (hi * 2^32 + lo) mod m = ((hi mod m) * (2^32 mod m) + lo) mod m.
        m = _PHONE_MODULUS
        number = sql.SQL("((({hi} % {m}) * {w} + {lo}) % {m})").format(
            hi=_uint32(d, 0), lo=_uint32(d, 4), m=sql.Literal(m), w=sql.Literal(2**32 % m)
        )
        return sql.SQL("{} || lpad({}::text, {}, '0')").format(
            sql.Literal(PHONE_PREFIX), number, sql.Literal(_PHONE_DIGITS)
        )
    if kind == "name":
        # Two short lists rather than the product's 4,096 names: an array subscript
        # walks the array. left() cuts characters, like Python's slice.
        pick = sql.SQL("({}::text[])[1 + {} % {}]")
        full = sql.SQL("{} || ' ' || {}").format(
            pick.format(
                sql.Literal(list(FIRST_NAMES)), _uint32(d, 0), sql.Literal(len(FIRST_NAMES))
            ),
            pick.format(sql.Literal(list(LAST_NAMES)), _uint32(d, 4), sql.Literal(len(LAST_NAMES))),
        )
        if col.max_length:
            return sql.SQL("left({}, {})").format(full, sql.Literal(col.max_length))
        return full
    if kind == "hash":
        if col.base_type == "uuid":
            return sql.SQL("encode(substr({}, 1, 16), 'hex')::uuid").format(d)
        if col.base_type == "bytea":
            return d
        return _hex(d, min(64, col.max_length or 64))
    raise ValueError(f"{kind} is not a keyed transformer")


def _constant(*, rule: Rule, col: ColumnType, ref: sql.Composable) -> sql.Composable:
    kind = rule.transformer
    if kind == "null" or (kind == "fixed" and rule.value is None):
        return sql.SQL("NULL")
    if kind == "fixed":
        return sql.Literal(rule.value)
    if kind == "redact":
        marker = REDACTED[: col.max_length] if col.max_length else REDACTED
        return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE {} END").format(
            ref, sql.Literal(marker)
        )
    raise ValueError(f"{kind} is not a constant transformer")


HEX_DIGITS = "0123456789abcdef"
HASH_HEX_MIN, HASH_HEX_MAX = 16, 64  # masking._HEX_RE


def text_value(column: str) -> sql.Composed:
    """A column's text, compared byte by byte (a case-insensitive collation must not
    make a value look like a transformer's output)."""
    return sql.SQL('({}::text COLLATE "C")').format(sql.Identifier(column))


def producible(*, rule: Rule, col: ColumnType, value: sql.Composable) -> sql.Composable:
    """A condition true exactly when ``masking.could_produce`` accepts ``value`` (text,
    compared byte by byte: pass it ``COLLATE "C"``), for a keyed transformer.

    The shapes are tested on the value's bytes (``textsend``): each shape is ASCII only,
    so a value with any other character fails on its bytes as on its characters, and
    bytea's ``substr`` and ``ltrim`` compare bytes where text's walk characters (half the
    cost of the leak scan). Plain functions rather than a regular expression:
    PostgreSQL's regular expressions with bounded repetitions cost several microseconds
    a value.
    """
    kind = rule.transformer
    b = sql.SQL("textsend({})").format(value)

    def part(start: int, count: int | None = None) -> sql.Composable:
        if count is None:
            return sql.SQL("substr({}, {})").format(b, sql.Literal(start))
        return sql.SQL("substr({}, {}, {})").format(b, sql.Literal(start), sql.Literal(count))

    def only(data: sql.Composable, chars: str) -> sql.Composable:
        return sql.SQL("ltrim({}, {}) = ''::bytea").format(data, sql.Literal(chars.encode()))

    def size(data: sql.Composable) -> sql.Composable:
        return sql.SQL("octet_length({})").format(data)

    if kind == "email":
        suffix = ("@" + EMAIL_DOMAIN).encode()
        return sql.SQL(
            "({n} = {length} AND {head} = 'u_'::bytea AND {tail} = {suffix} AND {hex})"
        ).format(
            n=size(b),
            length=sql.Literal(2 + EMAIL_HEX + len(suffix)),
            head=part(1, 2),
            tail=part(3 + EMAIL_HEX),
            suffix=sql.Literal(suffix),
            hex=only(part(3, EMAIL_HEX), HEX_DIGITS),
        )
    if kind == "phone":
        prefix = PHONE_PREFIX.encode()
        return sql.SQL("({n} = {length} AND {head} = {prefix} AND {digits})").format(
            n=size(b),
            length=sql.Literal(PHONE_LENGTH),
            head=part(1, len(prefix)),
            prefix=sql.Literal(prefix),
            digits=only(part(len(prefix) + 1), "0123456789"),
        )
    if kind == "hash":
        lo, hi = sql.Literal(HASH_HEX_MIN), sql.Literal(HASH_HEX_MAX)
        plain = sql.SQL("({n} BETWEEN {lo} AND {hi} AND {hex})").format(
            n=size(b), lo=lo, hi=hi, hex=only(b, HEX_DIGITS)
        )
        bytea = sql.SQL("({head} = {bs} AND {n} - 2 BETWEEN {lo} AND {hi} AND {hex})").format(
            head=part(1, 2),
            bs=sql.Literal(b"\\x"),
            n=size(b),
            lo=lo,
            hi=hi,
            hex=only(part(3), HEX_DIGITS),
        )
        # 8-4-4-4-12 hex digits between dashes.
        groups = ((1, 8), (10, 4), (15, 4), (20, 4), (25, 12))
        uuid = sql.SQL("({n} = 36 AND {dashes} AND {hex})").format(
            n=size(b),
            dashes=sql.SQL(" AND ").join(
                sql.SQL("{} = '-'::bytea").format(part(i, 1)) for i in (9, 14, 19, 24)
            ),
            hex=only(sql.SQL(" || ").join(part(s, n) for s, n in groups), HEX_DIGITS),
        )
        return sql.SQL("({} OR {} OR {})").format(plain, bytea, uuid)
    if kind == "name":
        return sql.SQL("{} = ANY({}::text[])").format(
            value, sql.Literal(sorted(name_outputs(col.max_length)))
        )
    raise ValueError(f"{kind} is not a keyed transformer")
