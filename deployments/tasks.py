"""Celery tasks of serving: thin wrappers that take ids and call the services."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="deployments.reconcile", acks_late=True, ignore_result=True)
def reconcile(deployment_id: int) -> None:
    services.deployment_reconcile(deployment_id=deployment_id)


@shared_task(name="deployments.reconcile_all", acks_late=True, ignore_result=True, expires=10)
def reconcile_all() -> int:
    return services.reconcile_all()


@shared_task(name="deployments.prepare_fine_tune", acks_late=True, ignore_result=True, queue="serving")
def prepare_fine_tune(fine_tuned_model_id: int) -> None:
    services.fine_tune_prepare(fine_tuned_model_id=fine_tuned_model_id)


@shared_task(name="deployments.unload_adapter", acks_late=True, ignore_result=True, queue="serving")
def unload_adapter(code: str) -> int:
    return services.adapter_unload_everywhere(code=code)


@shared_task(name="deployments.build_merged_export", acks_late=True, ignore_result=True, queue="serving")
def build_merged_export(export_id: int) -> None:
    from . import exports

    exports.merged_export_build(export_id=export_id)
