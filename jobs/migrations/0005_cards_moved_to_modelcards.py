"""BaseModel and FineTunedModel now live in modelcards (whose 0001 renamed their tables): jobs forgets them."""

import django.db.models.deletion
from django.db import migrations, models


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in ("basemodel", "finetunedmodel"):
        if not ContentType.objects.filter(app_label="modelcards", model=model).exists():
            ContentType.objects.filter(app_label="jobs", model=model).update(app_label="modelcards")


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0004_job_result"),
        ("modelcards", "0001_initial"),
        ("datasets", "0002_base_model_in_modelcards"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="finetuningjob",
                    name="base_model",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="jobs",
                                            to="modelcards.basemodel"),
                ),
                migrations.AlterField(
                    model_name="finetuningjob",
                    name="result",
                    field=models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                               related_name="job", to="modelcards.finetunedmodel",
                                               verbose_name="fine-tuned model"),
                ),
                migrations.DeleteModel(name="FineTunedModel"),
                migrations.DeleteModel(name="BaseModel"),
            ],
        ),
        migrations.RunPython(move_content_types, migrations.RunPython.noop),
    ]
