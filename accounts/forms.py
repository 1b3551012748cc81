from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.utils.translation import gettext_lazy as _

from accounts.models import ApiKey, User


class LoginForm(AuthenticationForm):
    error_messages = {
        "invalid_login": _("Wrong username or password. Both are case-sensitive."),
        "inactive": _("This account is disabled."),
    }


class AccountForm(forms.ModelForm):
    """The profile. The phone is not here: it changes only through a code sent to the new number (the SMS card)."""

    class Meta:
        model = User
        fields = ["first_name", "last_name", "email", "language"]


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["name"]
        widgets = {"name": forms.TextInput(attrs={"placeholder": _("e.g. training pipeline"), "autofocus": True})}

    def __init__(self, *args, user: User, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError(_("Give the key a name."))
        if ApiKey.objects.active().filter(user=self.user, name=name).exists():
            raise forms.ValidationError(_("You already have an active key named %(name)s.") % {"name": name})
        return name
