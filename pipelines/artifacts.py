"""Files kept with a run in the database, so a worker on any machine can lay them out."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from django.db import connection
from django.utils import timezone

from pipelines.models import Artifact

_TABLE = Artifact._meta.db_table


class DbArtifactStore:
    def __init__(self, run_id: int) -> None:
        self.run_id = run_id

    def replace(self, *, prefix: str, files: Mapping[str, bytes]) -> dict[str, str]:
        """Store exactly ``files`` (full names, each under ``prefix``) under ``prefix``:
        any other artifact there is deleted. Their sha256 by name. One statement, so
        the set is replaced whole or not at all."""
        if not files:
            raise ValueError("replace needs at least one file; nothing would be stored")
        outside = [name for name in files if not name.startswith(prefix)]
        if outside:
            raise ValueError(f"artifact {outside[0]!r} is not under {prefix!r}")
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        now = timezone.now()
        rows = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(files))
        params: list[int | str | bytes | datetime] = []
        for name, data in files.items():
            params += [self.run_id, name, digests[name], len(data), data, now]
        # One round trip for the whole set. The DELETE spares the names the INSERT writes:
        # one statement may not touch a row twice.
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH gone AS (DELETE FROM {_TABLE} WHERE run_id = %s "  # noqa: S608
                "AND starts_with(name, %s) AND NOT (name = ANY(%s))) "
                f"INSERT INTO {_TABLE} (run_id, name, sha256, size, data, created_at) "
                f"VALUES {rows} ON CONFLICT (run_id, name) DO UPDATE "
                "SET sha256 = EXCLUDED.sha256, size = EXCLUDED.size, data = EXCLUDED.data",
                [self.run_id, prefix, list(files), *params],
            )
        return digests

    def copy_from(self, *, run_id: int, prefix: str) -> int:
        """Make this run's artifacts under ``prefix`` exactly run ``run_id``'s (another
        run's files, unchanged, digests and all); how many were copied. One statement."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH theirs AS (SELECT name, sha256, size, data FROM {_TABLE} "  # noqa: S608
                "WHERE run_id = %s AND starts_with(name, %s)), "
                f"gone AS (DELETE FROM {_TABLE} WHERE run_id = %s AND starts_with(name, %s) "
                "AND name NOT IN (SELECT name FROM theirs)) "
                f"INSERT INTO {_TABLE} (run_id, name, sha256, size, data, created_at) "
                "SELECT %s, name, sha256, size, data, %s FROM theirs "
                "ON CONFLICT (run_id, name) DO UPDATE "
                "SET sha256 = EXCLUDED.sha256, size = EXCLUDED.size, data = EXCLUDED.data",
                [run_id, prefix, self.run_id, prefix, self.run_id, timezone.now()],
            )
            return cursor.rowcount

    def read(self, prefix: str) -> dict[str, bytes]:
        """Every artifact under ``prefix``, by full name, in name order: one query."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT name, data FROM {_TABLE} "  # noqa: S608
                "WHERE run_id = %s AND starts_with(name, %s) ORDER BY name",
                [self.run_id, prefix],
            )
            return {str(name): bytes(data) for name, data in cursor.fetchall()}

    def lay_out(self, *, prefix: str, directory: Path) -> list[Path]:
        """Write every artifact under prefix into directory, keeping relative paths."""
        root = directory.resolve()
        written = []
        for name, data in self.read(prefix).items():
            target = (root / name[len(prefix) :]).resolve()
            if not target.is_relative_to(root):
                raise ValueError(f"artifact {name!r} would leave {directory}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written.append(target)
        return written
