"""Queueing after commit (common.queueing): sent once the rows are committed, and a broker that is away loses
nothing: the caller goes on, the row stays where the periodic repair finds it."""

from __future__ import annotations

import pytest
from celery.app.task import Task
from kombu.exceptions import OperationalError

from common import queueing
from common.queueing import enqueue, enqueue_on_commit
from datasets import services as dataset_services
from datasets.models import Dataset, Status

from .datasets_support import sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker_down(monkeypatch):
    """Every task's apply_async fails as it does when Redis is unreachable; the names it was asked for."""
    asked = []

    def refuse(self, args=None, **options):
        asked.append((self.name, tuple(args or ())))
        raise OperationalError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(Task, "apply_async", refuse)
    return asked


def test_a_message_is_sent_only_after_the_commit(django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    from jobs.tasks import prepare_job

    monkeypatch.setattr(prepare_job, "apply_async", lambda args=None, **options: sent.append((args, options)))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        enqueue_on_commit("jobs.prepare_job", 7, queue="default")
        assert not sent
    assert len(callbacks) == 1 and sent == [([7], {"queue": "default"})]


def test_a_broker_that_is_down_is_logged_and_the_row_left_for_the_repair(
    alice_client, alice, broker_down, monkeypatch, django_capture_on_commit_callbacks
):
    warned = []
    monkeypatch.setattr(queueing.logger, "warning", lambda message, *args: warned.append(message % args))
    with open(sample("chat.jsonl"), "rb") as fh, django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post("/console/datasets/upload/", {"file": fh, "category": "", "name": ""})
    assert response.status_code == 302  # the upload succeeds
    dataset = Dataset.objects.get(owner=alice)
    assert dataset.status == Status.UPLOADED  # what dataset_repair sends again
    assert broker_down == [("datasets.validate_dataset", (dataset.pk,))]
    assert warned and warned[0].startswith("could not queue datasets.validate_dataset") and "repair" in warned[0]
    assert dataset_services.dataset_repair(older_than=dataset_services.STALE_AFTER * 0) == 1


def test_on_failure_is_told_where_nothing_repairs(broker_down):
    failures = []
    assert enqueue("experience.evaluate", 3, on_failure=failures.append) is False
    assert len(failures) == 1 and isinstance(failures[0], OperationalError)
