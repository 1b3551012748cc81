from __future__ import annotations

from django.urls import path

from . import views, webhook_views

# Mounted at the site root (namespace "notifications").
urlpatterns = [
    path("console/notifications/", views.centre, name="centre"),
    path("console/notifications/badge/", views.badge, name="badge"),
    path("console/notifications/read-all/", views.mark_all_read, name="mark_all_read"),
    path("console/notifications/<int:pk>/read/", views.mark_read, name="mark_read"),
    path("console/notifications/preferences/", views.preferences, name="preferences"),
    path("console/webhooks/", webhook_views.webhooks, name="webhooks"),
    path("console/webhooks/new/", webhook_views.webhook_create, name="webhook_create"),
    path("console/webhooks/<str:public_id>/", webhook_views.webhook, name="webhook"),
    path("console/webhooks/<str:public_id>/test/", webhook_views.webhook_test, name="webhook_test"),
    path("console/webhooks/<str:public_id>/enable/", webhook_views.webhook_enable, name="webhook_enable"),
    path("console/webhooks/<str:public_id>/delete/", webhook_views.webhook_delete, name="webhook_delete"),
    path("console/account/phone/send/", views.phone_send, name="phone_send"),
    path("console/account/phone/verify/", views.phone_verify, name="phone_verify"),
    # The short links in messages (an SMS has room for little else).
    path("n/<str:key>", views.open_link, name="open"),
]
