from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from . import conf
from .models import Category
from .services import human_bytes


class DatasetUploadForm(forms.Form):
    file = forms.FileField(
        label=_("JSONL file"),
        widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.json,.txt,application/jsonl,application/json"}),
    )
    category = forms.ChoiceField(
        label=_("Category"),
        choices=[("", _("Auto-detect from the first lines"))] + list(Category.choices),
        required=False,
    )
    name = forms.CharField(
        label=_("Name"),
        max_length=200,
        required=False,
        help_text=_("Optional; the file name is used if left empty."),
    )
    base_model = forms.ModelChoiceField(
        label=_("Count tokens for"),
        queryset=None,
        required=False,
        empty_label=None,
        help_text=_("The base model whose tokenizer, chat template and context length count and check the examples."),
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        from modelcards.models import BaseModel

        # Only models whose tokenizer is on this server can count; the default comes first.
        field = self.fields["base_model"]
        field.queryset = BaseModel.objects.usable_by(user).with_weights().order_by("-is_default", "sort_order", "code")
        field.initial = field.queryset.first()
        self.fields["file"].help_text = _("UTF-8 JSONL: one JSON object (one example) per line. At most %(limit)s.") % {
            "limit": human_bytes(conf.max_bytes())
        }

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size == 0:
            raise forms.ValidationError(_("The file is empty: it holds no examples."), code="empty")
        if upload.size > conf.max_bytes():
            raise forms.ValidationError(
                _("The file is larger than the limit of %(limit)s.") % {"limit": human_bytes(conf.max_bytes())},
                code="too_large",
            )
        return upload
