from django.urls import path

from pipelines import views

urlpatterns = [
    path("runs/", views.runs_list, name="run-list"),
    path("runs/<int:run_id>/", views.run_detail, name="run-detail"),
    path("runs/<int:run_id>/live/", views.run_live, name="run-live"),
    path("runs/<int:run_id>/cancel/", views.cancel, name="run-cancel"),
    path("runs/<int:run_id>/resume/", views.resume, name="run-resume"),
    path("runs/<int:run_id>/stages/<int:stage_id>/log/", views.stage_log, name="stage-log"),
    path("runs/<int:run_id>/stages/<int:stage_id>/retry/", views.retry, name="stage-retry"),
    path(
        "runs/<int:run_id>/stages/<int:stage_id>/approve/",
        views.stage_approve,
        name="stage-approve",
    ),
    path(
        "runs/<int:run_id>/stages/<int:stage_id>/reject/", views.stage_reject, name="stage-reject"
    ),
]
