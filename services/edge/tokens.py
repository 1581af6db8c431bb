"""Signed, short-lived stream tokens.

A token is `<payload>.<signature>`, both base64url without padding. The
payload is JSON naming the audience the bearer may hear (`sub`, such as
`user.5` or `session.<hash>`), the user id when there is one (`uid`) and the
expiry in Unix seconds (`exp`). The signature is HMAC-SHA256 over the encoded
payload with the first secret of `TIDINGS_TOKEN_SECRET`. Every secret listed
there is accepted when verifying, so a secret can be rotated without cutting
open sessions short.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

import msgspec

from tidings.shared.errors import ConfigurationError, TidingsError

_MAX_TOKEN_LENGTH = 1024


class TokenError(TidingsError):
    """A stream token that cannot be accepted; `reason` is a short code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class TokenClaims(msgspec.Struct, frozen=True):
    """What a token grants: the audience `sub`, the user `uid`, the expiry `exp`."""

    sub: str
    exp: int
    uid: int | None = None


_decoder = msgspec.json.Decoder(TokenClaims)


class TokenSigner:
    """Mints and verifies stream tokens with the secrets of `TIDINGS_TOKEN_SECRET`."""

    def __init__(self, secrets: str, ttl_seconds: float):
        keys = [s.strip().encode() for s in secrets.split(",") if s.strip()]
        if any(len(k) < 16 for k in keys):
            raise ConfigurationError(
                "TIDINGS_TOKEN_SECRET: each secret must be at least 16 characters"
            )
        self._keys = keys
        self.ttl_seconds = ttl_seconds

    @property
    def enabled(self) -> bool:
        """Whether a secret is configured, so tokens can be minted and verified."""
        return bool(self._keys)

    def mint(self, sub: str, uid: int | None, now: float | None = None) -> str:
        """Return a token for audience `sub` that expires after the TTL."""
        if not self._keys:
            raise ConfigurationError(
                "stream tokens are disabled: set TIDINGS_TOKEN_SECRET"
            )
        now = time.time() if now is None else now
        claims = TokenClaims(sub=sub, uid=uid, exp=int(now + self.ttl_seconds))
        payload = _b64encode(msgspec.json.encode(claims))
        return f"{payload}.{_b64encode(self._sign(self._keys[0], payload))}"

    def verify(self, token: str, now: float | None = None) -> TokenClaims:
        """Return the claims of a valid token; raise `TokenError` otherwise."""
        if not self._keys:
            raise TokenError("token_disabled", "stream tokens are not enabled here")
        malformed = len(token) > _MAX_TOKEN_LENGTH or not token.isascii()
        if malformed or token.count(".") != 1:
            raise TokenError("token_invalid", "stream token is malformed")
        payload, _, signature = token.partition(".")
        try:
            given = _b64decode(signature)
        except (binascii.Error, ValueError):
            raise TokenError("token_invalid", "stream token is malformed") from None
        if not any(
            hmac.compare_digest(given, self._sign(key, payload)) for key in self._keys
        ):
            raise TokenError("token_invalid", "stream token signature is not valid")
        try:
            claims = _decoder.decode(_b64decode(payload))
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise TokenError("token_invalid", "stream token is malformed") from None
        now = time.time() if now is None else now
        if claims.exp <= now:
            raise TokenError(
                "token_expired", "stream token has expired; request a new one"
            )
        return claims

    @staticmethod
    def _sign(key: bytes, payload: str) -> bytes:
        return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    raw = text.encode("ascii", errors="strict")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
