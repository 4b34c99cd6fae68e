"""``manage.py bench_clone``: masked logical clone vs ``pg_dump -Fc | pg_restore`` and the
binary-COPY floor.

Builds a source database with ``--rows`` rows over users, orders, order_items and
payments (foreign keys, personal-data columns), times the three copies in the same
run, drops every database it created, and prints one JSON line last:
``{"rows", "masked_s", "raw_s", "floor_s", "rows_per_s", "ratio", "floor_ratio"}``
(ratio = masked / raw, floor_ratio = masked / floor). The floor is what no clone
can beat by much: schema (pre-data), binary ``COPY ... TO STDOUT`` piped into
``COPY ... FROM STDIN`` (the clone's relay: two ``psql``), two tables at a time, then
post-data. Each timed copy's line also gives the machine's CPU time while it ran
(from ``/proc/stat``, all processes: the servers' backends, ``psql``, this one) and the
share of the machine that was busy: when both are saturated, only CPU saved makes a
copy faster.

``--breakdown`` times the floor and one masked clone, then, alone on the quiet server,
each cost the masked clone adds to the floor's work (``_clone_costs``: the source's
masking, the leak scan, the indexes of masked values), and prints their sum over the
machine's cores, a lower bound of the masked clone (no schedule does better than every
core busy all the time); last line ``{"rows", "masked_s", "floor_s", "floor_ratio",
"floor_cpu_s", "masking_cpu_s", "leak_scan_cpu_s", "index_cpu_s", "cores", "bound_s",
"bound_ratio"}`` (bound_ratio = bound / floor).

``--golden N`` instead builds one golden copy of the source (masked, checked, frozen)
and times N account databases copied from it, each with its own role; last line:
``{"rows", "copies", "copy_s_median", "copy_s_max"}``.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.test.utils import override_settings

from pipelines.cli import machine_load
from pipelines.clients import postgres as pg
from pipelines.dbclone import golden
from pipelines.dbclone.clone_plan import plan_clone
from pipelines.dbclone.logical import (
    LogicalCloneSpec,
    clone_database_name,
    clone_logical,
    clone_role_name,
    drop_clone,
)
from pipelines.dbclone.masking import Masker, parse_rules
from pipelines.management.commands._clone_costs import (
    Timing,
    index_cpu_s,
    leak_scan_cpu_s,
    masking_cpu_s,
    timed,
)

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
FLOOR_JOBS = 2

# Share of the rows per table (sums to 1).
SHARES = {"users": 0.10, "orders": 0.30, "order_items": 0.40, "payments": 0.20}

MASKING = {
    "users.email": "email",
    "users.name": "name",
    "users.phone": "phone",
    "users.address": "redact",
    "orders.customer_email": "email",
    "payments.card_number": "hash",
}

SCHEMA = """
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email varchar(120) NOT NULL UNIQUE,
    name text NOT NULL,
    phone varchar(20),
    address text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    customer_email varchar(120) NOT NULL,
    total numeric(12, 2) NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE order_items (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    sku text NOT NULL,
    quantity integer NOT NULL,
    price numeric(10, 2) NOT NULL
);
CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    card_number varchar(19) NOT NULL,
    amount numeric(12, 2) NOT NULL,
    paid_at timestamptz NOT NULL
);
CREATE INDEX orders_user_id ON orders (user_id);
CREATE INDEX orders_customer_email ON orders (customer_email);
CREATE INDEX order_items_order_id ON order_items (order_id);
CREATE INDEX payments_order_id ON payments (order_id);
"""


def table_sizes(rows: int) -> dict[str, int]:
    sizes = {name: max(1, int(rows * share)) for name, share in SHARES.items()}
    sizes["order_items"] += rows - sum(sizes.values())  # exact total
    return sizes


def data_statements(rows: int) -> list[str]:
    """Server-side generation: INSERT ... SELECT over generate_series."""
    n = table_sizes(rows)
    u, o = n["users"], n["orders"]
    return [
        f"""INSERT INTO users (email, name, phone, address, created_at)
        SELECT 'person' || g || '@corp' || (g % 97) || '.example.com',
               (ARRAY['Alice','Bob','Chloe','Dmitri','Eve','Farid'])[1 + g % 6] || ' '
                 || (ARRAY['Martin','Okoye','Schulz','Tanaka','Lopez'])[1 + g % 5] || ' ' || g,
               '+1' || lpad((g * 7919 % 10000000000)::text, 10, '0'),
               g || ' Main Street, Springfield ' || (g % 1000),
               now() - (g % 1000) * interval '1 hour'
        FROM generate_series(1::bigint, {u}) g""",  # noqa: S608 - sizes are ints
        f"""INSERT INTO orders (user_id, customer_email, total, status, created_at)
        SELECT 1 + g % {u}, 'person' || (1 + g % {u}) || '@corp' || ((1 + g % {u}) % 97)
                 || '.example.com',
               (g % 50000) / 100.0, (ARRAY['new','paid','shipped','done'])[1 + g % 4],
               now() - (g % 5000) * interval '1 minute'
        FROM generate_series(1::bigint, {o}) g""",  # noqa: S608 - sizes are ints
        f"""INSERT INTO order_items (order_id, sku, quantity, price)
        SELECT 1 + g % {o}, 'SKU-' || (g % 5000), 1 + g % 5, (g % 10000) / 100.0
        FROM generate_series(1::bigint, {n["order_items"]}) g""",  # noqa: S608 - sizes are ints
        f"""INSERT INTO payments (order_id, card_number, amount, paid_at)
        SELECT 1 + g % {o}, '4' || lpad((g * 104729 % 1000000000000000)::text, 15, '0'),
               (g % 50000) / 100.0, now() - (g % 5000) * interval '1 minute'
        FROM generate_series(1::bigint, {n["payments"]}) g""",  # noqa: S608 - sizes are ints
        "VACUUM (FREEZE, ANALYZE)",  # both copies then read the same settled pages
    ]


@contextmanager
def bench_source(*, dsn: str, rows: int, say: Callable[[str], None]) -> Iterator[tuple[str, str]]:
    """A new source database of ``rows`` rows, dropped at the end: (its tag, its URL)."""
    tag = secrets.token_hex(4)
    source_db = f"bench_src_{tag}"
    pg.execute(dsn, f'CREATE DATABASE "{source_db}"')
    try:
        t0 = time.monotonic()
        source_url = pg.with_dbname(dsn, source_db)
        pg.execute(source_url, [SCHEMA, *data_statements(rows)])
        say(f"source {source_db}: {rows} rows generated in {time.monotonic() - t0:.1f}s")
        yield tag, source_url
    finally:
        pg.execute(dsn, f'DROP DATABASE IF EXISTS "{source_db}" WITH (FORCE)')


def run_benchmark(
    *,
    rows: int,
    jobs: int,
    dsn: str,
    log: Callable[[str], None] | None = None,
    repeat: int = 1,
) -> dict[str, Any]:
    """Build the source, time both copies (``repeat`` times, alternating, keeping the
    fastest of each: the machine may be shared), clean up; return the figures."""
    say = log or (lambda _: None)
    raw_times: list[Timing] = []
    floor_times: list[Timing] = []
    masked_times: list[Timing] = []
    with bench_source(dsn=dsn, rows=rows, say=say) as (tag, source_url):
        for attempt in range(1, repeat + 1):
            raw_times.append(
                _time_raw(dsn=dsn, source_url=source_url, database=f"bench_raw_{tag}_{attempt}")
            )
            say(f"[{attempt}/{repeat}] pg_dump -Fc | pg_restore: {raw_times[-1]}")
            floor_times.append(
                _time_floor(
                    dsn=dsn,
                    source_url=source_url,
                    rows=rows,
                    database=f"bench_floor_{tag}_{attempt}",
                )
            )
            say(f"[{attempt}/{repeat}] binary COPY floor: {floor_times[-1]}")
            masked_times.append(
                _time_masked(
                    dsn=dsn,
                    source_url=source_url,
                    rows=rows,
                    jobs=jobs,
                    run_id=f"{tag}{attempt}",
                    say=say,
                )
            )
            say(f"[{attempt}/{repeat}] masked clone: {masked_times[-1]}")
    masked, raw, floor = (
        min(times, key=lambda t: t.seconds) for times in (masked_times, raw_times, floor_times)
    )
    say(f"fastest of each: masked clone {masked}; pg_dump | pg_restore {raw}; floor {floor}")
    masked_s, raw_s, floor_s = masked.seconds, raw.seconds, floor.seconds
    return {
        "rows": rows,
        "masked_s": round(masked_s, 3),
        "raw_s": round(raw_s, 3),
        "floor_s": round(floor_s, 3),
        "rows_per_s": round(rows / masked_s),
        "ratio": round(masked_s / raw_s, 3),
        "floor_ratio": round(masked_s / floor_s, 3),
    }


def _time_raw(*, dsn: str, source_url: str, database: str) -> Timing:
    pg.execute(dsn, f'CREATE DATABASE "{database}"')
    try:
        with timed() as timing:
            pg.dump_restore_pipe(source_url, pg.with_dbname(dsn, database))
        return timing
    finally:
        pg.execute(dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _time_floor(*, dsn: str, source_url: str, rows: int, database: str) -> Timing:
    """Schema, then binary COPY relayed table by table (two at a time), then post-data."""
    target_url = pg.with_dbname(dsn, database)
    pg.execute(dsn, f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp, timed() as timing:
            archive = Path(tmp) / "schema.dump"
            pg.dump_schema(url=source_url, path=archive)
            pg.restore_section(url=target_url, path=archive, section="pre-data", role=None)
            with pg.connect(source_url, autocommit=True) as conn:
                tables = [t for t in pg.list_tables(conn) if t.kind == "r"]

            def relay(table: pg.TableInfo) -> int:  # the clone's own relay, unmasked
                return pg.copy_table_binary(
                    source_url=source_url,
                    target_url=target_url,
                    schema=table.schema,
                    table=table.name,
                    columns=[c.name for c in table.columns if not c.generated],
                )

            with ThreadPoolExecutor(max_workers=FLOOR_JOBS) as pool:
                copied = sum(pool.map(relay, sorted(tables, key=lambda t: -t.size)))
            pg.restore_section(
                url=target_url, path=archive, section="post-data", role=None, jobs=FLOOR_JOBS
            )
        if copied != rows:
            raise RuntimeError(f"the floor copy holds {copied} rows, expected {rows}")
        return timing
    finally:
        pg.execute(dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _time_masked(
    *,
    dsn: str,
    source_url: str,
    rows: int,
    jobs: int,
    run_id: str,
    say: Callable[[str], None],
    then: Callable[[str], None] | None = None,
) -> Timing:
    """Time one masked clone; ``then`` gets the clone's URL before it is dropped."""
    spec = LogicalCloneSpec(source="BENCH_SRC", target="BENCH_TGT", masking=MASKING, jobs=jobs)
    clone_db = clone_database_name(account="bench", service="clone", run_id=run_id)
    # The benchmark's two connections, for this process only.
    connections = {**settings.PORTAL_CONNECTIONS, "BENCH_SRC": source_url, "BENCH_TGT": dsn}
    try:
        with override_settings(PORTAL_CONNECTIONS=connections), timed() as timing:
            clone = clone_logical(
                spec=spec,
                account="bench",
                service="clone",
                run_id=run_id,
                log=say,
                add_secret=lambda _: None,
            )
        copied = sum(clone.table_counts.values())
        if copied != rows:
            raise RuntimeError(f"the clone holds {copied} rows, expected {rows}")
        if then is not None:
            then(pg.with_dbname(dsn, clone_db))
        return timing
    finally:
        drop_clone(url=dsn, database=clone_db, role=clone_role_name(clone_db))


