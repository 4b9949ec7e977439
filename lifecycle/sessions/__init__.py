"""Sessions in Redis: Django's session engine (`backend`) and the `session_manager`.

`session_manager` is imported lazily so that `SESSION_ENGINE = "lifecycle.sessions.backend"`
can import this package before the app registry is ready.
"""

from typing import Any

__all__ = ["SessionNotFound", "async_session_manager", "session_manager"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lifecycle.sessions import manager

        return getattr(manager, name)
    raise AttributeError(name)
