from django.apps import AppConfig


class AccountsAppConfig(AppConfig):
    name = "accounts_app"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # Notifications listen to the engine's events (sent after commit). Their module
        # uses the models, which can be imported only once the app registry is ready.
        from accounts_app import drift, following, notification_queue
        from accounts_app.events import production_changed
        from pipelines.signals import approval_needed, run_finished

        approval_needed.connect(
            notification_queue.on_approval_needed, dispatch_uid="notify-approval"
        )
        run_finished.connect(notification_queue.on_run_finished, dispatch_uid="notify-run-finished")
        # Edits take effect and followers follow production, in the run's transaction.
        run_finished.connect(following.on_run_finished, dispatch_uid="follow-run-finished")
        production_changed.connect(
            following.on_production_changed, dispatch_uid="follow-production"
        )
        run_finished.connect(drift.record_drift_check, dispatch_uid="record-drift-check")