def _measure_costs(*, source_url: str, clone_url: str, repeat: int) -> dict[str, float]:
    """Each cost a masked clone adds to the floor's work, timed alone (fastest of at
    least three): the source's masking, the leak scan, the indexes of masked values."""
    tries = max(3, repeat)
    with (
        pg.connect(source_url, autocommit=True) as source,
        pg.connect(clone_url, autocommit=True) as clone,
    ):
        plan = plan_clone(tables=pg.list_tables(source), rules=parse_rules(MASKING), strict=False)
        masker = Masker(secrets.token_bytes(32))
        return {
            "masking": masking_cpu_s(source=source, plan=plan, masker=masker, repeat=tries),
            "leak_scan": leak_scan_cpu_s(source=source, clone=clone, plan=plan, repeat=tries),
            "index": index_cpu_s(source=source, clone=clone, plan=plan, repeat=tries),
        }


def run_bound_benchmark(
    *,
    rows: int,
    jobs: int,
    dsn: str,
    log: Callable[[str], None] | None = None,
    repeat: int = 1,
) -> dict[str, Any]:
    """The floor and one masked clone, then each cost the masked clone adds to the
    floor's work, timed alone; their sum over the machine's cores bounds the masked
    clone from below (no schedule packs work tighter than every core busy)."""
    say = log or (lambda _: None)
    floors: list[Timing] = []
    with bench_source(dsn=dsn, rows=rows, say=say) as (tag, source_url):
        costs: dict[str, float] = {}
        for attempt in range(1, repeat + 1):
            database = f"bench_floor_{tag}_{attempt}"
            floors.append(_time_floor(dsn=dsn, source_url=source_url, rows=rows, database=database))
            say(f"[{attempt}/{repeat}] binary COPY floor: {floors[-1]}")
        masked = _time_masked(
            dsn=dsn,
            source_url=source_url,
            rows=rows,
            jobs=jobs,
            run_id=f"{tag}b",
            say=say,
            then=lambda clone_url: costs.update(
                _measure_costs(source_url=source_url, clone_url=clone_url, repeat=repeat)
            ),
        )
        say(f"masked clone: {masked}")
        say(
            "alone: masking {masking:.2f} CPU-s, leak scan {leak_scan:.2f} CPU-s, "
            "indexes of masked values {index:.2f} CPU-s".format(**costs)
        )
    floor = min(floors, key=lambda t: t.seconds)
    floor_cpu = min(t.cpu_s if t.cpu_s is not None else t.seconds for t in floors)
    cores = os.cpu_count() or 1
    bound_s = (floor_cpu + sum(costs.values())) / cores
    return {
        "rows": rows,
        "masked_s": round(masked.seconds, 3),
        "floor_s": round(floor.seconds, 3),
        "floor_ratio": round(masked.seconds / floor.seconds, 3),
        "floor_cpu_s": round(floor_cpu, 3),
        "masking_cpu_s": round(costs["masking"], 3),
        "leak_scan_cpu_s": round(costs["leak_scan"], 3),
        "index_cpu_s": round(costs["index"], 3),
        "cores": cores,
        "bound_s": round(bound_s, 3),
        "bound_ratio": round(bound_s / floor.seconds, 3),
    }


