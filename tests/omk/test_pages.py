"""The pages a person uses: the home page links to each, and every page shows the same bar."""

from datetime import timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from governance.services import proposal_create, proposal_open
from hive.services import conversation_create
from omk.pages import PAGES

pytestmark = pytest.mark.django_db


class NavLinks(HTMLParser):
    """The links of the page's <nav> as (href, text, current), and of its <main>."""

    def __init__(self):
        super().__init__()
        self.nav: list[tuple[str, str, bool]] = []
        self.main: list[str] = []
        self._in: str | None = None
        self._link: list | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("nav", "main"):
            self._in = tag
        elif tag == "a" and self._in == "nav":
            self._link = [attrs["href"], "", attrs.get("aria-current") == "page"]
        elif tag == "a" and self._in == "main":
            self.main.append(attrs["href"])

    def handle_data(self, data):
        if self._link is not None:
            self._link[1] += data

    def handle_endtag(self, tag):
        if tag == "a" and self._link is not None:
            self.nav.append((self._link[0], self._link[1].strip(), self._link[2]))
            self._link = None
        elif tag in ("nav", "main"):
            self._in = None


def links(client: Client, url: str) -> NavLinks:
    response = client.get(url)
    assert response.status_code == 200, url
    parser = NavLinks()
    parser.feed(response.content.decode())
    return parser


@pytest.fixture
def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_home__links_to_every_page_a_person_uses(signed_in):
    main = links(signed_in, "/").main
    assert [reverse(page.url_name) for page in PAGES] == [
        "/proposals/",
        "/sale/",
        "/staking/",
        "/hive/conversations/",
        "/hive/board/",
    ]
    assert set(main) >= {reverse(page.url_name) for page in PAGES}


def test_pages__share_one_navigation_bar_marking_the_current_page(signed_in, user, staff_user):
    now = timezone.now()
    open_proposal = proposal_create(
        proposer=staff_user,
        title="Plant more flowers",
        description="More nectar.",
        voting_starts_at=now,
        voting_ends_at=now + timedelta(days=7),
        quorum=Decimal("10"),
    )
    # A draft is for staff only: the signed-in member sees the proposal once it is open.
    proposal_open(actor=staff_user, proposal_id=open_proposal.pk)
    conversation = conversation_create(owner=user, title="Nectar plans")
    # Each page, and the bar entry it belongs to.
    pages = {
        "/": "/",
        "/proposals/": "/proposals/",
        f"/proposals/{open_proposal.pk}/": "/proposals/",
        "/sale/": "/sale/",
        "/staking/": "/staking/",
        "/hive/conversations/": "/hive/conversations/",
        f"/hive/conversations/{conversation.id}/": "/hive/conversations/",
        "/hive/board/": "/hive/board/",
    }
    bars = {}
    for url, entry in pages.items():
        nav = links(signed_in, url).nav
        assert [href for href, _, current in nav if current] == [entry], url
        bars[url] = [(href, text) for href, text, _ in nav]
    expected = [("/", "OMK Hive"), *((reverse(p.url_name), p.label) for p in PAGES)]
    assert all(bar == expected for bar in bars.values()), bars


def test_login_page__shows_the_bar_with_log_in(client):
    nav = links(client, reverse("login")).nav
    assert [href for href, _, _ in nav] == ["/", *(reverse(p.url_name) for p in PAGES), reverse("login")]
