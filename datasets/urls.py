from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.dataset_list, name="list"),
    path("upload/", views.dataset_upload, name="upload"),
    path("<int:pk>/", views.dataset_detail, name="detail"),
    path("<int:pk>/live/", views.dataset_live, name="live"),
    path("<int:pk>/issues.csv", views.dataset_report, name="report"),
    path("<int:pk>/download/", views.dataset_download, name="download"),
    path("<int:pk>/delete/", views.dataset_delete_view, name="delete"),
]
