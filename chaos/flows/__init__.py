"""The registry of user flows (order = order in the report)."""

from chaos.flows.accounts import SessionFlow
from chaos.flows.base import CheckResult, Flow, User, normalize, schema_operations
from chaos.flows.governance import LedgerFlow, ProposalFlow, PurchaseFlow, StakeFlow
from chaos.flows.hive import BoardFlow, ConversationFlow, DecisionFlow, QueueFlow
from chaos.flows.pages import PagesFlow

# Stakes first: its setup gives every voter the stake a vote needs.
FLOWS: list[type[Flow]] = [
    PagesFlow,
    SessionFlow,
    StakeFlow,
    PurchaseFlow,
    ProposalFlow,
    ConversationFlow,
    BoardFlow,
    QueueFlow,
    DecisionFlow,
    LedgerFlow,
]

__all__ = ["FLOWS", "CheckResult", "Flow", "User", "normalize", "schema_operations"]
