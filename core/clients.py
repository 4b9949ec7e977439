"""Who is calling: the client's address, as the throttles and the login lockout count it.

Behind a load balancer REMOTE_ADDR is the balancer's, the same for everyone: counting by it
would lock every user out at once. X-Forwarded-For is `<what the client sent>, ..., <what each
trusted proxy appended>`; only the entries our own proxies appended can be believed (a client
can write anything before them). OMK_TRUSTED_PROXY_HOPS says how many there are: the client's
address is that many entries from the right (Google's external Application Load Balancer
appends `<client>, <balancer>`: 2). 0 (the default): REMOTE_ADDR, for a service reached directly.
"""

from __future__ import annotations

import ipaddress

from django.http import HttpRequest

from core.conf import core_settings


def client_ip(request: HttpRequest) -> str:
    hops = core_settings.TRUSTED_PROXY_HOPS
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    if hops <= 0:
        return remote
    entries = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(entries) < hops:
        # Fewer entries than our proxies append: the request did not come through them.
        return remote
    candidate = entries[-hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def axes_client_ip(request: HttpRequest) -> str:
    """AXES_CLIENT_IP_CALLABLE: the login lockout counts addresses as the throttles do."""
    return client_ip(request)
