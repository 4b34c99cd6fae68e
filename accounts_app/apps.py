from importlib import import_module

from django.apps import AppConfig

from pipelines.signals import approval_needed, run_finished


class AccountsAppConfig(AppConfig):
    name = "accounts_app"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # Notifications listen to the engine's events (sent after commit). Their module
        # uses the models, which can be imported only once the app registry is ready,
        # that is here, not at this module's top.
        queue = import_module("accounts_app.notification_queue")
        approval_needed.connect(queue.on_approval_needed, dispatch_uid="notify-approval")
        run_finished.connect(queue.on_run_finished, dispatch_uid="notify-run-finished")
