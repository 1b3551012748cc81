from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from modelcards.models import BaseModel, FineTunedModel

from .services import MAX_INSTANCES


def model_choices(user) -> list[tuple[str, list[tuple[str, str]]]]:
    """Base models this server can serve, then the user's own fine-tunes (grouped for the select)."""
    bases = [
        (m.code, f"{m.display_name} ({m.code})") for m in BaseModel.objects.usable_by(user) if m.capabilities().serve
    ]
    tunes = [
        (m.code, f"{m.code} · {m.get_training_type_display()}")
        for m in FineTunedModel.objects.live().owned_by(user).select_related("base_model")
    ]
    choices = []
    if bases:
        choices.append((str(_("Base models")), bases))
    if tunes:
        choices.append((str(_("Your fine-tuned models")), tunes))
    return choices


class DeploymentForm(forms.Form):
    model = forms.ChoiceField(label=_("Model"))
    instances = forms.IntegerField(
        label=_("Instances"),
        min_value=1,
        max_value=MAX_INSTANCES,
        initial=1,
        help_text=_(
            "Each instance answers one request at a time on CPU (transformers serve); requests beyond the "
            "instance count wait their turn. Choose as many instances as concurrent calls you expect."
        ),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = model_choices(user)


class ScaleForm(forms.Form):
    instances = forms.IntegerField(min_value=1, max_value=MAX_INSTANCES)
