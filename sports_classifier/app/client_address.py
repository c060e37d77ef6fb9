"""Which client sent a request: the key of the per-client rate limit (``uploads.RateLimiter``).

Behind a reverse proxy every request comes from the proxy's address, so keyed on it all
visitors would share one budget. ``X-Forwarded-For`` carries the client's address, but any
client can write that header: it is read only when the request came from a proxy this app was
told to trust, and then from the right, skipping the trusted proxies' own hops, so that what a
client wrote on the left is never taken for its address.

- On a Hugging Face Space (``SYSTEM=spaces``) the app is reachable only through the Space's
  proxy: the connecting peer is trusted, and so are private-network hops inside the chain
  (the Hub's own proxies); the rightmost public address is the client.
- Elsewhere, only ``--trusted-proxy`` addresses or networks (e.g. ``10.0.0.5``, ``10.0.0.0/8``)
  are trusted; without one the header is ignored and the peer's address is the key.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Mapping

SPACES_ENV = ("SYSTEM", "spaces")  # what a Hugging Face Space sets in the app's environment


def _ip(text: str | None):
    try:
        return ipaddress.ip_address((text or "").strip().strip("[]"))
    except ValueError:
        return None


class ClientAddress:
    """``ClientAddress(["10.0.0.0/8"])(request)`` -> the client's address as a string."""

    def __init__(self, trusted_proxies: Iterable[str] = (), *, on_spaces: bool = False):
        try:
            self.networks = tuple(ipaddress.ip_network(p.strip(), strict=False) for p in trusted_proxies)
        except ValueError as exc:
            from ..errors import UserInputError

            raise UserInputError(f"--trusted-proxy: {exc} (give an IP address or a network like 10.0.0.0/8)") from None
        self.on_spaces = on_spaces

    @classmethod
    def from_environment(cls, trusted_proxies: Iterable[str] = (), env: Mapping[str, str] | None = None):
        import os

        env = os.environ if env is None else env
        return cls(trusted_proxies, on_spaces=env.get(SPACES_ENV[0]) == SPACES_ENV[1])

    @property
    def behind_proxy(self) -> bool:
        return self.on_spaces or bool(self.networks)

    def _trusted_peer(self, ip) -> bool:
        return self.on_spaces or (ip is not None and any(ip in n for n in self.networks))

    def _trusted_hop(self, ip) -> bool:
        if ip is None:
            return False
        if any(ip in n for n in self.networks):
            return True
        return self.on_spaces and (ip.is_private or ip.is_loopback or ip.is_link_local)

    def __call__(self, request) -> str | None:
        peer = getattr(getattr(request, "client", None), "host", None)
        if not self.behind_proxy or not self._trusted_peer(_ip(peer)):
            return peer
        headers = getattr(request, "headers", None) or {}
        getlist = getattr(headers, "getlist", None)
        values = getlist("x-forwarded-for") if getlist else [headers.get("x-forwarded-for") or ""]
        hops = [h.strip() for value in values for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            ip = _ip(hop)
            if not self._trusted_hop(ip):
                return str(ip) if ip is not None else peer  # garbage where an address should be: the proxy's key
        return str(_ip(hops[0])) if hops and _ip(hops[0]) else peer
