from django import forms

from governance.conf import governance_settings
from governance.models import AMOUNT, DecimalShape, Vote


class AmountInputShape(DecimalShape):
    min_value: float


# The model's digits, and more than zero.
AMOUNT_INPUT: AmountInputShape = {**AMOUNT, "min_value": 0.00000001}


class VoteForm(forms.Form):
    choice = forms.ChoiceField(choices=Vote.Choice.choices, widget=forms.RadioSelect)


class PurchaseForm(forms.Form):
    sale = forms.IntegerField(widget=forms.HiddenInput, min_value=1)
    wallet = forms.CharField(max_length=42, help_text="0x and 40 hexadecimal digits")
    amount = forms.DecimalField(label="Amount to pay", **AMOUNT_INPUT)


class StakeForm(forms.Form):
    amount = forms.DecimalField(**AMOUNT_INPUT)
    lock_days = forms.IntegerField(
        min_value=1, max_value=governance_settings.MAX_LOCK_DAYS, initial=30, label="Lock period (days)"
    )
