from __future__ import annotations

from django.urls import path

from . import views

playground_patterns = [
    path("", views.playground, name="index"),
    path("chat/", views.playground_chat, name="chat"),
    path("evaluations/<str:code>/", views.evaluation_panel, name="evaluation"),
    path("evaluations/<str:code>/run/", views.evaluation_rerun, name="evaluation_rerun"),
    path("evaluations/<str:code>/cancel/", views.evaluation_cancel, name="evaluation_cancel"),
]

usage_patterns = [
    path("", views.usage, name="index"),
    path("export.csv", views.usage_csv, name="csv"),
]
