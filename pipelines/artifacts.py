"""Files kept with a run in the database, so a worker on any machine can lay them out."""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.db import connection
from django.utils import timezone

from pipelines.models import Artifact

_TABLE = Artifact._meta.db_table


class DbArtifactStore:
    def __init__(self, run_id: int) -> None:
        self.run_id = run_id

    def put(self, name: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        # One statement (update_or_create takes a transaction, a locking read and a write).
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {_TABLE} (run_id, name, sha256, size, data, created_at) "  # noqa: S608
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, name) DO UPDATE "
                "SET sha256 = EXCLUDED.sha256, size = EXCLUDED.size, data = EXCLUDED.data",
                [self.run_id, name, digest, len(data), data, timezone.now()],
            )
        return digest

    def get(self, name: str) -> bytes:
        return bytes(
            Artifact.objects.values_list("data", flat=True).get(run_id=self.run_id, name=name)
        )

    def find(self, name: str) -> bytes | None:
        """The artifact's bytes, or None when it is not stored: one query."""
        data = (
            Artifact.objects.filter(run_id=self.run_id, name=name)
            .values_list("data", flat=True)
            .first()
        )
        return None if data is None else bytes(data)

    def names(self, prefix: str = "") -> list[str]:
        return sorted(
            Artifact.objects.filter(run_id=self.run_id, name__startswith=prefix).values_list(
                "name", flat=True
            )
        )

    def delete_prefix(self, prefix: str) -> None:
        Artifact.objects.filter(run_id=self.run_id, name__startswith=prefix).delete()

    def lay_out(self, prefix: str, directory: Path) -> list[Path]:
        """Write every artifact under prefix into directory, keeping relative paths."""
        written = []
        for row in Artifact.objects.filter(run_id=self.run_id, name__startswith=prefix).order_by(
            "name"
        ):
            target = (directory / row.name[len(prefix) :]).resolve()
            if not target.is_relative_to(directory.resolve()):
                raise ValueError(f"artifact {row.name!r} would leave {directory}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(row.data))
            written.append(target)
        return written
