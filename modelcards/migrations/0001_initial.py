"""The catalog and fine-tuned models move here from jobs: their rows stay, their tables are renamed.

The models enter this app's state on jobs' tables, then AlterModelTable renames the tables;
jobs 0005 drops them from jobs' state and points its foreign keys here."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("jobs", "0004_job_result"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    state_operations = [
        migrations.CreateModel(
            name='BaseModel',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('code', models.SlugField(max_length=64, unique=True, verbose_name='model code')),
                ('display_name', models.CharField(max_length=100, verbose_name='display name')),
                ('family', models.CharField(max_length=50, verbose_name='family')),
                ('description', models.TextField(blank=True, verbose_name='description')),
                ('modality', models.CharField(choices=[('text', 'Text generation'), ('image_generation', 'Image generation'), ('image_understanding', 'Image understanding')], default='text', max_length=32, verbose_name='modality')),
                ('methods', models.JSONField(default=list, help_text='e.g. ["sft", "dpo"]', verbose_name='methods')),
                ('training_types', models.JSONField(default=list, help_text='e.g. ["lora", "full"]', verbose_name='training types')),
                ('public_pool', models.BooleanField(default=False, verbose_name='LoRA results may use the public pool')),
                ('availability', models.CharField(choices=[('everyone', 'All users'), ('annual_private', 'Annual private-deployment plan users')], default='everyone', max_length=32, verbose_name='who may use it')),
                ('context_length', models.PositiveIntegerField(default=2048, verbose_name='context length')),
                ('training_price', models.DecimalField(decimal_places=4, default=0, max_digits=10, verbose_name='training price per 1,000 tokens')),
                ('inference_price', models.DecimalField(decimal_places=4, default=0, max_digits=10, verbose_name='inference price per 1,000 tokens')),
                ('weights_source', models.CharField(choices=[('local_dir', 'Local folder'), ('hf_cache', 'Hugging Face repo id in the local cache'), ('gguf_package', 'GGUF file shipped by a Python package')], default='local_dir', max_length=32, verbose_name='weights come from')),
                ('weights_location', models.CharField(blank=True, help_text='A folder path; a Hugging Face repo id (org/name); or package:file.gguf for a GGUF file inside an installed Python package.', max_length=500, verbose_name='weights location')),
                ('is_default', models.BooleanField(default=False, verbose_name='embedded default')),
                ('is_active', models.BooleanField(default=True, verbose_name='listed')),
                ('sort_order', models.PositiveIntegerField(default=100)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'verbose_name': 'base model',
                'verbose_name_plural': 'base models',
                'ordering': ['sort_order', 'code'],
                'db_table': 'jobs_basemodel',
            },
        ),
        migrations.CreateModel(
            name='FineTunedModel',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('code', models.CharField(max_length=128, unique=True, verbose_name='model code')),
                ('method', models.CharField(choices=[('sft', 'SFT'), ('dpo', 'DPO')], max_length=8)),
                ('training_type', models.CharField(choices=[('lora', 'LoRA'), ('full', 'Full-parameter')], max_length=8)),
                ('hyperparameters', models.JSONField(default=dict)),
                ('metrics', models.JSONField(default=dict)),
                ('trained_tokens', models.BigIntegerField(default=0)),
                ('cost', models.DecimalField(decimal_places=4, default=0, max_digits=14)),
                ('path', models.CharField(max_length=500)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('deleted_at', models.DateTimeField(blank=True, null=True)),
                ('base_model', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='fine_tunes', to='modelcards.basemodel')),
                ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='fine_tuned_models', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'fine-tuned model',
                'verbose_name_plural': 'fine-tuned models',
                'ordering': ['-created_at'],
                'db_table': 'jobs_finetunedmodel',
            },
        ),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=state_operations),
        migrations.AlterModelTable("basemodel", None),
        migrations.AlterModelTable("finetunedmodel", None),
    ]
