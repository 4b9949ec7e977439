"""Server-rendered pages: plain forms, POST-redirect-GET, every refusal shown in words."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import ServiceError
from core.http import AuthenticatedHttpRequest
from governance import selectors, services
from governance.forms import PurchaseForm, StakeForm, VoteForm
from governance.models import Proposal


def _field_errors_to_form(form, exc: ServiceError) -> None:
    for field, errors in exc.fields.items():
        for error in errors:
            form.add_error(field if field in form.fields else None, error)
    if not exc.fields:
        form.add_error(None, exc.detail)


@login_required
def proposal_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    proposals = selectors.proposal_list(viewer=request.user, limit=200)
    rows = [(p, selectors.proposal_tally(proposal=p)) for p in proposals]
    return render(request, "governance/proposal_list.html", {"rows": rows})


def _proposal_page(
    request: AuthenticatedHttpRequest, proposal: Proposal, form: VoteForm, status: int = 200
) -> HttpResponse:
    context = {
        "proposal": proposal,
        "tally": selectors.proposal_tally(proposal=proposal),
        "my_vote": selectors.vote_of(proposal=proposal, voter=request.user),
        "weight": selectors.active_stake_total(owner=request.user),
        "form": form,
    }
    return render(request, "governance/proposal_detail.html", context, status=status)


@login_required
def proposal_detail(request: AuthenticatedHttpRequest, proposal_id: int) -> HttpResponse:
    try:
        proposal = selectors.proposal_get(proposal_id=proposal_id, viewer=request.user)
    except Proposal.DoesNotExist:
        raise Http404(f"No proposal with id {proposal_id}.") from None
    if request.method == "POST":
        form = VoteForm(request.POST)
        if form.is_valid():
            try:
                vote = services.vote_cast(
                    voter=request.user, proposal_id=proposal_id, choice=form.cleaned_data["choice"]
                )
            except ServiceError as exc:
                _field_errors_to_form(form, exc)
            else:
                messages.success(request, f"Your vote ({vote.choice}, weight {vote.weight.normalize()}) is counted.")
                return redirect("governance:proposal_detail", proposal_id=proposal_id)
        return _proposal_page(request, proposal, form, status=400)
    return _proposal_page(request, proposal, VoteForm())


def _sale_page(request: AuthenticatedHttpRequest, form: PurchaseForm | None = None, status: int = 200) -> HttpResponse:
    sales = selectors.sale_list(limit=50)
    context = {
        "sales": sales,
        "form": form,
        "form_sale": form.data.get("sale") if form is not None and form.is_bound else None,
        "purchases": selectors.purchase_list(buyer=request.user, limit=100),
    }
    return render(request, "governance/sale.html", context, status=status)


@login_required
def sale_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = PurchaseForm(request.POST)
        if form.is_valid():
            try:
                purchase = services.purchase_create(
                    buyer=request.user,
                    sale_id=form.cleaned_data["sale"],
                    wallet=form.cleaned_data["wallet"],
                    amount=form.cleaned_data["amount"],
                )
            except ServiceError as exc:
                _field_errors_to_form(form, exc)
            else:
                messages.success(
                    request,
                    f"Purchase {purchase.pk} reserved: {purchase.tokens.normalize()} tokens, held until "
                    f"{purchase.expires_at:%Y-%m-%d %H:%M} UTC. They are yours once the payment is confirmed.",
                )
                return redirect("governance:sale")
        return _sale_page(request, form, status=400)
    return _sale_page(request)


def _staking_page(request: AuthenticatedHttpRequest, form: StakeForm, status: int = 200) -> HttpResponse:
    context = {
        "form": form,
        "stakes": selectors.stake_list(owner=request.user, limit=200),
        "weight": selectors.active_stake_total(owner=request.user),
        "balance": selectors.balance_get(user=request.user),
    }
    return render(request, "governance/staking.html", context, status=status)


@login_required
def staking_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = StakeForm(request.POST)
        if form.is_valid():
            try:
                stake = services.stake_create(owner=request.user, **form.cleaned_data)
            except ServiceError as exc:
                _field_errors_to_form(form, exc)
            else:
                messages.success(
                    request, f"Staked {stake.amount.normalize()}, locked until {stake.unlocks_at:%Y-%m-%d %H:%M} UTC."
                )
                return redirect("governance:staking")
        return _staking_page(request, form, status=400)
    return _staking_page(request, StakeForm())


@login_required
@require_POST
def unstake(request: AuthenticatedHttpRequest, stake_id: int) -> HttpResponse:
    try:
        stake = services.stake_unstake(owner=request.user, stake_id=stake_id)
    except ServiceError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Unstaked {stake.amount.normalize()}.")
    return redirect("governance:staking")
