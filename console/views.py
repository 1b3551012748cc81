from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, HttpResponseRedirect
from django.shortcuts import render
from django.utils import translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from console import dashboard


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "console/overview.html", {"panels": dashboard.panels(request)})


@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """The top bar's language switch: saves the choice on the account too."""
    language = request.POST.get("language", "")
    next_url = request.POST.get("next") or request.headers.get("Referer") or "/console/"
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        next_url = "/console/"
    response = HttpResponseRedirect(next_url)
    if language and translation.check_for_language(language):
        if request.user.is_authenticated and request.user.language != language:
            request.user.language = language
            request.user.save(update_fields=["language"])
        response.set_cookie("django_language", language, max_age=365 * 24 * 3600, samesite="Lax")
    return response


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico whatever the page links: send them to the static icon."""
    from django.templatetags.static import static

    return HttpResponsePermanentRedirect(static("console/favicon.svg"))
