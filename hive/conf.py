"""The hive app's settings, each with its default: `hive_settings.X` reads `settings.HIVE_X`."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Seconds a conversation's hot history stays in Redis after its last use (sliding).
    "HOT_HISTORY_TTL_SECONDS": 3600,
    "HOT_HISTORY_KEY_PREFIX": "omk:conversation:",
    # Longest turn content, in characters (the API also refuses bodies over 64 KiB with 413).
    "MAX_TURN_CHARS": 60_000,
    # Seconds a board post lives (7 days).
    "BOARD_TTL_SECONDS": 7 * 24 * 3600,
    "BOARD_KEY_PREFIX": "omk:board:",
    "BOARD_MAX_POST_CHARS": 10_000,
    "BOARD_PAGE_SIZE": 20,
    "BOARD_MAX_PAGE_SIZE": 100,
    # Longest queue message body, in characters.
    "MAX_MESSAGE_CHARS": 60_000,
    "MAX_DECISION_CHARS": 1_000,
}


class HiveSettings:
    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(settings, f"HIVE_{name}", DEFAULTS[name])


hive_settings = HiveSettings()
