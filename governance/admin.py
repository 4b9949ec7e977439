from django.contrib import admin

from governance.models import Proposal, Purchase, Sale, StakingPosition, Vote


@admin.register(Proposal)
class ProposalAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "status", "voting_starts_at", "voting_ends_at", "quorum", "passed", "executed_at"]
    list_filter = ["status", "passed"]
    search_fields = ["title", "description"]
    readonly_fields = [
        "tally_for",
        "tally_against",
        "tally_abstain",
        "passed",
        "closed_at",
        "executed_at",
        "created_at",
    ]
    raw_id_fields = ["proposer"]


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = ["id", "proposal", "voter", "choice", "weight", "created_at"]
    list_filter = ["choice"]
    search_fields = ["voter__username", "proposal__title"]
    raw_id_fields = ["proposal", "voter"]


@admin.register(Sale)
class SaleAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "token_price", "allocation", "sold", "per_buyer_cap", "starts_at", "ends_at"]
    # `sold` is kept by purchase_create under the sale's row lock; editing it by hand would lie.
    readonly_fields = ["sold", "created_at"]


@admin.register(Purchase)
class PurchaseAdmin(admin.ModelAdmin):
    list_display = ["id", "sale", "buyer", "wallet", "amount", "tokens", "status", "created_at"]
    list_filter = ["status", "sale"]
    search_fields = ["buyer__username", "wallet"]
    raw_id_fields = ["sale", "buyer"]
    readonly_fields = ["created_at"]


@admin.register(StakingPosition)
class StakingPositionAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "amount", "lock_days", "status", "started_at", "unlocks_at", "unstaked_at"]
    list_filter = ["status"]
    search_fields = ["owner__username"]
    raw_id_fields = ["owner"]
