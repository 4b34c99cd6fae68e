from django.urls import path

from accounts_app import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
]
