from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from . import services
from .models import SEED_MAX, BaseModel, Method, TrainingType

AUTO_HELP = _("A number, or auto.")
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")

# The service names fields as the API does; the form shows each error at its own field.
FIELD_FOR_PARAM = {
    "model": "base_model",
    "training_file": "training_dataset",
    "validation_file": "validation_dataset",
    "hyperparameters": None,
}


class JobForm(forms.Form):
    """Create a fine-tuning task. The choices depend on the user and the chosen base model."""

    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.none(), label=_("Base model"), to_field_name="code")
    method = forms.ChoiceField(choices=Method.choices, label=_("Method"), initial=Method.SFT)
    training_type = forms.ChoiceField(choices=TrainingType.choices, label=_("Training type"), initial=TrainingType.LORA)
    training_dataset = forms.ModelChoiceField(
        queryset=None, label=_("Training data"), required=False, empty_label=_("— choose a dataset —")
    )
    training_upload = forms.FileField(label=_("…or upload a JSONL file"), required=False)
    validation_dataset = forms.ModelChoiceField(
        queryset=None,
        label=_("Validation data"),
        required=False,
        empty_label=_("Automatic: split off 10% of the training data"),
    )
    n_epochs = forms.CharField(label=_("Epochs"), initial="auto", help_text=AUTO_HELP, max_length=10)
    batch_size = forms.CharField(label=_("Batch size"), initial="auto", help_text=AUTO_HELP, max_length=10)
    learning_rate_multiplier = forms.CharField(
        label=_("Learning-rate multiplier"), initial="auto", help_text=AUTO_HELP, max_length=10
    )
    suffix = forms.CharField(
        label=_("Model code suffix"),
        required=False,
        max_length=40,
        help_text=_("Up to 40 characters of a-z, 0-9, - and _. Becomes part of the new model's code."),
    )
    seed = forms.IntegerField(
        label=_("Seed"),
        required=False,
        min_value=0,
        max_value=SEED_MAX,
        help_text=_(
            "Empty: chosen at random and recorded on the task. The same data, settings and seed train the "
            "same model on the same machine."
        ),
    )

    def __init__(self, *args, user, full_check: bool = True, **kwargs):
        """``full_check``: also run the service's checks of model, method, data and memory, each at its field."""
        super().__init__(*args, **kwargs)
        self.full_check = full_check
        from datasets.models import Dataset, Status
        from datasets.services import dataset_label

        self.user = user
        usable = list(BaseModel.objects.usable_by(user))
        # Only what this server can train (weights here, architecture, modality, memory); the rest with why not.
        self.models_with_weights = [m for m in usable if m.capabilities().can_train]
        self.models_without_weights = [m for m in usable if not m.capabilities().can_train]
        self.fields["base_model"].queryset = BaseModel.objects.filter(pk__in=[m.pk for m in self.models_with_weights])
        datasets = Dataset.objects.filter(owner=user, status=Status.READY).order_by("-created_at")
        self.fields["training_dataset"].queryset = datasets
        self.fields["validation_dataset"].queryset = datasets
        self.fields["training_dataset"].label_from_instance = dataset_label
        self.fields["validation_dataset"].label_from_instance = dataset_label
        if not self.is_bound and self.models_with_weights and "base_model" not in self.initial:
            default = next((m for m in self.models_with_weights if m.is_default), self.models_with_weights[0])
            self.initial["base_model"] = default.code

    def clean_suffix(self) -> str:
        suffix = self.cleaned_data.get("suffix", "").strip()
        if suffix and not services.SUFFIX_RE.match(suffix):
            raise forms.ValidationError(_("Use at most 40 characters of a-z, 0-9, - and _ (no capitals or spaces)."))
        return suffix

    def _clean_hyperparameter(self, name: str) -> str:
        value = (self.cleaned_data.get(name) or "").strip().lower()
        if value in ("", "auto"):
            return "auto"
        cast, low, high = services.HYPERPARAMETER_LIMITS[name]
        if cast is int:
            message = _("Enter a whole number from %(low)s to %(high)s, or auto.")
        else:
            message = _("Enter a number from %(low)s to %(high)s, or auto.")
        try:
            number = cast(value)
        except ValueError:
            raise forms.ValidationError(message % {"low": low, "high": high}) from None
        if not low <= number <= high:
            raise forms.ValidationError(message % {"low": low, "high": high})
        return value

    def clean_n_epochs(self) -> str:
        return self._clean_hyperparameter("n_epochs")

    def clean_batch_size(self) -> str:
        return self._clean_hyperparameter("batch_size")

    def clean_learning_rate_multiplier(self) -> str:
        return self._clean_hyperparameter("learning_rate_multiplier")

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("training_dataset") and not cleaned.get("training_upload"):
            self.add_error("training_dataset", _("Choose a dataset or upload one."))
        if self.full_check:
            self._check_choices(dict(cleaned))
        return cleaned

    def _check_choices(self, cleaned: dict) -> None:
        """The service's checks of what was chosen, all of them, so that one submit shows every problem."""
        base_model, method, training_type = (cleaned.get(k) for k in ("base_model", "method", "training_type"))
        if base_model is None or not method or not training_type:
            return
        try:
            services.job_check_choices(
                user=self.user, base_model=base_model, method=method, training_type=training_type
            )
        except services.JobInputError as exc:
            self.add_service_error(exc)
        for name, param in (("training_dataset", "training_file"), ("validation_dataset", "validation_file")):
            if cleaned.get(name) is not None:
                try:
                    services.job_check_dataset(
                        user=self.user, base_model=base_model, method=method, dataset=cleaned[name], param=param
                    )
                except services.JobInputError as exc:
                    self.add_service_error(exc)
        if cleaned.get("training_dataset") is not None and "training_type" not in self.errors:
            try:
                services.job_check_memory(
                    base_model=base_model,
                    dataset=cleaned["training_dataset"],
                    training_type=training_type,
                    method=method,
                )
            except services.JobInputError as exc:
                self.add_service_error(exc)

    def add_service_error(self, exc: services.JobInputError) -> None:
        """Put a service's refusal at the field it concerns (or above the form)."""
        field = FIELD_FOR_PARAM.get(exc.param or "", exc.param)
        if field in self.errors and exc.message in self.errors[field]:
            return
        self.add_error(field if field in self.fields else None, exc.message)

    def hyperparameter_errors(self) -> list[str]:
        """The hyperparameters' errors, each named by its label."""
        return [
            f"{self.fields[name].label}: {error}" for name in HYPERPARAMETERS for error in self.errors.get(name, [])
        ]

    def hyperparameters(self) -> dict:
        return {k: self.cleaned_data[k] for k in HYPERPARAMETERS}
