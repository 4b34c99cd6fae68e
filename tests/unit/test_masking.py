"""Masking transformers, rule parsing and checks (no database)."""

from __future__ import annotations

import hmac
import re

import pytest
from pytest_django.fixtures import Settings

from pipelines.dbclone import masking
from pipelines.dbclone.logical import LogicalCloneSpec, clone_database_name, clone_role_name
from pipelines.dbclone.masking import (
    ColumnType,
    Masker,
    MaskingError,
    RowMasker,
    Rule,
    check_rule,
    could_produce,
    escape_field,
    looks_personal,
    parse_rules,
    unescape_field,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
TEXT = ColumnType("text", "text")


def rule(kind: str, value: str | None = None, column: str = "c") -> Rule:
    return Rule(f"t.{column}", "public", "t", column, kind, value)


def varchar(n: int, **kw: bool) -> ColumnType:
    return ColumnType(f"character varying({n})", "varchar", max_length=n, **kw)


# --- transformers -----------------------------------------------------------------------


def test_email_is_valid_looking_and_keyed_hmac() -> None:
    out = Masker(KEY).mask(rule="email", value="Alice.Smith@corp.example.com")
    assert out is not None
    assert re.fullmatch(r"u_[0-9a-f]{16}@example\.invalid", out)
    # It is the HMAC-SHA256 (with the per-kind sub-key) of the value, truncated.
    sub = hmac.digest(KEY, b"portal-mask:email", "sha256")
    expected = hmac.digest(sub, b"Alice.Smith@corp.example.com", "sha256").hex()[:16]
    assert out == f"u_{expected}@example.invalid"
    assert "alice" not in out.lower()


def test_fast_hmac_equals_the_standard_library() -> None:
    for key in (b"k" * 16, b"x" * 64, b"y" * 100):
        fast = masking._Hmac(key)
        for message in (b"", b"a", b"x" * 1000):
            assert fast(message) == hmac.digest(key, message, "sha256")


@pytest.mark.parametrize("kind", ["email", "name", "phone", "hash"])
def test_deterministic_same_key_same_output(kind: str) -> None:
    a, b = Masker(KEY), Masker(KEY)
    values = [f"person{i}@x.org" for i in range(50)]
    assert [a.mask(rule=kind, value=v) for v in values] == [
        b.mask(rule=kind, value=v) for v in values
    ]
    # Twice through the same masker (second time from its cache) is stable too.
    assert [a.mask(rule=kind, value=v) for v in values] == [
        b.mask(rule=kind, value=v) for v in values
    ]


@pytest.mark.parametrize("kind", ["email", "phone", "hash"])
def test_different_key_different_output(kind: str) -> None:
    a, b = Masker(KEY), Masker(OTHER_KEY)
    values = [f"v{i}" for i in range(20)]
    assert all(a.mask(rule=kind, value=v) != b.mask(rule=kind, value=v) for v in values)


def test_names_differ_between_keys_for_most_values() -> None:
    a, b = Masker(KEY), Masker(OTHER_KEY)
    values = [f"Person {i}" for i in range(200)]
    same = sum(a.mask(rule="name", value=v) == b.mask(rule="name", value=v) for v in values)
    assert same < 10  # 4096 combinations: a few coincidences at most


def test_name_is_plausible_and_from_the_lists() -> None:
    out = Masker(KEY).mask(rule="name", value="Zebulon Q. Realperson")
    assert out is not None
    first, last = out.split(" ")
    assert first in masking.FIRST_NAMES and last in masking.LAST_NAMES


def test_phone_is_digit_shaped() -> None:
    m = Masker(KEY)
    outs = {m.mask(rule="phone", value=f"+44 20 7946 {i:04d}") for i in range(100)}
    assert all(o is not None and re.fullmatch(r"555\d{7}", o) for o in outs)
    assert len(outs) > 95


def test_hash_is_hex_of_the_hmac() -> None:
    out = Masker(KEY).mask(rule="hash", value="secret-token")
    sub = hmac.digest(KEY, b"portal-mask:hash", "sha256")
    assert out == hmac.digest(sub, b"secret-token", "sha256").hex()


def test_hash_shapes_for_uuid_bytea_and_short_varchar() -> None:
    m = Masker(KEY)
    as_uuid = m.mask(rule=rule("hash"), value="x", col=ColumnType("uuid", "uuid"))
    assert as_uuid and re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", as_uuid)
    as_bytea = m.mask(rule=rule("hash"), value="x", col=ColumnType("bytea", "bytea"))
    assert as_bytea and re.fullmatch(r"\\x[0-9a-f]{64}", as_bytea)
    short = m.mask(rule=rule("hash"), value="x", col=varchar(20))
    full = m.mask(rule=rule("hash"), value="x", col=TEXT)
    assert short and full and len(short) == 20 and full.startswith(short)


def test_null_fixed_redact_keep() -> None:
    m = Masker(KEY)
    assert m.mask(rule="null", value="anything") is None
    assert m.mask(rule=rule("fixed", "4111 1111"), value="1234") == "4111 1111"
    assert m.mask(rule=rule("fixed", "a\tb\\c\nd"), value="x") == "a\tb\\c\nd"  # escaped for COPY
    assert m.mask(rule="redact", value="123 Main Street") == masking.REDACTED
    assert m.mask(rule=rule("redact"), value="123 Main Street", col=varchar(4)) == "REDA"
    assert m.mask(rule="keep", value="as is") == "as is"


@pytest.mark.parametrize("kind", ["email", "name", "phone", "hash", "null", "redact", "keep"])
def test_null_stays_null(kind: str) -> None:
    assert Masker(KEY).mask(rule=kind, value=None) is None


def test_fixed_replaces_null_too() -> None:
    m = Masker(KEY)
    assert m.mask(rule=rule("fixed", "n/a"), value=None) == "n/a"
    assert m.mask(rule=rule("fixed", None), value="x") is None


def test_join_consistency_across_columns_and_tables() -> None:
    m = Masker(KEY)
    users = Rule("users.email", "public", "users", "email", "email")
    orders = Rule("orders.customer_email", "public", "orders", "customer_email", "email")
    emails = [f"user{i}@corp.example" for i in range(100)]
    on_users = [m.mask(rule=users, value=e, col=varchar(120)) for e in emails]
    # A different masker with the same key (another clone worker) and a different column.
    on_orders = [Masker(KEY).mask(rule=orders, value=e, col=TEXT) for e in reversed(emails)]
    assert on_users == list(reversed(on_orders))


def test_kinds_are_domain_separated() -> None:
    m = Masker(KEY)
    email = m.mask(rule="email", value="a@b.c")
    digest = m.mask(rule="hash", value="a@b.c")
    assert email and digest and email[2:18] not in digest


def test_unique_inputs_give_unique_emails_and_hashes() -> None:
    m = Masker(KEY)
    values = [f"user{i}@example.com" for i in range(20_000)]
    assert len({m.mask(rule="email", value=v) for v in values}) == len(values)
    assert len({m.mask(rule="hash", value=v) for v in values}) == len(values)


def test_bpchar_ignores_padding_like_postgres() -> None:
    m = Masker(KEY)
    char = ColumnType("character(40)", "bpchar", max_length=40)
    assert m.mask(rule=rule("email"), value="a@b.c" + " " * 35, col=char) == m.mask(
        rule="email", value="a@b.c"
    )


def test_escaped_fields_are_masked_by_value() -> None:
    m = Masker(KEY)
    value = "tab\there\\back"
    field = escape_field(value.encode())
    assert unescape_field(field) == value.encode()
    transform = m.field_transform(rule=rule("email"), col=TEXT)
    assert transform(field) == m.mask(rule="email", value=value).encode()  # type: ignore[union-attr]


def test_unescape_handles_all_copy_escapes() -> None:
    assert unescape_field(rb"a\tb\nc\\d\r\b\f\v\101\x42") == b"a\tb\nc\\d\r\b\f\vAB"


def test_row_masker_touches_only_masked_fields_and_collects_sources() -> None:
    m = Masker(KEY)
    seen: set[bytes] = set()
    rows = RowMasker(
        transforms=[(1, m.field_transform(rule=rule("email"), col=TEXT))], collect={1: seen}
    )
    out = rows(b"42\tbob@x.org\t\\N\tkept\n")
    fields = out[:-1].split(b"\t")
    assert out.endswith(b"\n") and len(fields) == 4
    assert fields[0] == b"42" and fields[2] == b"\\N" and fields[3] == b"kept"
    assert fields[1] == m.mask(rule="email", value="bob@x.org").encode()  # type: ignore[union-attr]
    assert seen == {b"bob@x.org"}


def test_row_masker_collection_is_bounded() -> None:
    m = Masker(KEY)
    seen: set[bytes] = set()
    rows = RowMasker(
        transforms=[(0, m.field_transform(rule=rule("hash"), col=TEXT))],
        collect={0: seen},
        collect_limit=3,
    )
    for i in range(10):
        rows(b"v%d\n" % i)
    assert len(seen) == 3 and rows.overflowed == {0}


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(masking, "CACHE_LIMIT", 10)
    m = Masker(KEY)
    outs = [m.mask(rule="email", value=f"v{i}") for i in range(50)]
    assert len(m._caches["email"]) <= 10
    assert outs == [Masker(KEY).mask(rule="email", value=f"v{i}") for i in range(50)]


# --- rules and checks -------------------------------------------------------------------


def test_parse_rules() -> None:
    rules = parse_rules(
        {
            "users.email": "email",
            "billing.cards.number": {"fixed": 4111},
            "users.active": {"fixed": True},
            "users.note": {"fixed": None},
        }
    )
    assert [(r.schema, r.table, r.column, r.transformer, r.value) for r in rules] == [
        ("public", "users", "email", "email", None),
        ("billing", "cards", "number", "fixed", "4111"),
        ("public", "users", "active", "fixed", "true"),
        ("public", "users", "note", "fixed", None),
    ]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"email": "email"}, "expected 'table.column'"),
        ({"a.b.c.d": "email"}, "expected 'table.column'"),
        ({"users.email": "scramble"}, "unknown transformer 'scramble'"),
        ({"users.email": "fixed"}, "unknown transformer 'fixed'"),
        ({"users.email": {"fixed": "x", "other": 1}}, "must be {fixed: VALUE}"),
        ({"users.email": "email", "public.users.email": "hash"}, "same column"),
    ],
)
def test_parse_rules_errors_name_the_rule(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(MaskingError, match=re.escape(message)) as info:
        parse_rules(mapping)
    assert repr(list(mapping)[-1]) in str(info.value)


def test_length_limits_are_checked_before_copying() -> None:
    with pytest.raises(MaskingError, match="e-mails are 34 characters, the column allows 20"):
        check_rule(rule=rule("email"), col=varchar(20))
    check_rule(rule=rule("email"), col=varchar(masking.EMAIL_LENGTH))
    with pytest.raises(MaskingError, match="phones are 10 digits"):
        check_rule(rule=rule("phone"), col=varchar(8))
    with pytest.raises(MaskingError, match="at least 16"):
        check_rule(rule=rule("hash"), col=varchar(12))
    with pytest.raises(MaskingError, match="fixed value has 5 characters"):
        check_rule(rule=rule("fixed", "12345"), col=varchar(4))
    # Truncating transformers fit any length.
    check_rule(rule=rule("name"), col=varchar(3))
    check_rule(rule=rule("redact"), col=varchar(2))


def test_masked_values_fit_their_columns() -> None:
    m = Masker(KEY)
    for n in (3, 8, 12):
        col = varchar(n)
        for kind in ("name", "redact"):
            out = m.mask(rule=rule(kind), value="Someone With A Long Name", col=col)
            assert out is not None and len(out) <= n
    assert len(m.mask(rule=rule("hash"), value="x", col=varchar(30)) or "") == 30


def test_type_checks() -> None:
    with pytest.raises(MaskingError, match="cannot write a value of type integer"):
        check_rule(rule=rule("email"), col=ColumnType("integer", "int4"))
    with pytest.raises(MaskingError, match="cannot write"):
        check_rule(rule=rule("phone"), col=ColumnType("integer", "int4"))  # 10 digits overflow int4
    check_rule(rule=rule("phone"), col=ColumnType("bigint", "int8"))
    with pytest.raises(MaskingError, match="integer digits"):
        check_rule(rule=rule("phone"), col=ColumnType("numeric(8,0)", "numeric", numeric_digits=8))
    with pytest.raises(MaskingError, match="NOT NULL"):
        check_rule(rule=rule("null"), col=ColumnType("text", "text", not_null=True))
    with pytest.raises(MaskingError, match="unique"):
        check_rule(rule=rule("name"), col=ColumnType("text", "text", unique_alone=True))
    check_rule(rule=rule("email"), col=ColumnType("text", "text", unique_alone=True))
    check_rule(
        rule=rule("fixed", "1"), col=ColumnType("integer", "int4")
    )  # cast checked by the driver


def test_could_produce_recognises_outputs_only() -> None:
    m = Masker(KEY)
    for kind, real in (
        ("email", "jane@corp.com"),
        ("phone", "+1 212 555 0100"),
        ("hash", "hunter2"),
        ("name", "Jane Realname"),
    ):
        produced = m.mask(rule=kind, value=real)
        assert produced is not None
        assert could_produce(rule=rule(kind), value=produced, col=TEXT)
        assert not could_produce(rule=rule(kind), value=real, col=TEXT)


def test_personal_data_hints() -> None:
    for column in (
        "email",
        "first_name",
        "PhoneNumber",
        "home_address",
        "password_hash",
        "api_token",
        "ssn",
        "card_number",
        "iban",
    ):
        assert looks_personal(column), column
    for column in ("id", "total", "created_at", "status", "quantity"):
        assert not looks_personal(column), column


# --- names and spec ---------------------------------------------------------------------


def test_clone_names_are_valid_identifiers() -> None:
    assert (
        clone_database_name(account="acme-demo", service="orders", run_id=42)
        == "acme_demo_orders_42"
    )
    uuid_run = clone_database_name(
        account="Acme", service="Web.API", run_id="3F2A9C1E-0000-4000-8000-000000000000"
    )
    assert uuid_run == "acme_web_api_3f2a9c1e"
    long_a = clone_database_name(account="a" * 80, service="service", run_id=1)
    long_b = clone_database_name(account="a" * 79 + "b", service="service", run_id=1)
    for name in (long_a, long_b, clone_role_name(long_a)):
        assert len(name) <= 63 and re.fullmatch(r"[a-z_][a-z0-9_]*", name)
    assert long_a != long_b and long_a.endswith("_1")
    assert clone_database_name(account="9lives", service="x", run_id=7).startswith("c_")


def test_spec_from_mapping() -> None:
    spec = LogicalCloneSpec.from_mapping(
        {
            "driver": "postgres_logical",
            "source": "PROD",
            "target": "QA",
            "jobs": 4,
            "masking": {"users.email": "email"},
            "masking_strict": True,
        }
    )
    assert (spec.source, spec.target, spec.jobs, spec.masking_strict) == ("PROD", "QA", 4, True)
    from pipelines.dbclone.logical import CloneError

    for bad in (
        {"source": "A"},
        {"source": "A", "target": "B", "jobs": 0},
        {"source": "A", "target": "B", "masking": ["x"]},
        {"source": "A", "target": "B", "colour": "red"},
    ):
        with pytest.raises(CloneError):
            LogicalCloneSpec.from_mapping(bad)


# --- connection settings (no database) ---------------------------------------------------


def test_connection_url_names_the_missing_variable(settings: Settings) -> None:
    from pipelines.clients import postgres as pg

    settings.PORTAL_CONNECTIONS = {}
    with pytest.raises(pg.ConnectionNotConfigured, match="PORTAL_CONNECTION_PROD_ORDERS"):
        pg.connection_url("prod_orders")
    settings.PORTAL_CONNECTIONS = {"PROD_ORDERS": "postgresql://u:pw@db:5432/orders"}
    assert pg.connection_url("prod_orders") == "postgresql://u:pw@db:5432/orders"
    for bad in ("../etc", "prod_orders\n", "", "1prod", "p" * 64):
        with pytest.raises(pg.ConnectionNotConfigured, match="invalid connection name"):
            pg.connection_url(bad)


def test_the_redactor_removes_passwords() -> None:
    from pipelines.redaction import Redactor

    text = (
        "could not connect with postgresql://admin:hunter2@db/x and "
        "host=db password='it\\'s secret' user=a, generated Zq9-secret"
    )
    clean = Redactor(["Zq9-secret"])(text)
    assert "hunter2" not in clean and "secret" not in clean and "Zq9" not in clean
    assert "postgresql://admin:[redacted]@db/x" in clean


def test_row_masker_partial_split_leaves_the_rest_untouched() -> None:
    m = Masker(KEY)
    email = m.field_transform(rule=rule("email"), col=TEXT)
    full = RowMasker(transforms=[(0, email)])
    partial = RowMasker(transforms=[(0, email)], width=3)
    assert partial.maxsplit == 1
    for line in (b"a@b.c\t1\tx\\ty\n", b"\\N\t2\t\\N\n", b"z@z.z\t\t\n"):
        assert partial(line) == full(line)
        assert partial(line).endswith(b"\n") and partial(line).count(b"\t") == 2
    # A masked last column needs the whole split (its field holds the newline).
    assert RowMasker(transforms=[(2, email)], width=3).maxsplit == -1
