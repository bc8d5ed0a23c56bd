"""Which routes are authentication routes: the processor and the login detectors must agree."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_AUTH_PATTERNS", "AuthRoutes"]

DEFAULT_AUTH_PATTERNS = ("login", "signin", "sign-in", "auth", "token", "session")


class AuthRoutes:
    """A route template is an authentication route when it contains one of `patterns`.

    >>> auth = AuthRoutes()
    >>> auth("/v1/auth/login"), auth("/oauth/token"), auth("/products/{id}")
    (True, True, False)
    """

    def __init__(self, patterns: Sequence[str] = DEFAULT_AUTH_PATTERNS, max_cached: int = 100_000):
        self.patterns = tuple(p.lower() for p in patterns)
        self.max_cached = max_cached
        self._known: dict[str, bool] = {}

    def __call__(self, route: str) -> bool:
        known = self._known.get(route)
        if known is None:
            lowered = route.lower()
            known = any(p in lowered for p in self.patterns)
            if len(self._known) < self.max_cached:
                self._known[route] = known
        return known
