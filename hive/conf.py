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


class QueenSettings(AppSettings):
    """The Queen's replies: `queen_settings.X` reads `settings.QUEEN_X`, else the default here."""

    prefix = "QUEEN_"
    # Dotted path of the hive.llm.LLMBackend subclass that generates replies.
    LLM_BACKEND: str = "hive.llm.GeminiBackend"
    # Seconds one generation may take before it counts as a failed call.
    GENERATION_TIMEOUT: float = 120.0
    # Failed calls before a reply is stored as failed (the user may then retry it).
    MAX_ATTEMPTS: int = 4
    # Backoff between failed calls: BACKOFF_SECONDS * 2**(attempt-1), at most BACKOFF_MAX_SECONDS.
    BACKOFF_SECONDS: float = 2.0
    BACKOFF_MAX_SECONDS: float = 60.0
    # The local backend (hive.llm.LocalBackend): seconds each reply takes.
    LOCAL_DELAY: float = 0.0
    # Gemini on Vertex AI (hive.llm.GeminiBackend); credentials from the environment (Workload
    # Identity on GKE, the service account on Cloud Run), as for BigQuery.
    VERTEX_PROJECT: str = ""
    VERTEX_LOCATION: str = "us-central1"
    GEMINI_MODEL: str = "gemini-2.5-flash"
    # Another endpoint than Vertex AI's (the tests' local server).
    GEMINI_BASE_URL: str = ""
    SYSTEM_PROMPT: str = "You are the OMK Queen, the AI at the heart of the OMK Hive. Answer briefly and kindly."
    # Longest wait of GET .../turns/?wait= in seconds, and how many such waits one process holds
    # at once: each holds a gunicorn thread, so past the cap a wait answers at once.
    MAX_WAIT_SECONDS: float = 25.0
    MAX_WAITERS_PER_PROCESS: int = 2


queen_settings = QueenSettings()
