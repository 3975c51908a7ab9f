"""Who may do what: bearer keys per role (client < labeler < admin), checked as route
dependencies. Keys are configured as SHA-256 hashes (``VIDMON_AUTH__*_KEYS``); the admin
key ``VIDMON_ADMIN_KEY`` is an admin key too. Labels drive retraining and the gate, so once
keys are set only labelers may post them: otherwise anyone who could reach the API could
have a poisoned model promoted."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from fastapi import Request

from monitor.errors import Forbidden, Unauthorized
from monitor.settings import Settings

ROLES = ("client", "labeler", "admin")


def hash_key(key: str) -> str:
    """How a key is configured: ``sha256:<hex>`` of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class Keys:
    """The role of each configured key."""

    def __init__(self, settings: Settings) -> None:
        self.auth = settings.auth
        self.roles: dict[str, str] = {}
        for role, hashes in (("client", settings.auth.client_keys),
                             ("labeler", settings.auth.labeler_keys),
                             ("admin", settings.auth.admin_keys)):
            for value in hashes:
                self.roles[value] = role
        if settings.admin_key is not None:
            self.roles[hash_key(settings.admin_key.get_secret_value())] = "admin"

    def role_of(self, key: str) -> str | None:
        """The role of a presented key, or None (every hash compared in constant time)."""
        presented = hash_key(key)
        found = None
        for value, role in self.roles.items():
            if hmac.compare_digest(value, presented):
                found = role
        return found

    def check(self, request: Request, role: str) -> None:
        """``Unauthorized`` without a key, ``Forbidden`` with a key of too low a role."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(f"send Authorization: Bearer <key>: this needs a {role} key")
        held = self.role_of(token.strip())
        if held is None:
            raise Forbidden("the key is not valid")
        if ROLES.index(held) < ROLES.index(role):
            raise Forbidden(f"a {held} key may not do this: it needs a {role} key")


def require(role: str) -> Callable[[Request], None]:
    """A route dependency: a key of ``role`` or higher, when keys guard that role."""
    def check(request: Request) -> None:
        keys: Keys = request.app.state.keys
        if keys.auth.guards(role):
            keys.check(request, role)
    check.__name__ = f"require_{role}"
    return check
