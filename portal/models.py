"""The last sign of life of the background processes, shown by /healthz."""

from django.db import models


class Component(models.TextChoices):
    WORKER = "worker"
    BEAT = "beat"


class Heartbeat(models.Model):
    """One row per component: when any process of that kind last said it was alive."""

    component = models.CharField(primary_key=True, max_length=20, choices=Component.choices)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.component} at {self.at.isoformat()}"
