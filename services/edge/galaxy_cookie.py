"""Decoding Galaxy's `galaxysession` cookie into the session key it carries.

Galaxy sets the cookie to `encode_guid(session_key)`: the key, left-padded
with `!` to a multiple of 8 bytes (a whole block of `!` when it is already a
multiple), encrypted with Blowfish in ECB mode under the `id_secret` of
Galaxy's configuration, then hex-encoded (galaxy/security/idencoding.py).
With `TIDINGS_ID_SECRET` set to the same secret the edge reverses that. With
no secret the cookie value is taken to be the session key itself, for
applications that store it in the clear.
"""

from __future__ import annotations

import binascii

from cryptography.hazmat.decrepit.ciphers.algorithms import Blowfish
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from tidings.shared.errors import ConfigurationError

COOKIE_NAME = "galaxysession"

# Blowfish keys are 4 to 56 bytes, as Galaxy's MAXIMUM_ID_SECRET_BITS = 448.
_MIN_KEY_BYTES, _MAX_KEY_BYTES = 4, 56
_MAX_COOKIE_LENGTH = 1024


class SessionCookieDecoder:
    """Turns a `galaxysession` cookie value into a session key, or None."""

    def __init__(self, id_secret: str):
        self._cipher: Cipher | None = None
        if id_secret:
            key = id_secret.encode()
            if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
                raise ConfigurationError(
                    f"TIDINGS_ID_SECRET must be {_MIN_KEY_BYTES} to "
                    f"{_MAX_KEY_BYTES} bytes long, as Galaxy's id_secret; "
                    f"it is {len(key)}"
                )
            self._cipher = Cipher(Blowfish(key), modes.ECB())

    def decode(self, cookie: str) -> str | None:
        """Return the session key in `cookie`, or None when it cannot be one."""
        if not cookie or len(cookie) > _MAX_COOKIE_LENGTH:
            return None
        if self._cipher is None:
            return cookie
        try:
            encrypted = binascii.unhexlify(cookie)
        except (binascii.Error, ValueError):
            return None
        if not encrypted or len(encrypted) % 8:
            return None
        decryptor = self._cipher.decryptor()
        padded = decryptor.update(encrypted) + decryptor.finalize()
        try:
            key = padded.decode("utf-8").lstrip("!")
        except UnicodeDecodeError:
            return None
        return key or None

    def encode(self, session_key: str) -> str:
        """Return the cookie value Galaxy would set for `session_key`."""
        if self._cipher is None:
            return session_key
        raw = session_key.encode()
        padded = b"!" * (8 - len(raw) % 8) + raw
        encryptor = self._cipher.encryptor()
        return (encryptor.update(padded) + encryptor.finalize()).hex()
