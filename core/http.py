"""Request types of the views that only run for a signed-in user.

django-stubs types `request.user` as `User | AnonymousUser`, and neither @login_required nor an
API authenticator narrows it. These subclasses are django-stubs' recommended annotation for such
views: the view's `request` parameter says what its decorator already guarantees.
"""

from django.contrib.auth.models import User
from django.http import HttpRequest


class AuthenticatedHttpRequest(HttpRequest):
    """A request past @login_required: anonymous users were redirected to the login page."""

    user: User


class ApiRequest(AuthenticatedHttpRequest):
    """A request past the API's authenticators (accounts.auth.api_auth): each returns the User,
    which django-ninja stores as `request.auth`; an unauthenticated request got a 401 instead."""

    auth: User
