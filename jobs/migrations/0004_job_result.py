"""A task points at its fine-tuned model (not the other way round), so the model card can move below jobs."""

import django.db.models.deletion
from django.db import migrations, models


def copy_links(apps, schema_editor):
    FineTunedModel = apps.get_model("jobs", "FineTunedModel")
    FineTuningJob = apps.get_model("jobs", "FineTuningJob")
    for card_id, job_id in FineTunedModel.objects.values_list("id", "job_id"):
        FineTuningJob.objects.filter(pk=job_id).update(result_id=card_id)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0003_fine_tuning_jobs")]

    operations = [
        migrations.AlterField(
            model_name="finetunedmodel",
            name="job",
            field=models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                       to="jobs.finetuningjob"),
        ),
        migrations.AddField(
            model_name="finetuningjob",
            name="result",
            field=models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                       related_name="job", to="jobs.finetunedmodel",
                                       verbose_name="fine-tuned model"),
        ),
        migrations.RunPython(copy_links, migrations.RunPython.noop),
        migrations.RemoveField(model_name="finetunedmodel", name="job"),
    ]
