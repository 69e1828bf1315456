"""Signing in to the workbench: a signed session cookie instead of a bearer token, and CSRF.

An inspector gives their token once on the sign-in page; the page then holds a session
cookie (HttpOnly, SameSite=Strict, signed with the session key, expiring after
``SECM_SESSION_HOURS``) that carries the token's SHA-256, never the token. Every page reads
the token again by that hash (through the same per-process cache as the API), so a revoked or
expired token ends its sessions as it ends its API calls.

Every form that changes something carries a CSRF token: an HMAC of the session cookie under
the session key, checked on submission (the sign-in form, before any session, the HMAC of a
random cookie set with the form). SameSite=Strict already keeps other sites' forms from
sending the cookie; the token also stops a form posted from a page that was not ours.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request, status
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "secm_session"
SIGNIN_COOKIE = "secm_signin"
LANG_COOKIE = "secm_lang"


@dataclass(frozen=True)
class Cookies:
    """The signing of the workbench's cookies under one key."""

    key: bytes
    hours: float

    @property
    def seconds(self) -> int:
        """How long a session lasts."""
        return int(self.hours * 3600)

    @property
    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.key, salt="secm-session")

    def session(self, hashed: str) -> str:
        """A session cookie's value for the token hashed ``hashed``."""
        return self._serializer.dumps({"token": hashed, "nonce": secrets.token_hex(8)})

    def token_hash(self, request: Request) -> str | None:
        """The token hash of the request's session, or None without a valid, unexpired one."""
        value = request.cookies.get(SESSION_COOKIE)
        if not value:
            return None
        try:
            found = self._serializer.loads(value, max_age=self.seconds)
        except BadSignature:
            return None
        return found.get("token") if isinstance(found, dict) else None

    def form_token(self, cookie: str, value: str) -> str:
        """The CSRF token of forms sent with the cookie ``cookie`` set to ``value``."""
        return hmac.new(self.key, f"{cookie}:{value}".encode(), hashlib.sha256).hexdigest()

    def csrf(self, request: Request, cookie: str = SESSION_COOKIE) -> str:
        """The CSRF token forms of this session (or of the sign-in form) carry."""
        return self.form_token(cookie, request.cookies.get(cookie, ""))

    def check_csrf(self, request: Request, given: str, cookie: str = SESSION_COOKIE) -> None:
        """403 unless ``given`` is this session's CSRF token."""
        if not request.cookies.get(cookie) or not hmac.compare_digest(given, self.csrf(request, cookie)):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "The form has expired or did not come from this page")

    @staticmethod
    def nonce() -> str:
        return secrets.token_hex(16)

    def set(self, response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age if max_age is not None else self.seconds,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
