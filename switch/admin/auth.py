"""Who may use the admin server: bearer tokens, stored only as their SHA-256, and two roles.

Tokens are made by `airswitch admin token` (32 random bytes, URL-safe base64), so a plain
SHA-256 of the token is enough: there is nothing to guess that a slow hash would protect.
`viewer` reads; `operator` also resolves reversals and reloads the configuration.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Sequence

from switch.app.config import AdminUser

ROLES = ("viewer", "operator")   # in order of what they may do: each role may do what those before it may
TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    """What goes into the configuration for a token: `sha256:` and its hex digest."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def user_of(authorization: str | None, users: Sequence[AdminUser]) -> AdminUser | None:
    """The user whose token an `Authorization: Bearer <token>` header carries, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    presented = hash_token(token)
    found = None
    for user in users:   # every user compared, in constant time, whoever matches
        if hmac.compare_digest(presented, user.token_hash):
            found = user
    return found


def may(user: AdminUser, role: str) -> bool:
    """True if `user` has `role` or a role above it."""
    return ROLES.index(user.role) >= ROLES.index(role)
