from django.urls import path

from accounts_app import lifecycle_views, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("request/", views.request_pick, name="request-pick"),
    path("request/<str:blueprint>/", views.request_form, name="request-form"),
    path("approvals/", views.approvals, name="approvals"),
    path(
        "approvals/requests/<int:request_id>/approve/",
        views.request_approve,
        name="request-approve",
    ),
    path(
        "approvals/requests/<int:request_id>/reject/", views.request_reject, name="request-reject"
    ),
    path("requests/<int:request_id>/withdraw/", views.request_withdraw, name="request-withdraw"),
    path("requests/<int:request_id>/resubmit/", views.request_resubmit, name="request-resubmit"),
    path("accounts/<int:account_id>/", views.account_detail, name="account-detail"),
    path("accounts/<int:account_id>/runs/", views.account_start_run, name="account-start-run"),
    path("accounts/<int:account_id>/edit/", views.account_edit, name="account-edit"),
    path("accounts/<int:account_id>/upgrade/", views.account_upgrade, name="account-upgrade"),
    path("blueprints/<str:blueprint>/upgrade/", views.blueprint_upgrade, name="blueprint-upgrade"),
    path(
        "accounts/<int:account_id>/parity/",
        views.account_parity_check,
        name="account-parity-check",
    ),
    path(
        "accounts/<int:account_id>/extend/",
        lifecycle_views.account_extend,
        name="account-extend",
    ),
    path(
        "accounts/<int:account_id>/exempt/",
        lifecycle_views.account_exempt,
        name="account-exempt",
    ),
    path(
        "accounts/<int:account_id>/drift/",
        lifecycle_views.account_drift_check,
        name="account-drift-check",
    ),
    path(
        "accounts/<int:account_id>/reconcile/",
        lifecycle_views.account_reconcile,
        name="account-reconcile",
    ),
    path(
        "approvals/extensions/<int:extension_id>/approve/",
        lifecycle_views.extension_approve,
        name="extension-approve",
    ),
    path(
        "approvals/extensions/<int:extension_id>/reject/",
        lifecycle_views.extension_reject,
        name="extension-reject",
    ),
]
