"""Middleware: the user's language, and HTMX plumbing (messages, redirects, Vary)."""

from __future__ import annotations

from django.contrib.messages import get_messages
from django.middleware.locale import LocaleMiddleware
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.cache import patch_vary_headers


class UserLanguageMiddleware(LocaleMiddleware):
    """A signed-in user's saved language wins; others get cookie or Accept-Language.

    Runs after AuthenticationMiddleware (it needs ``request.user``).
    """

    def process_request(self, request):
        user = getattr(request, "user", None)
        language = getattr(user, "language", None) if user is not None and user.is_authenticated else None
        if language and translation.check_for_language(language):
            translation.activate(language)
            request.LANGUAGE_CODE = translation.get_language()
            return
        super().process_request(request)


class HtmxMessagesMiddleware:
    """For HTMX requests: messages ride along as an out-of-band swap, redirects
    become HX-Redirect, and every response varies on HX-Request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        patch_vary_headers(response, ("HX-Request",))
        if not getattr(request, "htmx", False):
            return response
        if response.status_code in (301, 302, 303) and "Location" in response:
            location = response["Location"]
            response.status_code = 204
            del response["Location"]
            response["HX-Redirect"] = location
            return response
        content_type = response.get("Content-Type", "")
        if (
            "text/html" in content_type
            and not response.streaming
            and "HX-Redirect" not in response
            and "HX-Refresh" not in response
        ):
            storage = get_messages(request)
            if len(storage):
                response.content += render_to_string(
                    "console/partials/messages.html", {"messages": storage, "oob": True}, request=request
                ).encode()
        return response
