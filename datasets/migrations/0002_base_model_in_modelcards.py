"""The catalog moved to modelcards: point the foreign key there (the table is renamed by jobs 0005)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0001_initial"),
        ("modelcards", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="dataset",
                    name="base_model",
                    field=models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                        to="modelcards.basemodel", verbose_name="tokenizer of",
                        help_text="Tokens are counted with this base model's tokenizer and chat template.",
                    ),
                ),
            ]
        )
    ]
