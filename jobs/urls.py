from __future__ import annotations

from django.urls import path

from . import views

app_name = "jobs"
urlpatterns = [
    path("jobs/", views.job_list, name="list"),
    path("jobs/create/", views.job_create, name="create"),
    path("jobs/estimate/", views.job_estimate, name="estimate"),
    path("jobs/compare/", views.job_compare, name="compare"),
    path("jobs/<str:public_id>/", views.job_detail, name="detail"),
    path("jobs/<str:public_id>/cancel/", views.job_cancel, name="cancel"),
    path("jobs/<str:public_id>/pause/", views.job_pause, name="pause"),
    path("jobs/<str:public_id>/resume/", views.job_resume, name="resume"),
    path("jobs/<str:public_id>/delete/", views.job_delete, name="delete"),
]
