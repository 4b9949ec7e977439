"""The hive app's settings: `hive_settings.X` reads `settings.HIVE_X`, else the default here."""

from core.conf import AppSettings


class HiveSettings(AppSettings):
    prefix = "HIVE_"
    # Seconds a conversation's hot history stays in Redis after its last use (sliding).
    HOT_HISTORY_TTL_SECONDS: float = 3600.0
    HOT_HISTORY_KEY_PREFIX: str = "omk:conversation:"
    # Longest turn content, in characters (the API also refuses bodies over 64 KiB with 413).
    MAX_TURN_CHARS: int = 60_000
    # Seconds a board post lives (7 days).
    BOARD_TTL_SECONDS: float = 7 * 24 * 3600.0
    BOARD_KEY_PREFIX: str = "omk:board:"
    BOARD_MAX_POST_CHARS: int = 10_000
    BOARD_PAGE_SIZE: int = 20
    BOARD_MAX_PAGE_SIZE: int = 100
    # Longest queue message body, in characters.
    MAX_MESSAGE_CHARS: int = 60_000
    MAX_DECISION_CHARS: int = 1_000


hive_settings = HiveSettings()
