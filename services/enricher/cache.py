"""A bounded cache of audience lookups, invalidated by tag.

Each entry carries tags naming the rows its value was read from, such as
`history:42` or `session:7`. An `audience` change names one tag, and every
entry carrying it is dropped. Entries also expire after a maximum age, so a
missed invalidation cannot keep an audience wrong for longer than that.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any


class _Entry:
    __slots__ = ("expires", "tags", "value")

    def __init__(self, value: Any, tags: tuple[str, ...], expires: float):
        self.value = value
        self.tags = tags
        self.expires = expires


class AudienceCache:
    """Least recently used lookups, at most `max_entries`, each for `max_age` seconds.

    A cache with `max_entries` 0 stores nothing.
    """

    def __init__(self, max_entries: int, max_age: float):
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._keys_by_tag: dict[str, set[str]] = {}
        self._generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.expires > time.monotonic()

    @property
    def generation(self) -> int:
        """Counter that grows with every invalidation.

        Read it before a database lookup and pass it to `put`: a value read
        while an invalidation arrived may be stale and is not stored.
        """
        return self._generation

    def get(self, key: str) -> Any | None:
        """Return the cached value of `key`, or None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None or entry.expires <= time.monotonic():
            if entry is not None:
                self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: str, value: Any, tags: list[str], generation: int) -> None:
        """Store `value` unless an invalidation happened since `generation`."""
        if self.max_entries <= 0 or generation != self._generation:
            return
        self._remove(key)
        expires = time.monotonic() + self.max_age
        self._entries[key] = _Entry(value, tuple(tags), expires)
        for tag in tags:
            self._keys_by_tag.setdefault(tag, set()).add(key)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    def invalidate(self, tag: str) -> int:
        """Drop every entry tagged `tag`; return how many were dropped."""
        self._generation += 1
        keys = self._keys_by_tag.pop(tag, set())
        for key in keys:
            self._remove(key)
        return len(keys)

    def clear(self) -> None:
        """Drop every entry."""
        self._generation += 1
        self._entries.clear()
        self._keys_by_tag.clear()

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for tag in entry.tags:
            keys = self._keys_by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_by_tag[tag]
