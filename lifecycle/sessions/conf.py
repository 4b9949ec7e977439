"""The session manager's settings: `sessions_settings.X` reads `settings.SESSIONS_X`, else the default."""

from core.conf import AppSettings


class SessionsSettings(AppSettings):
    prefix = "SESSIONS_"
    # Seconds a session_manager session lives after its last use (sliding).
    TTL_SECONDS: int = 3600
    # Prefix of the Redis keys of session_manager sessions.
    KEY_PREFIX: str = "omk:session:"


sessions_settings = SessionsSettings()
