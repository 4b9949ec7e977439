from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def amount(value) -> str:
    """An exact decimal without trailing zeros or exponent: 12.50000000 -> 12.5, 1E+1 -> 10."""
    if value is None or value == "":
        return ""
    return format(Decimal(value).normalize(), "f")
