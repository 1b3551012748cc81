from __future__ import annotations

from django.db import migrations


def seed(apps, schema_editor):
    from modelcards.catalog import seed_catalog

    seed_catalog(apps.get_model("jobs", "BaseModel"))


def unseed(apps, schema_editor):
    from modelcards.catalog import CATALOG

    apps.get_model("jobs", "BaseModel").objects.filter(code__in=[e["code"] for e in CATALOG]).delete()


class Migration(migrations.Migration):
    dependencies = [("jobs", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
