"""The registry of user flows (order = order in the report)."""

from chaos.flows.base import CheckResult, Flow, User, normalize, schema_operations
from chaos.flows.pages import PagesFlow

FLOWS: list[type[Flow]] = [PagesFlow]

__all__ = ["FLOWS", "CheckResult", "Flow", "User", "normalize", "schema_operations"]
