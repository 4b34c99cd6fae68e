"""Masking as SQL run by the source's server: ``COPY (SELECT masked ...) TO STDOUT``.

The same transformers as ``masking.Masker`` (the tests compare both on many values),
written with PostgreSQL's built-in ``sha256()`` so nothing is installed on the source:
``hmac(k, m) = sha256((k xor opad) || sha256((k xor ipad) || m))``. The source's
backends then do the hashing, on as many cores as tables copy at once, and only
masked values ever leave the source. The HMAC key blocks reach the server as bound
parameters of ``set_config`` (``session``), never in a statement's text.

The input of a transformer is the value's text in UTF-8 (``col::text``), which is
what the Python transformer gets from COPY's text format on a UTF-8 session; the
caller uses this module only on such sessions.
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
                sql.SQL(
                    "sha256(k.{o} || sha256(k.{i} || convert_to({ref}::text, 'UTF8'))) AS {d}"
                ).format(
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
    """Bytes ``offset`` to ``offset + 3`` of a digest, big-endian, as a bigint."""
    return sql.SQL("(('x' || encode(substr({}, {}, 4), 'hex'))::bit(32)::bigint)").format(
        d, sql.Literal(offset + 1)
    )


def _from_digest(*, rule: Rule, col: ColumnType, d: sql.Composable) -> sql.Composable:
    kind = rule.transformer
    if kind == "email":
        return sql.SQL("'u_' || left(encode({}, 'hex'), {}) || {}").format(
            d, sql.Literal(EMAIL_HEX), sql.Literal("@" + EMAIL_DOMAIN)
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
        width = min(64, col.max_length or 64)
        return sql.SQL("left(encode({}, 'hex'), {})").format(d, sql.Literal(width))
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
