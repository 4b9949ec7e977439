"""The pages a person uses, written once: the navigation bar of every page and the home page's list."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest
from django.urls import reverse


@dataclass(frozen=True)
class Page:
    url_name: str
    label: str
    description: str
    # URL names served under this entry (a proposal's page belongs to Proposals).
    also: tuple[str, ...] = ()


PAGES = (
    Page("governance:proposal_list", "Proposals", "Read the proposals and vote with your stake.", ("proposal_detail",)),
    Page("governance:sale", "Private sale", "Buy tokens while a sale is open."),
    Page("governance:staking", "Staking and balance", "Stake tokens; your active stake is your voting weight."),
    Page("hive:conversations", "Conversations", "Talk with the Queen.", ("conversation",)),
    Page("hive:board", "Board", "Post to the hive board."),
)


def navigation(request: HttpRequest) -> dict:
    """Template context: `pages`, each with its URL and whether it is the page being shown."""
    match = getattr(request, "resolver_match", None)
    current = (match.namespace, match.url_name) if match else (None, None)
    pages = []
    for page in PAGES:
        namespace, _, name = page.url_name.partition(":")
        here = current[0] == namespace and current[1] in (name, *page.also)
        url = reverse(page.url_name)
        pages.append({"url": url, "label": page.label, "description": page.description, "current": here})
    return {"pages": pages}
