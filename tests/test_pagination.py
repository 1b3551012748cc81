"""The one pager (common/pagination.py): its links keep every filter of the list but the page number."""

from __future__ import annotations

import re

import pytest
from django.test import RequestFactory

from common.pagination import PAGE_SIZE, paginate
from jobs.models import FineTuningJob, JobStatus
from notifications.models import Notification

from .jobs_support import chat_lines, make_dataset

pytestmark = pytest.mark.django_db


def _links(html: str) -> list[str]:
    nav = re.search(r'<nav class="pagination".*?</nav>', html, re.S)
    assert nav, "no pager"
    return [href.replace("&amp;", "&") for href in re.findall(r'href="([^"]+)"', nav.group(0))]


def test_paging_the_task_list_keeps_its_status_filter(alice_client, alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    FineTuningJob.objects.bulk_create(
        FineTuningJob(
            owner=alice,
            base_model=tiny_base,
            training_dataset=dataset,
            fine_tuned_model=f"ft:t:{i}",
            status=JobStatus.FAILED if i % 2 else JobStatus.SUCCEEDED,
            error_code="training_error",
            progress={"percent": 100},
        )
        for i in range(4 * PAGE_SIZE)
    )
    first = alice_client.get("/console/jobs/?status=failed&q=ft").content.decode()
    assert "Page 1 of 2 (40 in all)" in first
    (next_link,) = _links(first)
    assert next_link == "?status=failed&q=ft&page=2"
    second = alice_client.get("/console/jobs/" + next_link).content.decode()
    assert "Page 2 of 2 (40 in all)" in second
    assert _links(second) == ["?status=failed&q=ft&page=1"]
    # the polled fragment's links open the whole page, still filtered
    fragment = alice_client.get("/console/jobs/?status=failed&partial=table&page=2", HTTP_HX_REQUEST="true")
    assert _links(fragment.content.decode()) == ["?status=failed&page=1"]


def test_paging_the_unread_notifications_keeps_showing_unread(alice_client, alice):
    Notification.objects.bulk_create(
        Notification(
            user=alice, event="training.succeeded", event_key=f"k{i}", title=f"note {i}", body="b", url="/console/jobs/"
        )
        for i in range(PAGE_SIZE + 5)
    )
    html = alice_client.get("/console/notifications/?show=unread").content.decode()
    assert _links(html) == ["?show=unread&page=2"]
    assert "Page 2 of 2 (25 in all)" in alice_client.get("/console/notifications/?show=unread&page=2").content.decode()


def test_paginate_names_its_parameter_and_anchor():
    request = RequestFactory().get("/x/", {"q": "a b", "errors": "2", "partial": "table"})
    page = paginate(request, list(range(120)), per_page=50, param="errors", anchor="#errors")
    assert page.number == 2 and page.kept_query == "q=a+b&" and page.param == "errors" and page.anchor == "#errors"
    assert paginate(None, []).kept_query == ""


def test_a_polled_list_asks_again_for_the_page_it_shows_with_its_filters(alice_client, alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    FineTuningJob.objects.bulk_create(
        FineTuningJob(
            owner=alice,
            base_model=tiny_base,
            training_dataset=dataset,
            fine_tuned_model=f"ft:a&b:{status}:{i}",
            status=status,
        )
        for i in range(2 * PAGE_SIZE)
        for status in (JobStatus.QUEUED, JobStatus.SUCCEEDED)
    )
    html = alice_client.get("/console/jobs/", {"status": "queued", "q": "a&b", "page": "2"}).content.decode()
    (poll,) = re.findall(r'<div id="job-table" hx-get="([^"]+)"', html)
    poll = poll.replace("&amp;", "&")
    assert poll == "/console/jobs/?partial=table&status=queued&q=a%26b&page=2"
    fragment = alice_client.get(poll, HTTP_HX_REQUEST="true").content.decode()
    assert "Page 2 of 2 (40 in all)" in fragment
    assert re.findall(r'<div id="job-table" hx-get="([^"]+)"', fragment) == [poll.replace("&", "&amp;")]


def test_page_query_is_the_filters_and_this_pages_number():
    request = RequestFactory().get("/x/", {"q": "a b", "page": "3", "partial": "table"})
    assert paginate(request, list(range(100))).query == "q=a+b&page=3"
    assert paginate(None, []).query == "page=1"
    assert paginate(request, list(range(100)), param="errors").query == "q=a+b&page=3&errors=1"
