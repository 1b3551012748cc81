from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.deployment_list, name="list"),
    path("new/", views.deployment_create, name="create"),
    path("exports/<str:code>/", views.model_export, name="export"),
    path("exports/<str:code>/download/", views.model_export_download, name="export_download"),
    path("<str:public_id>/", views.deployment_detail, name="detail"),
    path("<str:public_id>/scale/", views.deployment_scale, name="scale"),
    path("<str:public_id>/cancel/", views.deployment_cancel, name="cancel"),
]
