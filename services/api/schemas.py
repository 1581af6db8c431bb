"""Request and response bodies of the notification API, shaped like Galaxy's."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Variant = Literal["info", "warning", "urgent"]
# Postgres text cannot hold a NUL character, so no string may contain one.
_NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=100_000, pattern=_NO_NUL)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=_NO_NUL)]
Id = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
Source = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=_NO_NUL)]
# An absolute http(s) URL or a path on the same server, as Galaxy accepts.
Link = Annotated[
    str, msgspec.Meta(pattern=r"^(https?://[^\s/]+|/)[^\s]*$", max_length=2048)
]
# Bulk requests name at most this many notifications.
MAX_BATCH = 1000
IdBatch = Annotated[list[Id], msgspec.Meta(max_length=MAX_BATCH)]


class MessageContent(msgspec.Struct, tag="message", tag_field="category"):
    """Content of a `message` notification; `message` is Markdown."""

    subject: Text
    message: Text


class NewSharedItemContent(msgspec.Struct, tag="new_shared_item", tag_field="category"):
    """Content of a `new_shared_item` notification."""

    item_type: Literal["history", "workflow", "visualization", "page"]
    item_name: Name
    owner_name: Name
    slug: Name


Content = MessageContent | NewSharedItemContent


class NotificationCreateData(msgspec.Struct, forbid_unknown_fields=True):
    """The notification itself; times are UTC, publication defaults to now."""

    source: Source
    category: Literal["message", "new_shared_item"]
    variant: Variant
    content: Content
    publication_time: datetime | None = None
    expiration_time: datetime | None = None


class Recipients(msgspec.Struct, forbid_unknown_fields=True):
    """Recipients of a notification; groups and roles are expanded to users."""

    user_ids: list[Id] = []
    group_ids: list[Id] = []
    role_ids: list[Id] = []


class NotificationCreateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /api/notifications`."""

    recipients: Recipients
    notification: NotificationCreateData


class NotificationResponse(msgspec.Struct):
    """A stored notification."""

    id: str
    source: str
    category: str
    variant: str
    create_time: datetime
    update_time: datetime
    publication_time: datetime
    expiration_time: datetime | None
    content: dict


class NotificationCreatedResponse(msgspec.Struct):
    """Result of creating a notification."""

    total_notifications_sent: int
    notification: NotificationResponse


class ActionLink(msgspec.Struct, forbid_unknown_fields=True):
    """A button of a broadcast: its title and the URL it opens."""

    action_name: Name
    link: Link


class BroadcastContent(
    msgspec.Struct, tag="broadcast", tag_field="category", forbid_unknown_fields=True
):
    """Content of a broadcast; `message` is Markdown."""

    subject: Text
    message: Text
    action_links: list[ActionLink] | None = None


class BroadcastNotificationCreateRequest(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True
):
    """Body of `POST /api/notifications/broadcast`; times are UTC."""

    source: Source
    variant: Variant
    content: BroadcastContent
    category: Literal["broadcast"] = "broadcast"
    publication_time: datetime | None = None
    expiration_time: datetime | None = None


class NotificationBroadcastUpdateRequest(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True
):
    """Body of `PUT /api/notifications/broadcast/{id}`: the fields to change."""

    source: Source | None = None
    variant: Variant | None = None
    publication_time: datetime | None = None
    expiration_time: datetime | None = None
    content: BroadcastContent | None = None


class UserNotificationUpdateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Changes to a user's notification: mark it seen or unseen, deleted or not."""

    seen: bool | None = None
    deleted: bool | None = None


class NotificationsBatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `DELETE /api/notifications`."""

    notification_ids: IdBatch


class UserNotificationsBatchUpdateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `PUT /api/notifications`: the same changes to many notifications."""

    notification_ids: IdBatch
    changes: UserNotificationUpdateRequest


class NotificationsBatchUpdateResponse(msgspec.Struct):
    """How many of the caller's notifications a bulk request changed."""

    updated_count: int


class UserNotificationResponse(NotificationResponse):
    """A notification in one recipient's view; `update_time` is their row's."""

    seen_time: datetime | None = None
    deleted: bool = False


class NotificationStatusSummary(msgspec.Struct):
    """Unread count, and notifications and broadcasts changed since a time."""

    total_unread_count: int
    notifications: list[UserNotificationResponse]
    broadcasts: list[NotificationResponse]
