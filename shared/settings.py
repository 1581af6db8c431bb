"""Typed settings, read from `TIDINGS_*` environment variables.

Every service reads the same `Settings`; each uses the fields it needs. The
README lists every variable with its default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from tidings.shared.errors import ConfigurationError

PREFIX = "TIDINGS_"


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Configuration of one Tidings process."""

    database_url: str = ""
    nats_url: str = ""
    host: str = "127.0.0.1"
    edge_port: int = 8080
    api_port: int = 8081
    bridge_port: int = 8082
    enricher_port: int = 8083
    admin_users: str = ""
    admin_api_key: str = ""
    keepalive_seconds: float = 15.0
    retry_ms: int = 3000
    queue_size: int = 256
    events_max_age_seconds: float = 24 * 3600.0
    events_max_bytes: int = 1024**3
    changes_max_age_seconds: float = 24 * 3600.0
    bridge_mode: Literal["listen", "poll", "auto"] = "auto"
    bridge_coalesce_ms: Annotated[float, msgspec.Meta(ge=0)] = 100.0
    bridge_overlap_seconds: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    bridge_poll_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    bridge_lease_seconds: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    bridge_audit_retention_seconds: Annotated[float, msgspec.Meta(ge=0)] = (
        7 * 24 * 3600.0
    )
    stream_replicas: int = 1
    api_key_cache_seconds: float = 60.0
    cors_origins: str = ""
    demo: bool = False
    log_format: str = "auto"
    log_level: str = "INFO"
    otel: str = ""
    enricher_max_deliver: int = 5
    enricher_ack_wait_seconds: float = 30.0
    enricher_cache_size: int = 100_000
    enricher_cache_seconds: float = 300.0
    dead_letters_max_age_seconds: float = 7 * 24 * 3600.0
    token_secret: str = ""
    token_ttl_seconds: float = 600.0
    id_secret: str = ""
    session_cache_seconds: float = 60.0
    max_streams: int = 10_000
    max_streams_per_user: int = 16
    drain_seconds: float = 10.0
    api_public_url: str = ""

    @property
    def admin_emails(self) -> frozenset[str]:
        """Emails of the users who may call admin routes."""
        return frozenset(e.strip() for e in self.admin_users.split(",") if e.strip())

    @property
    def cors_origin_list(self) -> list[str]:
        """Origins allowed to call the API and the stream from a browser."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def replace(self, **changes: object) -> Settings:
        """Return a copy with some fields changed."""
        return msgspec.structs.replace(self, **changes)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from `TIDINGS_*` variables, raising on invalid values."""
    environ = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    for field in msgspec.structs.fields(Settings):
        name = PREFIX + field.name.upper()
        if name in environ:
            raw[field.name] = environ[name]
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(_describe(exc, raw)) from exc


def _describe(exc: msgspec.ValidationError, raw: dict[str, str]) -> str:
    # msgspec names the field as "$.field"; name the variable a user sets.
    message = str(exc)
    if "$." not in message:
        return f"invalid setting: {message}"
    field = message.split("$.", 1)[1].split("`", 1)[0].split()[0].strip("'")
    name = PREFIX + field.upper()
    return f"invalid {name}={raw.get(field, '')!r}: {message.split(' - ')[0]}"
