"""One end-to-end run in a real browser (Debian's Chromium driven by Playwright) against a real
gunicorn instance: from the home page, by its list and by the navigation bar, to every page, log
in, start a conversation, post to the board, see the balance, stake, vote, and see the vote
counted."""

import shutil
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from governance.models import StakingPosition, Vote

CHROMIUM = "/usr/bin/chromium"
# The bar's entries and the heading of the page each opens.
BAR = [
    ("Proposals", "Proposals"),
    ("Private sale", "Private sale"),
    ("Staking and balance", "Staking"),
    ("Conversations", "Your conversations with the Queen"),
    ("Board", "Hive board"),
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="scripts/install-system-packages.sh installs chromium"),
]


@pytest.mark.django_db(transaction=True)
def test_browser__walk_the_bar_log_in_stake_vote_and_see_it_counted(start_instance, open_proposal):
    from playwright.sync_api import expect, sync_playwright

    from tests.support.tokens import fund

    # Bea has paid for 42.5 tokens (a purchase confirmed by the processor's webhook).
    fund(get_user_model().objects.create_user(username="bea", password="bea-password-1"), "42.5")
    instance = start_instance()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)

            # From the home page, through the bar, as a person would.
            page.goto(f"{instance.url}/")
            nav = page.get_by_role("navigation", name="Main")
            nav.get_by_role("link", name="Proposals").click()
            assert "/login/" in page.url  # not logged in: sent to the login page
            page.get_by_label("Username").fill("bea")
            page.get_by_label("Password").fill("bea-password-1")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Proposals")).to_be_visible()
            # Every page of the bar opens, with the same bar and itself marked current.
            for label, heading in BAR:
                nav.get_by_role("link", name=label).click()
                expect(page.get_by_role("heading", level=1)).to_have_text(heading)
                expect(nav.locator("[aria-current=page]")).to_have_text(label)
            # The home page links to every one of them too.
            for label, heading in BAR:
                nav.get_by_role("link", name="OMK Hive").click()
                expect(page.get_by_role("heading", level=1)).to_have_text("OMK Hive")
                page.get_by_role("main").get_by_role("link", name=label).click()
                expect(page.get_by_role("heading", level=1)).to_have_text(heading)

            # A conversation: started, opened, a turn sent and shown.
            nav.get_by_role("link", name="Conversations").click()
            page.get_by_label("Title").fill("Where are the clover fields?")
            page.get_by_role("button", name="Start a conversation").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Where are the clover fields?")
            page.locator("textarea[name=content]").fill("North of the hive, I think.")
            page.get_by_role("button", name="Send to the Queen").click()
            expect(page.locator("tr.turn-user")).to_contain_text("North of the hive, I think.")
            nav.get_by_role("link", name="Conversations").click()
            page.get_by_role("link", name="Where are the clover fields?").click()
            expect(page.locator("tr.turn-user")).to_contain_text("North of the hive, I think.")

            # The board: a post, shown with its author.
            nav.get_by_role("link", name="Board").click()
            page.locator("textarea[name=body]").fill("Clover blooms by the old oak.")
            page.get_by_role("button", name="Post").click()
            expect(page.locator("li.post").first).to_contain_text("Clover blooms by the old oak.")
            expect(page.locator("li.post").first).to_contain_text("bea")

            # The balance before staking: the paid tokens, nothing staked yet.
            nav.get_by_role("link", name="Staking and balance").click()
            expect(page.locator("#available")).to_have_text("42.5")
            expect(page.locator("#weight")).to_have_text("0")

            nav.get_by_role("link", name="Proposals").click()
            page.get_by_role("link", name="Plant more flowers").click()
            expect(page.get_by_role("heading", name="Plant more flowers")).to_be_visible()

            # Voting without stake is refused, in words.
            page.get_by_label("For", exact=True).check()
            page.get_by_role("button", name="Vote").click()
            expect(page.get_by_role("alert")).to_contain_text("You have no active stake")

            nav.get_by_role("link", name="Staking and balance").click()
            page.get_by_label("Amount").fill("42.5")
            page.get_by_label("Lock period (days)").fill("30")
            page.get_by_role("button", name="Stake").click()
            expect(page.get_by_text("Staked 42.5, locked until")).to_be_visible()
            expect(page.locator("#weight")).to_have_text("42.5")
            expect(page.locator("#available")).to_have_text("0")

            nav.get_by_role("link", name="Proposals").click()
            page.get_by_role("link", name="Plant more flowers").click()
            page.get_by_label("For", exact=True).check()
            page.get_by_role("button", name="Vote").click()
            expect(page.get_by_text("Your vote (for, weight 42.5) is counted.")).to_be_visible()
            expect(page.locator("#tally-for")).to_have_text("42.5")
            expect(page.locator("#my-vote")).to_contain_text("You voted for with weight 42.5")
        finally:
            browser.close()

    vote = Vote.objects.get(proposal=open_proposal)
    assert (vote.voter.username, vote.choice, vote.weight) == ("bea", "for", Decimal("42.5"))
    assert StakingPosition.objects.get(owner=vote.voter).amount == Decimal("42.5")
