from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.dataset_list, name="list"),
    path("upload/", views.dataset_upload, name="upload"),
    path("<str:public_id>/", views.dataset_detail, name="detail"),
    path("<str:public_id>/live/", views.dataset_live, name="live"),
    path("<str:public_id>/issues.csv", views.dataset_report, name="report"),
    path("<str:public_id>/download/", views.dataset_download, name="download"),
    path("<str:public_id>/delete/", views.dataset_delete_view, name="delete"),
]
