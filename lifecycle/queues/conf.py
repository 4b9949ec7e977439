"""The bee queues' settings: `queues_settings.X` reads `settings.QUEUES_X`, else the default here."""

from core.conf import AppSettings


class QueuesSettings(AppSettings):
    prefix = "QUEUES_"
    # Seconds a claimed, unacknowledged message stays with its consumer before any other
    # consumer may take it over (XAUTOCLAIM).
    VISIBILITY_TIMEOUT_SECONDS: float = 60.0
    # Seconds a message is kept in its stream before it is trimmed, acked or not.
    RETENTION_SECONDS: float = 24 * 3600.0
    # Longest a claim may block waiting for messages; kept below the Redis socket timeout.
    MAX_BLOCK_MS: int = 1000
    # Largest count a single claim may take.
    MAX_CLAIM_COUNT: int = 100
    # Consumer group every queue is read through.
    GROUP: str = "bees"
    # A consumer that claimed nothing for this long and holds no message is removed from its
    # queue's group (every minute, by the worker).
    CONSUMER_IDLE_SECONDS: float = 3600.0
    # Prefix of the Redis stream keys of the queues.
    KEY_PREFIX: str = "omk:queue:"


queues_settings = QueuesSettings()
