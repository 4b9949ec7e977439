"""System checks of the hive (ids hive.E001)."""

from django.core.checks import Error, Tags, register

from hive.conf import hive_settings


@register(Tags.compatibility)
def check_hive_settings(app_configs, **kwargs):
    errors = []
    for name in ("HOT_HISTORY_TTL_SECONDS", "BOARD_TTL_SECONDS"):
        if float(hive_settings.raw(name)) <= 0:
            errors.append(Error(f"HIVE_{name} must be positive.", id="hive.E001"))
    return errors
