"""The session manager's settings: `sessions_settings.X` reads `settings.SESSIONS_X`, else the default."""

from core.conf import AppSettings


class SessionsSettings(AppSettings):
    prefix = "SESSIONS_"
    # Seconds a session_manager session lives after its last use (sliding).
    TTL_SECONDS: int = 3600
    # Prefix of the Redis keys of session_manager sessions.
    KEY_PREFIX: str = "omk:session:"
    # Seconds a count of the sessions in Redis (a SCAN of the keyspace) is shared by every
    # instance's recovery passes and shutdown reports before one counts again; 0: always count.
    COUNT_MAX_AGE_SECONDS: float = 30.0


sessions_settings = SessionsSettings()
