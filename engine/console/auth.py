"""Authentication (HTTP Basic, RFC 7617, or bearer token, RFC 6750) and roles for the console and API.

Credentials come from :class:`engine.console.settings.ConsoleSettings`; comparisons are constant-time
(:func:`hmac.compare_digest`). A request without valid credentials gets 401 with
``WWW-Authenticate: Basic realm="engine console"`` (so a browser asks for them); a user without the role an
endpoint needs gets 403. State-changing requests from another origin (an ``Origin`` header that is not
this server) get 403, so that a page elsewhere cannot make a logged-in browser reprocess or discard.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from engine.console.settings import ConsoleUser

__all__ = ["Authenticator", "Principal", "basic_scheme", "bearer_scheme"]

REALM = 'Basic realm="engine console", charset="UTF-8"'
basic_scheme = HTTPBasic(auto_error=False, description="User name and password (console.users[].password_env)")
bearer_scheme = HTTPBearer(auto_error=False, description="Token from ENGINE_CONSOLE_TOKEN or users[].token_env")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    roles: frozenset[str]

    def has(self, role: str) -> bool:
        return role in self.roles


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class Authenticator:
    def __init__(self, users: Sequence[ConsoleUser]) -> None:
        self.users = tuple(users)

    def check(
        self, basic: HTTPBasicCredentials | None, bearer: HTTPAuthorizationCredentials | None
    ) -> Principal | None:
        found: ConsoleUser | None = None
        if bearer is not None and bearer.credentials:
            for user in self.users:  # no early exit: every token is compared
                if user.token is not None and _same(user.token, bearer.credentials) and found is None:
                    found = user
        elif basic is not None:
            for user in self.users:
                name_ok = _same(user.name, basic.username)
                if user.password is not None and _same(user.password, basic.password) and name_ok:
                    found = user
        return Principal(found.name, found.roles) if found else None

    def dependency(self) -> Callable[..., Principal]:
        def current_user(
            basic: HTTPBasicCredentials | None = Depends(basic_scheme),  # noqa: B008
            bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),  # noqa: B008
        ) -> Principal:
            principal = self.check(basic, bearer)
            if principal is None:
                raise HTTPException(
                    status.HTTP_401_UNAUTHORIZED, "authentication required", headers={"WWW-Authenticate": REALM}
                )
            return principal

        return current_user


def require(principal: Principal, role: str) -> None:
    """403 unless ``principal`` has ``role``."""
    if not principal.has(role):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"the role {role!r} is required")


def same_origin(request: Request) -> None:
    """403 for a state-changing request whose ``Origin`` is another site (CSRF defence)."""
    origin = request.headers.get("origin")
    if origin is None:  # not sent by browsers for same-origin form posts of older engines, nor by API clients
        return
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc != host:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-origin request refused")
