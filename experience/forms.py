"""The card's "Run again" form: the judge model, its rubric and the general prompts to catch forgetting."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from datasets.models import Dataset

from . import services


class EvaluationForm(forms.Form):
    judge_model = forms.ChoiceField(label=_("Judge model"), required=False)
    rubric = forms.CharField(
        label=_("Rubric"), required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 5})
    )
    regression = forms.ChoiceField(label=_("General prompts (to catch forgetting)"), required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        models = [m for m in services.callable_models(user=user) if not m.get("disabled")]
        self.fields["judge_model"].choices = [("", _("No judge (exact match and F1 only)"))] + [
            (m["code"], f"{m['label']} ({m['kind_label']})") for m in models
        ]
        self.datasets = {d.public_id: d for d in Dataset.objects.ready_for(user).order_by("-created_at")[:50]}
        self.fields["regression"].choices = [("default", _("The default general prompts")), ("none", _("None"))] + [
            (key, _("Your dataset %(name)s") % {"name": d.name}) for key, d in self.datasets.items()
        ]
        self.fields["rubric"].initial = services.default_rubric()
        self.fields["regression"].initial = "default"

    def clean_judge_model(self) -> str:
        code = self.cleaned_data.get("judge_model") or ""
        if code:
            try:
                services.judge_check(user=self.user, code=code)
            except services.JudgeInvalid as exc:
                raise forms.ValidationError(str(exc)) from None
        return code

    def start_arguments(self) -> dict:
        choice = self.cleaned_data.get("regression") or "default"
        dataset = self.datasets.get(choice)
        return {
            "judge_model": self.cleaned_data.get("judge_model") or "",
            "rubric": self.cleaned_data.get("rubric") or "",
            "regression": "dataset" if dataset else choice,
            "regression_dataset": dataset,
        }
