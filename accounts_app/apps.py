from django.apps import AppConfig


class AccountsAppConfig(AppConfig):
    name = "accounts_app"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # Notifications listen to the engine's events (sent after commit).
        from accounts_app import notifications
        from pipelines.signals import approval_needed, run_finished

        approval_needed.connect(notifications.on_approval_needed, dispatch_uid="notify-approval")
        run_finished.connect(notifications.on_run_finished, dispatch_uid="notify-run-finished")
