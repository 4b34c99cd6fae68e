"""The REST API's routes, mounted at /api/v1/."""

from django.urls import path, re_path

from accounts_app.api import lifecycle, views

app_name = "api"

urlpatterns = [
    path("blueprints/", views.BlueprintListView.as_view(), name="blueprint-list"),
    path("blueprints/<str:name>/", views.BlueprintDetailView.as_view(), name="blueprint-detail"),
    path(
        "blueprints/<str:name>/render/",
        views.BlueprintRenderView.as_view(),
        name="blueprint-render",
    ),
    path(
        "blueprints/<str:name>/upgrade/",
        views.BlueprintUpgradeView.as_view(),
        name="blueprint-upgrade",
    ),
    path("accounts/", views.AccountListView.as_view(), name="account-list"),
    path("accounts/<int:account_id>/diff/", views.AccountDiffView.as_view(), name="account-diff"),
    path(
        "accounts/<int:account_id>/upgrade/",
        views.AccountUpgradeView.as_view(),
        name="account-upgrade",
    ),
    path("accounts/<int:account_id>/", views.AccountDetailView.as_view(), name="account-detail"),
    path("accounts/<int:account_id>/runs/", views.AccountRunsView.as_view(), name="account-runs"),
    path(
        "accounts/<int:account_id>/parity/",
        views.AccountParityView.as_view(),
        name="account-parity",
    ),
    path(
        "accounts/<int:account_id>/extend/",
        lifecycle.AccountExtendView.as_view(),
        name="account-extend",
    ),
    path(
        "accounts/<int:account_id>/exempt/",
        lifecycle.AccountExemptView.as_view(),
        name="account-exempt",
    ),
    path(
        "accounts/<int:account_id>/drift/",
        lifecycle.AccountDriftView.as_view(),
        name="account-drift",
    ),
    path(
        "accounts/<int:account_id>/reconcile/",
        lifecycle.AccountReconcileView.as_view(),
        name="account-reconcile",
    ),
    path("extensions/", lifecycle.ExtensionListView.as_view(), name="extension-list"),
    path(
        "extensions/<int:extension_id>/approve/",
        lifecycle.ExtensionApproveView.as_view(),
        name="extension-approve",
    ),
    path(
        "extensions/<int:extension_id>/reject/",
        lifecycle.ExtensionRejectView.as_view(),
        name="extension-reject",
    ),
    path("runs/", views.RunListView.as_view(), name="run-list"),
    path("runs/<int:run_id>/", views.RunDetailView.as_view(), name="run-detail"),
    path("runs/<int:run_id>/resume/", views.RunResumeView.as_view(), name="run-resume"),
    path(
        "runs/<int:run_id>/stages/<int:stage_id>/log/",
        views.StageLogView.as_view(),
        name="stage-log",
    ),
    path(
        "runs/<int:run_id>/stages/<int:stage_id>/retry/",
        views.StageRetryView.as_view(),
        name="stage-retry",
    ),
    path(
        "runs/<int:run_id>/stages/<int:stage_id>/approve/",
        views.StageApproveView.as_view(),
        name="stage-approve",
    ),
    path(
        "runs/<int:run_id>/stages/<int:stage_id>/reject/",
        views.StageRejectView.as_view(),
        name="stage-reject",
    ),
    path("runs/<int:run_id>/cancel/", views.RunCancelView.as_view(), name="run-cancel"),
    path("requests/", views.RequestListView.as_view(), name="request-list"),
    path(
        "requests/<int:request_id>/approve/",
        views.RequestApproveView.as_view(),
        name="request-approve",
    ),
    path(
        "requests/<int:request_id>/reject/",
        views.RequestRejectView.as_view(),
        name="request-reject",
    ),
    path(
        "requests/<int:request_id>/withdraw/",
        views.RequestWithdrawView.as_view(),
        name="request-withdraw",
    ),
    path(
        "requests/<int:request_id>/resubmit/",
        views.RequestResubmitView.as_view(),
        name="request-resubmit",
    ),
    # Anything else under /api/v1/ answers a JSON 404, never the HTML page.
    re_path(r"^.*$", views.not_found, name="not-found"),
]
