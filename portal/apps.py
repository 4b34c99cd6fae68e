from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The project itself as an app: its heartbeat table and Celery signal handlers."""

    name = "portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from portal import heartbeats, logging

        heartbeats.connect_signals()
        logging.connect_signals()
