"""System checks of the hive (ids hive.E001, hive.E002)."""

from django.core.checks import Error, Tags, register

from hive.conf import hive_settings, queen_settings


@register(Tags.compatibility)
def check_hive_settings(app_configs, **kwargs):
    errors = []
    for name in ("HOT_HISTORY_TTL_SECONDS", "BOARD_TTL_SECONDS"):
        if float(hive_settings.raw(name)) <= 0:
            errors.append(Error(f"HIVE_{name} must be positive.", id="hive.E001"))
    return errors


@register(Tags.compatibility)
def check_queen_backend(app_configs, **kwargs):
    from hive.llm import _backend_class

    try:
        _backend_class(queen_settings.LLM_BACKEND)
    except (ImportError, TypeError) as exc:
        return [Error(f"QUEEN_LLM_BACKEND is not usable: {exc}", id="hive.E002")]
    return []
