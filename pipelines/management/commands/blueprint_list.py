from typing import Any

from django.core.management.base import BaseCommand

from pipelines.blueprints import blueprints_dir, list_blueprints


class Command(BaseCommand):
    help = "List the blueprints: name, version, title."

    def handle(self, *args: Any, **options: Any) -> None:
        blueprints = list_blueprints()
        if not blueprints:
            self.stderr.write(f"no blueprints in {blueprints_dir()}")
            return
        width = max(len(b.name) for b in blueprints)
        for blueprint in blueprints:
            self.stdout.write(
                f"{blueprint.name:<{width}}  {blueprint.version:<8}  {blueprint.title}"
            )
