"""Request and response bodies of the notification API, shaped like Galaxy's."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Variant = Literal["info", "warning", "urgent"]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Id = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


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

    source: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    category: Literal["message", "new_shared_item"]
    variant: Variant
    content: Content
    publication_time: datetime | None = None
    expiration_time: datetime | None = None


class Recipients(msgspec.Struct, forbid_unknown_fields=True):
    """Who receives a notification; groups and roles are expanded to users."""

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
