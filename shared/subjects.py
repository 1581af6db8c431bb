"""Stream names, subjects and stream configurations.

Subjects:
- `tidings.change.<kind>.<key>`: changes, in `TIDINGS_CHANGES`;
- `tidings.event.<audience>`: events, in `TIDINGS_EVENTS`, where the audience
  is `user.<id>`, `session.<hash>` or `all`;
- `tidings.live.<audience>`: core subjects that `TIDINGS_EVENTS` republishes
  every stored event to, for edges to subscribe to.
"""

from __future__ import annotations

import hashlib

from nats.js.api import (
    DiscardPolicy,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from tidings.shared.settings import Settings

CHANGES_STREAM = "TIDINGS_CHANGES"
EVENTS_STREAM = "TIDINGS_EVENTS"
DEAD_LETTERS_STREAM = "TIDINGS_DEAD_LETTERS"
ENRICHER_DURABLE = "tidings-enricher"

CHANGE_PREFIX = "tidings.change"
EVENT_PREFIX = "tidings.event"
LIVE_PREFIX = "tidings.live"
DEAD_LETTER_PREFIX = "tidings.dead"

# Kind of the changes that make cached audiences stale. Their key is a cache
# tag such as `history:42` or `session:7`.
AUDIENCE_KIND = "audience"

# Header carrying the event type on messages of TIDINGS_EVENTS.
EVENT_TYPE_HEADER = "Tidings-Event"

# Header carrying the commit time of an event's change on messages of
# TIDINGS_EVENTS, in seconds since the epoch, for latency metrics.
COMMIT_TIME_HEADER = "Tidings-Commit-Time"

DUPLICATE_WINDOW_SECONDS = 120.0


def change_subject(kind: str, key: str) -> str:
    """Subject of a change of one row."""
    return f"{CHANGE_PREFIX}.{kind}.{key}"


def user_audience(user_id: int | str) -> str:
    """Audience token of one user."""
    return f"user.{user_id}"


def session_audience(session_key: str) -> str:
    """Audience token of an anonymous session: a hash, never the key itself."""
    digest = hashlib.sha256(session_key.encode()).hexdigest()[:32]
    return f"session.{digest}"


ALL_AUDIENCE = "all"


def event_subject(audience: str) -> str:
    """Subject an enricher publishes an event for this audience to."""
    return f"{EVENT_PREFIX}.{audience}"


def live_subject(audience: str) -> str:
    """Core subject an edge subscribes to for this audience's live events."""
    return f"{LIVE_PREFIX}.{audience}"


def dead_letter_subject(subject: str) -> str:
    """Subject a change that cannot be enriched is kept on, from its own subject.

    `tidings.change.history.42` becomes `tidings.dead.change.history.42`.
    """
    prefix = CHANGE_PREFIX.rsplit(".", 1)[0] + "."
    return f"{DEAD_LETTER_PREFIX}.{subject.removeprefix(prefix)}"


def changes_stream_config(settings: Settings) -> StreamConfig:
    """Configuration of the stream of changes."""
    return StreamConfig(
        name=CHANGES_STREAM,
        subjects=[f"{CHANGE_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.changes_max_age_seconds,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=settings.stream_replicas,
    )


def events_stream_config(settings: Settings) -> StreamConfig:
    """Configuration of the durable log of events, republished to live subjects."""
    return StreamConfig(
        name=EVENTS_STREAM,
        subjects=[f"{EVENT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        max_age=settings.events_max_age_seconds,
        max_bytes=settings.events_max_bytes,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=settings.stream_replicas,
        republish=RePublish(src=f"{EVENT_PREFIX}.>", dest=f"{LIVE_PREFIX}.>"),
    )


def dead_letters_stream_config(settings: Settings) -> StreamConfig:
    """Configuration of the stream keeping changes the enricher gave up on."""
    return StreamConfig(
        name=DEAD_LETTERS_STREAM,
        subjects=[f"{DEAD_LETTER_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.dead_letters_max_age_seconds,
        num_replicas=settings.stream_replicas,
    )
