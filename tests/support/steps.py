"""Lifecycle steps for the tests, plugged in through LIFECYCLE_SHUTDOWN_STEPS/RECOVERY_STEPS."""

import time

from lifecycle.steps import Step


class HangingStep(Step):
    """A shutdown step that never returns (a stuck export, a dead dependency without timeout)."""

    name = "hanging"
    label = "Hanging forever"

    def run(self, *, deadline: float) -> int:
        time.sleep(3600)
        return 0


class SlowRecoveryStep(Step):
    """A recovery step that takes four seconds: readiness must stay 503 meanwhile."""

    name = "slow_recovery"
    label = "Slow recovery ({count})"

    def run(self, *, deadline: float) -> int:
        time.sleep(4)
        return 1
