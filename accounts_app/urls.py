from django.urls import path

from accounts_app import views

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
    path(
        "accounts/<int:account_id>/parity/",
        views.account_parity_check,
        name="account-parity-check",
    ),
]
