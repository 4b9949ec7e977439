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
    # Messages a queue may hold not yet acknowledged; a publish beyond it is refused (429).
    QUEUE_MAX_LENGTH: int = 10_000
    # Queues one user may own.
    MAX_QUEUES_PER_USER: int = 20
    # Largest member list of a queue.
    MAX_QUEUE_MEMBERS: int = 100
    # Board posts one user may write per clock hour (each one is a Redis key for 7 days).
    BOARD_MAX_POSTS_PER_HOUR: int = 300


hive_settings = HiveSettings()
