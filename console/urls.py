from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from accounts import views as account_views
from experience import urls as experience_urls

from . import api_urls, errors, health, views

console_patterns = [
    path("", views.overview, name="overview"),
    path("login/", account_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("language/", views.set_language, name="set_language"),
    path("account/", account_views.account, name="account"),
    path("api-keys/", account_views.api_keys, name="api_keys"),
    path("api-keys/<int:pk>/revoke/", account_views.api_key_revoke, name="api_key_revoke"),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/console/", permanent=False)),
    # Browsers ask for /favicon.ico whatever the page links: send them to the static icon.
    path("favicon.ico", views.favicon, name="favicon"),
    path("console/datasets/", include(("datasets.urls", "datasets"))),
    path("console/deployments/", include(("deployments.urls", "deployments"))),
    path("console/models/", include("modelcards.urls")),
    path("console/playground/", include((experience_urls.playground_patterns, "playground"))),
    path("console/usage/", include((experience_urls.usage_patterns, "usage"))),
    path("console/", include("jobs.urls")),
    path("console/", include((console_patterns, "console"))),
    path("", include(("notifications.urls", "notifications"))),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("api/paas/v4/", include(api_urls.urlpatterns + api_urls.catch_all())),
]

# 404 and 403 are Django's own views drawing templates/404.html and 403.html (console/errors.py has why and the
# middleware that shows them with DEBUG on too); the 500 page falls back to plain HTML if it cannot be drawn.
handler500 = errors.server_error

admin.site.site_header = settings.CONSOLE_PRODUCT_NAME
admin.site.site_title = settings.CONSOLE_PRODUCT_NAME
