"""Where this instance runs, and how long the platform gives it to stop.

Pure Python on purpose: gunicorn's config imports it in the master, before Django is set up.
"""

import dataclasses
import enum
import os
from collections.abc import Mapping

CLOUD_RUN_BUDGET_SECONDS = 10.0
DEFAULT_GKE_BUDGET_SECONDS = 30.0
LOCAL_BUDGET_SECONDS = 30.0


class Platform(enum.StrEnum):
    CLOUD_RUN = "cloud_run"
    # Cloud Run functions (Cloud Functions 2nd gen): a Cloud Run service underneath, same budget.
    CLOUD_RUN_FUNCTIONS = "cloud_run_functions"
    GKE = "gke"
    LOCAL = "local"


@dataclasses.dataclass(frozen=True)
class PlatformInfo:
    platform: Platform
    # Seconds between SIGTERM and the platform's SIGKILL.
    shutdown_budget: float

    @property
    def shutdown_deadline(self) -> float:
        """Seconds our own shutdown may take: the budget less a safety margin."""
        return self.shutdown_budget - shutdown_margin(self.shutdown_budget)


def shutdown_margin(budget: float) -> float:
    # Keep a tenth of the budget, at least one second, for the exit itself and clock skew.
    return max(1.0, budget * 0.1)


def detect_platform(environ: Mapping[str, str] | None = None) -> PlatformInfo:
    environ = os.environ if environ is None else environ
    if environ.get("K_SERVICE"):
        # A function's runtime sets FUNCTION_TARGET (the entry point) beside Cloud Run's K_SERVICE.
        platform = Platform.CLOUD_RUN_FUNCTIONS if environ.get("FUNCTION_TARGET") else Platform.CLOUD_RUN
        return PlatformInfo(platform, CLOUD_RUN_BUDGET_SECONDS)
    if environ.get("KUBERNETES_SERVICE_HOST"):
        raw = environ.get("TERMINATION_GRACE_PERIOD", "")
        try:
            budget = float(raw) if raw else DEFAULT_GKE_BUDGET_SECONDS
        except ValueError:
            raise ValueError(f"TERMINATION_GRACE_PERIOD must be a number of seconds, got {raw!r}") from None
        if budget <= 0:
            raise ValueError(f"TERMINATION_GRACE_PERIOD must be positive, got {raw!r}")
        return PlatformInfo(Platform.GKE, budget)
    return PlatformInfo(Platform.LOCAL, LOCAL_BUDGET_SECONDS)


def default_drain_delay(info: PlatformInfo) -> float:
    """Seconds to keep serving after readiness turns 503, before the listener closes.

    Cloud Run (functions too) stops routing to an instance before it sends SIGTERM: nothing to wait for. A
    Kubernetes Service or load balancer needs a few probe periods to take the pod out.
    """
    return 0.0 if info.platform in (Platform.CLOUD_RUN, Platform.CLOUD_RUN_FUNCTIONS) else 5.0
