from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from .models import BaseModel, Method, TrainingType

AUTO_HELP = _("A number, or auto.")


class JobForm(forms.Form):
    """Create a fine-tuning task. The choices depend on the user and the chosen base model."""

    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.none(), label=_("Base model"), to_field_name="code")
    method = forms.ChoiceField(choices=Method.choices, label=_("Method"), initial=Method.SFT)
    training_type = forms.ChoiceField(choices=TrainingType.choices, label=_("Training type"),
                                      initial=TrainingType.LORA)
    training_dataset = forms.ModelChoiceField(queryset=None, label=_("Training data"), required=False,
                                              empty_label=_("— choose a dataset —"))
    training_upload = forms.FileField(label=_("…or upload a JSONL file"), required=False)
    validation_dataset = forms.ModelChoiceField(
        queryset=None, label=_("Validation data"), required=False,
        empty_label=_("Automatic: split off 10% of the training data"),
    )
    n_epochs = forms.CharField(label=_("Epochs"), initial="auto", help_text=AUTO_HELP, max_length=10)
    batch_size = forms.CharField(label=_("Batch size"), initial="auto", help_text=AUTO_HELP, max_length=10)
    learning_rate_multiplier = forms.CharField(label=_("Learning-rate multiplier"), initial="auto",
                                               help_text=AUTO_HELP, max_length=10)
    suffix = forms.CharField(
        label=_("Model code suffix"), required=False, max_length=40,
        help_text=_("Up to 40 characters of a-z, 0-9, - and _. Becomes part of the new model's code."),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        from datasets.models import Dataset

        self.user = user
        usable = list(BaseModel.objects.usable_by(user))
        # Only what this server can train (weights here, architecture, modality, memory); the rest with why not.
        self.models_with_weights = [m for m in usable if m.capabilities().can_train]
        self.models_without_weights = [m for m in usable if not m.capabilities().can_train]
        self.fields["base_model"].queryset = BaseModel.objects.filter(pk__in=[m.pk for m in self.models_with_weights])
        datasets = Dataset.objects.filter(owner=user, status="ready").order_by("-created_at")
        self.fields["training_dataset"].queryset = datasets
        self.fields["validation_dataset"].queryset = datasets
        self.fields["training_dataset"].label_from_instance = _dataset_label
        self.fields["validation_dataset"].label_from_instance = _dataset_label
        if not self.is_bound and self.models_with_weights and "base_model" not in self.initial:
            default = next((m for m in self.models_with_weights if m.is_default), self.models_with_weights[0])
            self.initial["base_model"] = default.code

    def clean_suffix(self) -> str:
        return self.cleaned_data.get("suffix", "").strip()

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("training_dataset") and not cleaned.get("training_upload"):
            self.add_error("training_dataset", _("Choose a dataset or upload one."))
        return cleaned

    def hyperparameters(self) -> dict:
        return {k: self.cleaned_data[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}


def _dataset_label(dataset) -> str:
    return f"{dataset.name} · {dataset.get_category_display()} · {dataset.examples or 0} ex."
