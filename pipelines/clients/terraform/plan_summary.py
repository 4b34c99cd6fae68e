"""What a saved plan would do, counted from ``terraform show -json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ResourceChange:
    address: str
    action: str  # create, update, replace, delete, read, no-op (or Terraform's own, e.g. forget)


@dataclass
class PlanSummary:
    """What a saved plan would do. ``raw`` is ``terraform show -json``: it holds secrets."""

    add: int
    change: int
    replace: int
    destroy: int
    resources: list[ResourceChange]
    output_changes: list[str]
    # Saved plans only apply with the same Terraform version: record which made it.
    terraform_version: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def changes(self) -> list[tuple[str, str]]:
        """(address, action) for every resource in the plan, no-op and read included."""
        return [(r.address, r.action) for r in self.resources]

    @property
    def has_changes(self) -> bool:
        return bool(self.add or self.change or self.replace or self.destroy or self.output_changes)

    def to_dict(self, *, include_raw: bool = False) -> dict[str, Any]:
        """JSON-serialisable. ``include_raw`` adds the plan JSON, which may hold secrets."""
        data: dict[str, Any] = {
            "add": self.add,
            "change": self.change,
            "replace": self.replace,
            "destroy": self.destroy,
            "has_changes": self.has_changes,
            "resources": [{"address": r.address, "action": r.action} for r in self.resources],
            "output_changes": list(self.output_changes),
            "terraform_version": self.terraform_version,
        }
        if include_raw:
            data["raw"] = self.raw
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanSummary:
        return cls(
            add=int(data["add"]),
            change=int(data["change"]),
            replace=int(data["replace"]),
            destroy=int(data["destroy"]),
            resources=[
                ResourceChange(address=r["address"], action=r["action"]) for r in data["resources"]
            ],
            output_changes=list(data.get("output_changes", [])),
            terraform_version=str(data.get("terraform_version", "")),
            raw=dict(data.get("raw") or {}),
        )


_COUNTED = {"create": "add", "update": "change", "replace": "replace", "delete": "destroy"}


def _action(actions: Sequence[str]) -> str:
    if sorted(actions) == ["create", "delete"]:  # delete-then-create or create-before-destroy
        return "replace"
    if len(actions) == 1:
        return str(actions[0])
    return "-".join(str(a) for a in actions)


def summarize_plan(plan: Mapping[str, Any]) -> PlanSummary:
    """Count a ``terraform show -json`` plan; a replace is counted once, as a replace."""
    counts = {"add": 0, "change": 0, "replace": 0, "destroy": 0}
    resources = []
    for item in plan.get("resource_changes") or []:
        action = _action((item.get("change") or {}).get("actions") or ["no-op"])
        address = str(item.get("address", ""))
        if item.get("deposed"):
            address = f"{address} (deposed {item['deposed']})"
        resources.append(ResourceChange(address=address, action=action))
        if action in _COUNTED:
            counts[_COUNTED[action]] += 1
    output_changes = sorted(
        name
        for name, change in (plan.get("output_changes") or {}).items()
        if (change or {}).get("actions") not in (None, ["no-op"])
    )
    return PlanSummary(
        **counts,
        resources=resources,
        output_changes=output_changes,
        terraform_version=str(plan.get("terraform_version", "")),
        raw=dict(plan),
    )
