from __future__ import annotations

from django.urls import path

from . import views

# Mounted at the site root (namespace "notifications").
urlpatterns = [
    path("console/notifications/", views.centre, name="centre"),
    path("console/notifications/badge/", views.badge, name="badge"),
    path("console/notifications/read-all/", views.mark_all_read, name="mark_all_read"),
    path("console/notifications/<int:pk>/read/", views.mark_read, name="mark_read"),
    path("console/notifications/preferences/", views.preferences, name="preferences"),
    path("console/account/phone/send/", views.phone_send, name="phone_send"),
    path("console/account/phone/verify/", views.phone_verify, name="phone_verify"),
    # The short links in messages (an SMS has room for little else).
    path("n/<str:key>", views.open_link, name="open"),
]
