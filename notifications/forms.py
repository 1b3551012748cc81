"""The webhook endpoint form; where a URL may point is the service's business (notifications.webhooks)."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from .webhooks import WEBHOOK_EVENTS


class WebhookEndpointForm(forms.Form):
    url = forms.CharField(
        label=_("Endpoint URL"),
        max_length=500,
        widget=forms.TextInput(attrs={"placeholder": "https://example.com/hooks/fine-tuning", "autocomplete": "off"}),
        help_text=_("Events are sent to it as signed JSON in a POST request."),
    )
    description = forms.CharField(label=_("Description"), max_length=200, required=False)
    events = forms.MultipleChoiceField(
        label=_("Events"),
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": _("Choose at least one event.")},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Labels in the reader's language, so made per request.
        self.fields["events"].choices = [(name, f"{event.label} ({name})") for name, event in WEBHOOK_EVENTS.items()]
