"""The governance admin: a window on the records, and state changes only through the services.

Proposals, votes, stakes, purchases, token accounts and the ledger cannot be added, edited or
deleted here: an edit in a form would skip every rule the services enforce (the sale's
allocation, the balance, the outbox event, the lock's fence). Opening, closing and executing
proposals and confirming purchases are admin actions that call the same services as the API.
"""

from collections.abc import Callable

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.errors import ServiceError
from governance import services
from governance.models import LedgerEntry, Proposal, Purchase, Sale, StakingPosition, TokenAccount, Vote


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def _each(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, verb: str, call: Callable[[int], object]
) -> None:
    """Run the service on each selected row; report what was done and each refusal in words."""
    done = 0
    for pk in queryset.values_list("pk", flat=True):
        try:
            call(pk)
        except ServiceError as exc:
            modeladmin.message_user(request, f"#{pk}: {exc.detail}", messages.ERROR)
        else:
            done += 1
    if done:
        modeladmin.message_user(request, f"{done} {verb}.", messages.SUCCESS)


@admin.register(Proposal)
class ProposalAdmin(ReadOnlyAdmin):
    list_display = ["id", "title", "status", "voting_starts_at", "voting_ends_at", "quorum", "passed", "executed_at"]
    list_filter = ["status", "passed"]
    search_fields = ["title", "description"]
    actions = ["open_proposals", "close_proposals", "execute_proposals"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # The changelist and its actions need "change"; the form itself stays read-only.
        return obj is None and bool(request.user.is_staff)

    @admin.action(description="Open the selected draft proposals")
    def open_proposals(self, request, queryset):
        _each(self, request, queryset, "opened", lambda pk: services.proposal_open(actor=request.user, proposal_id=pk))

    @admin.action(description="Close the selected open proposals (tally stored)")
    def close_proposals(self, request, queryset):
        _each(
            self,
            request,
            queryset,
            "closed",
            lambda pk: services.proposal_close_exclusive(actor=request.user, proposal_id=pk),
        )

    @admin.action(description="Execute the selected passed proposals")
    def execute_proposals(self, request, queryset):
        _each(
            self,
            request,
            queryset,
            "executed",
            lambda pk: services.proposal_execute_exclusive(actor=request.user, proposal_id=pk),
        )


@admin.register(Vote)
class VoteAdmin(ReadOnlyAdmin):
    list_display = ["id", "proposal", "voter", "choice", "weight", "created_at"]
    list_filter = ["choice"]
    search_fields = ["voter__username", "proposal__title"]


@admin.register(Sale)
class SaleAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "token_price", "allocation", "sold", "per_buyer_cap", "starts_at", "ends_at"]
    # `sold` is kept by the purchase services under the sale's row lock; editing it would lie.
    readonly_fields = ["sold", "created_at"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyAdmin):
    list_display = ["id", "sale", "buyer", "wallet", "amount", "tokens", "status", "payment_reference", "created_at"]
    list_filter = ["status", "sale"]
    search_fields = ["buyer__username", "wallet", "payment_reference"]
    actions = ["confirm_purchases"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return obj is None and bool(request.user.is_staff)

    @admin.action(description="Confirm the selected purchases as paid (payment checked by hand)")
    def confirm_purchases(self, request, queryset):
        _each(
            self,
            request,
            queryset,
            "confirmed and credited",
            lambda pk: services.purchase_confirm_by_staff(actor=request.user, purchase_id=pk),
        )


@admin.register(StakingPosition)
class StakingPositionAdmin(ReadOnlyAdmin):
    list_display = ["id", "owner", "amount", "lock_days", "status", "started_at", "unlocks_at", "unstaked_at"]
    list_filter = ["status"]
    search_fields = ["owner__username"]


@admin.register(TokenAccount)
class TokenAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "available", "updated_at"]
    search_fields = ["user__username"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "amount", "reason", "purchase", "stake", "created_at"]
    list_filter = ["reason"]
    search_fields = ["user__username"]
