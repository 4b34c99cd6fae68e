"""Files kept with a run in the database, so a worker on any machine can lay them out."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipelines.models import Artifact


class DbArtifactStore:
    def __init__(self, run_id: int) -> None:
        self.run_id = run_id

    def put(self, name: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        Artifact.objects.update_or_create(
            run_id=self.run_id,
            name=name,
            defaults={"data": data, "sha256": digest, "size": len(data)},
        )
        return digest

    def get(self, name: str) -> bytes:
        return bytes(
            Artifact.objects.values_list("data", flat=True).get(run_id=self.run_id, name=name)
        )

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
