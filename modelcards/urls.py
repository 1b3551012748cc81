from __future__ import annotations

from django.urls import path

from . import views

app_name = "modelcards"
urlpatterns = [
    path("", views.model_square, name="square"),
    path("<str:code>/", views.model_detail, name="detail"),
    path("<str:code>/download/", views.model_download, name="download"),
    path("<str:code>/delete/", views.model_delete, name="delete"),
    path("<str:code>/promote/", views.model_promote, name="promote"),
    path("<str:code>/restore/", views.model_restore, name="restore"),
]
