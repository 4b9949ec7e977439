import re
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.conf import accounts_settings
from accounts.services import api_token_issue

_DURATION = re.compile(r"^([1-9][0-9]{0,4})([dh]?)$")


def parse_duration(text: str) -> timedelta:
    """`90` or `90d` days, `12h` hours."""
    match = _DURATION.match(text.strip())
    if not match:
        raise CommandError(f"--expires-in must be a number of days (90, 90d) or hours (12h), got {text!r}.")
    count, unit = int(match[1]), match[2] or "d"
    return timedelta(hours=count) if unit == "h" else timedelta(days=count)


class Command(BaseCommand):
    help = "Create an API bearer token for USERNAME and print it (shown once; stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label for the token, shown in the admin.")
        parser.add_argument(
            "--expires-in",
            default=f"{accounts_settings.TOKEN_DAYS}d",
            help="How long the token is valid: days (90, 90d) or hours (12h). Default: %(default)s.",
        )

    def handle(self, *args, username: str, name: str, expires_in: str, **options):
        lifetime = parse_duration(expires_in)
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        token, raw = api_token_issue(user=user, name=name, expires_in=lifetime)
        self.stderr.write(f"Valid until {token.expires_at.isoformat()}.")
        self.stdout.write(raw)
