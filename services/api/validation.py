"""Checks of request values that the body schemas cannot express alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from litestar.exceptions import ValidationException
from litestar.params import Parameter

# A notification expires this long after its publication unless a time is given.
DEFAULT_LIFETIME = timedelta(days=183)
MAX_ID = 2**31 - 1

# Path parameter of a notification id. It is matched as a string, so that
# a malformed id gets a 400 naming it rather than a 404 for an unknown route.
NotificationIdPath = Annotated[
    str,
    Parameter(
        description="Id of the notification, a positive integer",
        pattern=r"^[0-9]{1,10}$",
    ),
]


def invalid(field: str, message: str) -> ValidationException:
    """Build a 400 whose message and `extra` name the bad field."""
    return ValidationException(
        f"{field}: {message}", extra=[{"key": field, "message": message}]
    )


def parse_notification_id(value: str) -> int:
    """Parse a path's notification id, or raise a 400 naming `notification_id`."""
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= MAX_ID:
        raise invalid(
            "notification_id", f"{value!r} is not an id between 1 and {MAX_ID}"
        )
    return int(value)


def to_utc(value: datetime | None, field: str) -> datetime | None:
    """Naive UTC, as stored; naive input is taken to be UTC already."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise invalid(field, f"{value.isoformat()} is out of range") from None


def utc_now() -> datetime:
    """Return the current time as naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def publication_window(
    publication_time: datetime | None,
    expiration_time: datetime | None,
    prefix: str,
) -> tuple[datetime, datetime]:
    """Publication (default now) and expiration (default 6 months later) in UTC.

    Raises a 400 naming `<prefix>expiration_time` unless it is after the
    publication time.
    """
    publication = to_utc(publication_time, f"{prefix}publication_time") or utc_now()
    expiration = to_utc(expiration_time, f"{prefix}expiration_time")
    if expiration is None:
        try:
            expiration = publication + DEFAULT_LIFETIME
        except OverflowError:
            raise invalid(
                f"{prefix}publication_time", "is too late to expire after it"
            ) from None
    check_window(publication, expiration, prefix)
    return publication, expiration


def check_window(
    publication: datetime, expiration: datetime | None, prefix: str
) -> None:
    """Raise a 400 unless `expiration` is after `publication` (or None)."""
    if expiration is not None and expiration <= publication:
        raise invalid(
            f"{prefix}expiration_time",
            f"must be after {prefix}publication_time "
            f"({expiration.isoformat()} <= {publication.isoformat()})",
        )
