"""The admin shows a deployment's live state without editing it (its count goes through the service, like the page
and the API), and creates neither deployments nor instances."""

from __future__ import annotations

import pytest
from django.utils import timezone

from deployments.models import Deployment, DeploymentEvent, Instance, Node
from modelcards.models import BaseModel

pytestmark = pytest.mark.django_db

LIVE_FIELDS = [
    "public_id",
    "kind",
    "owner",
    "code",
    "base_model",
    "fine_tuned_model",
    "status",
    "status_reason",
    "ready_instances",
    "first_ready_at",
    "cancelled_at",
]
INLINES = {
    "instances-TOTAL_FORMS": "0",
    "instances-INITIAL_FORMS": "0",
    "events-TOTAL_FORMS": "0",
    "events-INITIAL_FORMS": "0",
}


def _running(owner) -> tuple[Deployment, Instance]:
    deployment = Deployment.objects.create(
        owner=owner,
        code="mine-1",
        status="running",
        base_model=BaseModel.objects.order_by("pk").first(),
        desired_instances=1,
        ready_instances=1,
        first_ready_at=timezone.now(),
    )
    node = Node.objects.create(name="n1", slots=2, omp_threads=1, heartbeat_at=timezone.now())
    instance = Instance.objects.create(
        deployment=deployment, node=node, runtime="transformers", state="ready", port=9, api_key="instance-secret"
    )
    return deployment, instance


def test_change_form_of_a_running_deployment_edits_none_of_its_live_state(admin_client, alice, bob):
    deployment, instance = _running(alice)
    url = f"/admin/deployments/deployment/{deployment.pk}/change/"
    html = admin_client.get(url).content.decode()
    for name in LIVE_FIELDS:
        assert f'name="{name}"' not in html, name
    assert 'name="desired_instances"' in html and "mine-1" in html  # the count is the one thing to change
    before = Deployment.objects.values().get(pk=deployment.pk)
    response = admin_client.post(
        url,
        {
            "desired_instances": "1",
            "status": "cancelled",
            "status_reason": "edited",
            "owner": bob.pk,
            "code": "stolen",
            "ready_instances": "5",
            "cancelled_at_0": "2026-01-01",
            "cancelled_at_1": "00:00:00",
            **INLINES,
        },
    )
    assert response.status_code == 302
    assert Deployment.objects.values().get(pk=deployment.pk) == before

    instance_url = f"/admin/deployments/instance/{instance.pk}/change/"
    html = admin_client.get(instance_url).content.decode()
    for name in ("state", "error", "port", "pid", "deployment", "node"):
        assert f'name="{name}"' not in html, name
    assert "instance-secret" not in html  # its key is never shown
    before = Instance.objects.values().get(pk=instance.pk)
    admin_client.post(instance_url, {"state": "failed", "error": "edited", "port": "1", "api_key": "x"})
    assert Instance.objects.values().get(pk=instance.pk) == before


def test_a_new_count_in_the_admin_goes_through_the_service(admin_client, alice):
    deployment, _instance = _running(alice)
    url = f"/admin/deployments/deployment/{deployment.pk}/change/"
    assert admin_client.post(url, {"desired_instances": "2", **INLINES}).status_code == 302
    deployment.refresh_from_db()
    assert deployment.desired_instances == 2 and deployment.status == "scaling"  # the state machine's move
    assert DeploymentEvent.objects.filter(deployment=deployment, message="Scaled from 1 to 2 instances.").exists()


def test_admin_does_not_offer_adding_deployments_or_instances(admin_client, alice):
    _running(alice)
    for model in ("deployment", "instance"):
        assert admin_client.get(f"/admin/deployments/{model}/add/").status_code == 403
        assert (
            f"/admin/deployments/{model}/add/" not in admin_client.get(f"/admin/deployments/{model}/").content.decode()
        )
    assert Deployment.objects.count() == 1 and Instance.objects.count() == 1