def run_golden_benchmark(
    *,
    rows: int,
    copies: int,
    jobs: int,
    dsn: str,
    strategy: pg.CopyStrategy,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build the source and one golden copy of it, time ``copies`` databases made from
    it (one after another), drop everything; return the figures."""
    say = log or (lambda _: None)
    with bench_source(dsn=dsn, rows=rows, say=say) as (tag, source_url):
        connections = {**settings.PORTAL_CONNECTIONS, "BENCH_SRC": source_url, "BENCH_TGT": dsn}
        with override_settings(PORTAL_CONNECTIONS=connections):
            times = _time_golden_copies(
                tag=tag, dsn=dsn, copies=copies, jobs=jobs, strategy=strategy, say=say
            )
    return {
        "rows": rows,
        "copies": copies,
        "copy_s_median": round(statistics.median(times), 3),
        "copy_s_max": round(max(times), 3),
    }


def _time_golden_copies(
    *,
    tag: str,
    dsn: str,
    copies: int,
    jobs: int,
    strategy: pg.CopyStrategy,
    say: Callable[[str], None],
) -> list[float]:
    """Build one golden copy of BENCH_SRC on BENCH_TGT and time ``copies`` databases
    made from it; drop them all."""
    spec = LogicalCloneSpec(source="BENCH_SRC", target="BENCH_TGT", masking=MASKING, jobs=jobs)
    made: golden.GoldenBuild | None = None
    databases: list[str] = []
    times: list[float] = []
    try:
        t0 = time.monotonic()
        made = golden.build_golden(
            spec=spec,
            blueprint="bench",
            service=tag,
            build=1,
            log=say,
            add_secret=lambda _: None,
            scrub=lambda url: [],
        )
        say(f"golden copy {made.database} built in {time.monotonic() - t0:.2f}s")
        ref = golden.GoldenRef(
            database=made.database, role=made.role, table_counts=made.table_counts
        )
        for n in range(1, copies + 1):
            database = clone_database_name(account="bench", service=tag, run_id=n)
            databases.append(database)
            t0 = time.monotonic()
            golden.copy_golden(
                target="BENCH_TGT",
                golden=ref,
                database=database,
                log=say,
                add_secret=lambda _: None,
                strategy=strategy,
            )
            times.append(time.monotonic() - t0)
            say(f"[{n}/{copies}] database from the golden copy: {times[-1]:.3f}s")
    finally:
        for database in databases:
            drop_clone(url=dsn, database=database, role=clone_role_name(database))
        if made is not None:
            golden.drop_golden(url=dsn, database=made.database, role=made.role)
    return times


class Command(BaseCommand):
    help = (
        "Time a masked postgres_logical clone against pg_dump -Fc | pg_restore and the "
        "binary-COPY floor."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, required=True)
        parser.add_argument("--jobs", type=int, default=2)
        parser.add_argument(
            "--repeat",
            type=int,
            default=1,
            help="time each copy this many times (alternating) and keep the fastest",
        )
        parser.add_argument(
            "--breakdown",
            action="store_true",
            help="time the floor, one masked clone, and each cost masking adds, alone",
        )
        parser.add_argument(
            "--golden",
            type=int,
            metavar="N",
            help="time N databases copied from one golden copy instead",
        )
        parser.add_argument(
            "--strategy",
            choices=[s.value for s in pg.CopyStrategy],
            help="with --golden: how databases are copied (default: "
            "$PORTAL_GOLDEN_COPY_STRATEGY, FILE_COPY)",
        )
        parser.add_argument(
            "--dsn",
            default=settings.PORTAL_CONNECTIONS.get("BENCH") or DEFAULT_DSN,
            help="PostgreSQL server to use (default: $PORTAL_CONNECTION_BENCH or local)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        rows = options["rows"]
        if rows < 10:
            self.stderr.write("--rows must be at least 10")
            raise SystemExit(2)
        if options["golden"] is not None:
            if not 1 <= options["golden"] <= 100:
                self.stderr.write("--golden must be from 1 to 100")
                raise SystemExit(2)
            self.stderr.write(f"before: {machine_load()}")
            golden_result = run_golden_benchmark(
                rows=rows,
                copies=options["golden"],
                jobs=options["jobs"],
                dsn=options["dsn"],
                strategy=pg.CopyStrategy(
                    options["strategy"] or settings.PORTAL_GOLDEN_COPY_STRATEGY
                ),
                log=self.stderr.write,
            )
            self.stderr.write(f"after: {machine_load()}")
            self.stdout.write(json.dumps(golden_result))
            return
        self.stderr.write(f"before: {machine_load()}")
        run = run_bound_benchmark if options["breakdown"] else run_benchmark
        result = run(
            rows=rows,
            jobs=options["jobs"],
            dsn=options["dsn"],
            log=self.stderr.write,
            repeat=max(1, options["repeat"]),
        )
        self.stderr.write(f"after: {machine_load()}")
        self.stdout.write(json.dumps(result))
