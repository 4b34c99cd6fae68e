"""The plan of a logical clone: masking rules matched to the source catalog, table by
table, and the row transform of each table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipelines.clients import postgres as pg
from pipelines.dbclone.masking import (
    ColumnType,
    Masker,
    MaskingError,
    RowMasker,
    Rule,
    check_rule,
    looks_personal,
)

DETERMINISTIC = ("email", "name", "phone", "hash")


@dataclass
class TablePlan:
    table: pg.TableInfo
    columns: list[str]  # copied columns (generated ones are computed by the target)
    rules: list[tuple[Rule, ColumnType]]  # masked columns of this table

    @property
    def name(self) -> str:
        return self.table.qualified

    @property
    def masked_columns(self) -> list[str]:
        """The columns whose values the clone changes (every rule but ``keep``)."""
        return [rule.column for rule, _ in self.rules if rule.transformer != "keep"]


@dataclass
class ClonePlan:
    tables: list[TablePlan]
    warnings: list[str]


def _column_type(*, table: pg.TableInfo, column: pg.ColumnInfo) -> ColumnType:
    return ColumnType(
        type_sql=column.type_sql,
        base_type=column.base_type,
        max_length=column.max_length,
        numeric_digits=column.numeric_digits,
        not_null=column.not_null,
        unique_alone=column.name in table.unique_alone,
    )


def plan_clone(
    *,
    tables: Sequence[pg.TableInfo],
    rules: Sequence[Rule],
    strict: bool,
    check_fixed: Callable[[str, str], str | None] | None = None,
) -> ClonePlan:
    """Match rules to the source catalog; raise MaskingError naming every bad rule."""
    by_name = {(t.schema, t.name): t for t in tables}
    errors: list[str] = []
    applied: dict[int, list[tuple[Rule, ColumnType]]] = {t.oid: [] for t in tables}
    ruled: set[tuple[str, str, str]] = set()
    for rule in rules:
        table = by_name.get((rule.schema, rule.table))
        if table is None:
            errors.append(f"masking rule {rule.key!r}: table {rule.table_name} does not exist")
            continue
        column = table.column(rule.column)
        if column is None:
            errors.append(
                f"masking rule {rule.key!r}: column {rule.column!r} does not exist in "
                f"{rule.table_name}"
            )
            continue
        if column.generated and rule.transformer != "keep":
            errors.append(
                f"masking rule {rule.key!r}: {rule.column!r} is a generated column; mask the "
                "columns it is computed from"
            )
            continue
        ctype = _column_type(table=table, column=column)
        try:
            check_rule(rule=rule, col=ctype)
        except MaskingError as exc:
            errors.append(str(exc))
            continue
        if rule.transformer == "fixed" and rule.value is not None and check_fixed:
            problem = check_fixed(rule.value, column.type_sql)
            if problem:
                errors.append(f"masking rule {rule.key!r}: fixed value is invalid: {problem}")
                continue
        ruled.add((rule.schema, rule.table, rule.column))
        # A rule on a partitioned table applies to all its partitions.
        for candidate in tables:
            if (candidate.schema, candidate.name) == (rule.schema, rule.table) or (
                (candidate.root_schema, candidate.root_name) == (rule.schema, rule.table)
            ):
                target_col = candidate.column(rule.column)
                if target_col is not None:
                    applied[candidate.oid].append(
                        (rule, _column_type(table=candidate, column=target_col))
                    )
    if errors:
        raise MaskingError("; ".join(errors))

    warnings: list[str] = []
    plans: list[TablePlan] = []
    for table in tables:
        if table.kind == "p":
            continue  # partitioned tables hold no rows; their partitions are copied
        # Masked columns first: the COPY column lists (same on both sides) then let the
        # row masker split a row only up to its last masked field.
        masked_names = [r.column for r, _ in applied[table.oid] if r.transformer != "keep"]
        copied = [c.name for c in table.columns if not c.generated and c.name in masked_names]
        copied += [c.name for c in table.columns if not c.generated and c.name not in copied]
        for column in table.columns:
            keys = {
                (table.schema, table.name, column.name),
                (table.root_schema, table.root_name, column.name),
            }
            if looks_personal(column.name) and not keys & ruled and not column.generated:
                warnings.append(
                    f"{table.qualified}.{column.name} looks like personal data and has no "
                    "masking rule (add one, or 'keep')"
                )
        # Dedupe: a rule on the partition itself wins over its parent's.
        rules_by_col: dict[str, tuple[Rule, ColumnType]] = {}
        for rule, ctype in applied[table.oid]:
            own = (rule.schema, rule.table) == (table.schema, table.name)
            if own or rule.column not in rules_by_col:
                rules_by_col[rule.column] = (rule, ctype)
        plans.append(TablePlan(table, copied, list(rules_by_col.values())))
    if strict and warnings:
        raise MaskingError("masking_strict: " + "; ".join(warnings))
    # Longest first, so the pool ends together: a table's bytes, weighted by its keyed
    # columns (each one's HMAC costs the source's server about as much as sending the
    # row twice).
    plans.sort(key=_copy_cost, reverse=True)
    return ClonePlan(plans, warnings)


def _copy_cost(plan: TablePlan) -> int:
    keyed = sum(1 for rule, _ in plan.rules if rule.transformer in DETERMINISTIC)
    return plan.table.size * (1 + 2 * keyed)


def row_masker(
    *, masker: Masker, plan: TablePlan, collect: dict[str, set[bytes]] | None = None
) -> RowMasker | None:
    """The row transform of a table, or None for the raw fast path.

    With ``collect``, the distinct source fields of each deterministic masked column
    are gathered into ``collect[column]`` while streaming (for the leak scan).
    """
    transforms = []
    sets: dict[int, set[bytes]] = {}
    for rule, ctype in plan.rules:
        if rule.transformer == "keep":
            continue
        index = plan.columns.index(rule.column)
        transforms.append((index, masker.field_transform(rule=rule, col=ctype)))
        if collect is not None and rule.transformer in DETERMINISTIC:
            sets[index] = collect.setdefault(rule.column, set())
    if not transforms:
        return None
    return RowMasker(transforms=transforms, collect=sets, width=len(plan.columns))
