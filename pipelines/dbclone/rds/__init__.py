"""RDS clones by snapshot, in three modules: ``names`` (what a clone is given and every
identifier it creates), ``calls`` (describe, start, wait and delete, each safe to run
again) and ``clone`` (the clone's steps and its deletion; its docstring tells the
flow). Callers use ``rds.<name>``."""

from pipelines.dbclone.rds.calls import (
    Waits,
    checked_golden,
    describe_instance,
    describe_snapshot,
    rds_tags,
    start,
    wait_snapshot,
)
from pipelines.dbclone.rds.clone import (
    PASSWORD_LENGTH,
    CloneResult,
    clone_rds,
    delete_clone,
    read_master_password,
)
from pipelines.dbclone.rds.names import (
    DRIVER,
    GOLDEN_MASKED,
    GOLDEN_TAG,
    SNAPSHOT_PREFIX,
    CloneIds,
    SourceSpec,
    TargetSpec,
    clone_identifiers,
    is_valid_rds_identifier,
    share_key_alias,
)

__all__ = [
    "DRIVER",
    "GOLDEN_MASKED",
    "GOLDEN_TAG",
    "PASSWORD_LENGTH",
    "SNAPSHOT_PREFIX",
    "CloneIds",
    "CloneResult",
    "SourceSpec",
    "TargetSpec",
    "Waits",
    "checked_golden",
    "clone_identifiers",
    "clone_rds",
    "delete_clone",
    "describe_instance",
    "describe_snapshot",
    "is_valid_rds_identifier",
    "rds_tags",
    "read_master_password",
    "share_key_alias",
    "start",
    "wait_snapshot",
]
