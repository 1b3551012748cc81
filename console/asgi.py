"""ASGI entry point (uvicorn), so that streamed responses stream."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
django_application = get_asgi_application()

# Django's ASGI handler reads a whole request body before any view runs: stop
# dataset uploads at their size limit while they stream in (413), not after.
from datasets.uploads import DatasetUploadLimitMiddleware  # noqa: E402

# Chat completions take the serving gateway's ASGI fast path (no sync middleware hops: deployments/gateway.py).
from deployments.gateway import asgi_app as serving_gateway  # noqa: E402

# The experience center's chat endpoint: the same handling with the session in place of an API key.
from experience.asgi import asgi_app as playground_chat  # noqa: E402

application = serving_gateway(playground_chat(DatasetUploadLimitMiddleware(django_application)))
