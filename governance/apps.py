from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance, private sale and staking"

    def ready(self) -> None:
        from governance import checks  # noqa: F401  (registers the system checks)
