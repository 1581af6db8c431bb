"""Wire schemas: changes on `TIDINGS_CHANGES` and browser events on `TIDINGS_EVENTS`.

A *change* is a row-level fact read from Postgres by the bridge. An *event* is
what a browser receives. Every service encodes and decodes these through the
module-level encoder and decoders below, so the schemas live in one place.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

# Any kind a trigger records. The enricher's registry maps each kind to its
# audience, and a change of a kind it does not know goes to the dead letters.
ChangeKind = str


class Change(msgspec.Struct, frozen=True):
    """One changed row, as the bridge publishes it to `TIDINGS_CHANGES`."""

    kind: ChangeKind
    key: str
    commit_time: datetime


class HistoryUpdate(msgspec.Struct, frozen=True):
    """Data of a `history_update` event: these histories changed."""

    history_ids: list[str]
    update_time: datetime


class NotificationUpdate(msgspec.Struct, frozen=True):
    """Data of a `notification_update` event: these notifications changed."""

    notification_ids: list[str]
    update_time: datetime


class BroadcastUpdate(msgspec.Struct, frozen=True):
    """Data of a `broadcast_update` event: these broadcasts changed."""

    notification_ids: list[str]
    update_time: datetime


class EntryPointUpdate(msgspec.Struct, frozen=True):
    """Data of an `entry_point_update` event: interactive tool entry points changed.

    `job_ids` lists the job of each entry point, in the same order.
    """

    entry_point_ids: list[str]
    job_ids: list[str]
    update_time: datetime


class Reset(msgspec.Struct, frozen=True):
    """Data of a `reset` event: the client must refetch its state."""

    reason: str
    message: str


# Schema of the `data` of each event type that the enricher publishes.
EVENT_DATA_TYPES: dict[str, type[msgspec.Struct]] = {
    "history_update": HistoryUpdate,
    "notification_update": NotificationUpdate,
    "broadcast_update": BroadcastUpdate,
    "entry_point_update": EntryPointUpdate,
}

encoder = msgspec.json.Encoder()
change_decoder = msgspec.json.Decoder(Change)


def encode(value: msgspec.Struct) -> bytes:
    """Encode a schema value as compact JSON (one line, no raw CR or LF)."""
    return encoder.encode(value)


class BroadcastSummary(msgspec.Struct, frozen=True):
    """An active broadcast, as listed in a `notification_status` event."""

    id: str
    source: str | None
    variant: str | None
    create_time: datetime
    update_time: datetime
    publication_time: datetime
    expiration_time: datetime | None
    content: dict


class NotificationStatus(msgspec.Struct, frozen=True):
    """Data of a `notification_status` event: the caller's unread summary.

    `total_unread_count` counts the caller's active, unseen, undeleted
    notifications; `broadcasts` lists the active broadcasts, newest first.
    """

    total_unread_count: int
    broadcasts: list[BroadcastSummary]
