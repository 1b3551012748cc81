from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts import services
from accounts.forms import AccountForm, ApiKeyForm, LoginForm
from accounts.models import ApiKey
from common.pagination import paginate
from console import dashboard, shell


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


def login_locked_out(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """django-axes' answer to a sign-in from a locked-out account or address: the sign-in page, saying how long."""
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    form = LoginForm(request, initial={"username": (credentials or {}).get("username", "")})
    message = ngettext(
        "Too many failed sign-ins for this account or from this address. Try again in %(minutes)d minute.",
        "Too many failed sign-ins for this account or from this address. Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}
    response = render(
        request,
        "accounts/login.html",
        {"form": form, "lockout": message, "next": request.POST.get("next", "")},
        status=429,
    )
    response["Retry-After"] = str(minutes * 60)
    return response


def _api_keys_panel(request: HttpRequest) -> dict:
    return {"count": ApiKey.objects.active().filter(user=request.user).count()}


dashboard.register_panel("api_keys", 90, "accounts/panels/api_keys.html", _api_keys_panel)


@login_required
def account(request: HttpRequest) -> HttpResponse:
    form = AccountForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        translation.activate(user.language)
        messages.success(request, _("Your account was saved."))
        response = redirect("console:account")
        response.set_cookie("django_language", user.language, samesite="Lax")
        return response
    context = {"form": form, "account_sections": shell.account_sections(request)}
    return render(request, "accounts/account.html", context)


def _get_api_key_for_user(request: HttpRequest, pk: int) -> ApiKey:
    return get_object_or_404(ApiKey, pk=pk, user=request.user)


@login_required
def api_keys(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None, user=request.user)
    created_key = None
    if request.method == "POST" and form.is_valid():
        key, created_key = ApiKey.create_for(user=request.user, name=form.cleaned_data["name"])
        form = ApiKeyForm(user=request.user)
    keys = ApiKey.objects.filter(user=request.user).order_by("revoked_at", "-created_at")
    page = paginate(request, keys)
    context = {"form": form, "page": page, "created_key": created_key}
    if request.htmx and request.method == "POST":
        return render(request, "accounts/api_keys.html#keys", context)
    return render(request, "accounts/api_keys.html", context)


@login_required
def api_key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    key = _get_api_key_for_user(request, pk)
    if request.method == "POST":
        if services.api_keys_revoke(ApiKey.objects.filter(pk=key.pk)):
            messages.success(request, _("Key %(name)s was revoked. Calls made with it now fail.") % {"name": key.name})
        return redirect("console:api_keys")
    return render(request, "accounts/api_key_revoke.html", {"key": key})
