"""Run by tests/test_migrations.py in its own process and database: migrate to before the model-card move,
write rows with the historical models, migrate to the end, and print what became of them as JSON."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402

BEFORE = [("jobs", "0003_fine_tuning_jobs"), ("datasets", "0001_initial"), ("console", "0001_initial")]

executor = MigrationExecutor(connection)
executor.migrate(BEFORE)
old = executor.loader.project_state(BEFORE).apps
User = old.get_model("console", "User")
OldBase = old.get_model("jobs", "BaseModel")
Dataset = old.get_model("datasets", "Dataset")
Job = old.get_model("jobs", "FineTuningJob")
Card = old.get_model("jobs", "FineTunedModel")

user = User.objects.create(username="migrated", password="!")
base = OldBase.objects.create(
    code="operator-model",
    display_name="Operator's model",
    family="x",
    methods=["sft"],
    training_types=["lora"],
    weights_location="/nowhere",
)
seeded = OldBase.objects.get(code="smollm2-135m-instruct")
dataset = Dataset.objects.create(
    owner=user,
    name="d",
    filename="d.jsonl",
    file="datasets/d.jsonl",
    status="ready",
    base_model=seeded,
    tokens=1234,
    text_tokens=1234,
    examples=10,
)
job = Job.objects.create(
    owner=user,
    base_model=base,
    training_dataset=dataset,
    fine_tuned_model="ft:operator:x:1",
    status="succeeded",
    public_id="ftjob-migrated",
)
Card.objects.create(
    code="ft:operator:x:1",
    owner=user,
    job=job,
    base_model=base,
    method="sft",
    training_type="lora",
    trained_tokens=99,
    path="/nowhere/final",
)
counts_before = {"bases": OldBase.objects.count()}

executor = MigrationExecutor(connection)
executor.loader.build_graph()
executor.migrate(executor.loader.graph.leaf_nodes())

from datasets.models import Dataset as NewDataset  # noqa: E402
from datasets.models import TokenCount  # noqa: E402
from jobs.models import FineTuningJob  # noqa: E402
from modelcards.models import BaseModel, FineTunedModel  # noqa: E402

new_job = FineTuningJob.objects.select_related("result", "base_model").get(public_id="ftjob-migrated")
new_dataset = NewDataset.objects.select_related("base_model").get(pk=dataset.pk)
card = FineTunedModel.objects.get(code="ft:operator:x:1")
with connection.cursor() as cursor:
    tables = set(connection.introspection.table_names(cursor))
print(
    json.dumps(
        {
            "bases_before": counts_before["bases"],
            "bases_after": BaseModel.objects.count(),
            "operator_model_kept": BaseModel.objects.filter(pk=base.pk, code="operator-model").exists(),
            "job_base": new_job.base_model.code,
            "job_result": new_job.result.code if new_job.result else None,
            "card_job": card.job.public_id,
            "card_tokens": card.trained_tokens,
            "dataset_base": new_dataset.base_model.code,
            "token_count": list(
                TokenCount.objects.filter(dataset=new_dataset).values_list("base_model__code", "tokens")
            ),
            "seeded_architecture": BaseModel.objects.get(code="smollm2-135m-instruct").architecture,
            "old_tables_left": sorted(t for t in tables if t in ("jobs_basemodel", "jobs_finetunedmodel")),
        }
    )
)
