"""URLs of the SDK-compatible API, mounted at /api/paas/v4/."""

from __future__ import annotations

from django.urls import re_path

from common import api
from datasets import api as datasets_api
from deployments import api as deployments_api
from jobs import api as jobs_api
from modelcards import api as modelcards_api

urlpatterns = [
    *modelcards_api.urlpatterns,
    *datasets_api.urlpatterns,
    *jobs_api.urlpatterns,
    *deployments_api.urlpatterns,
    # Each app appends its own endpoints here (files, fine_tuning, chat …).
]


def catch_all() -> list:
    return [re_path(r"^(?P<path>.*)$", api.api_not_found)]
