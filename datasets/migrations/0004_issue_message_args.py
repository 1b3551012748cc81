# A validation problem (and a dataset's status message) keeps its message's template and parameters, to be
# shown in the reader's language. Rows from before keep only their text, which they go on showing as it is.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("datasets", "0003_token_counts_per_base"),
    ]

    operations = [
        migrations.AddField(
            model_name="dataset",
            name="status_message_args",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="validationissue",
            name="message_args",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
