"""Coalescing repeated changes of one key.

The first change of a key goes out at once and opens a window. Further
changes of that key inside the window go out once, when the window ends, and
that trailing change opens the next window. A key that changes a hundred
times a second is thus published about once per window, while a key that
changes once is published with no delay.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tidings.bridge import metrics
from tidings.bridge.audit import ChangeKey


@dataclass
class _Window:
    deadline: float
    pending: bool = False
    published_time: datetime | None = None


class Coalescer:
    """Per-key throttle with a leading and a trailing change per window."""

    def __init__(self, window_seconds: float, emit: Callable[[ChangeKey], None]):
        self._window_seconds = window_seconds
        self._emit = emit
        self._windows: dict[ChangeKey, _Window] = {}
        # Every window lasts the same time, so deadlines are appended in order
        # and the earliest is always at the left.
        self._deadlines: deque[tuple[float, ChangeKey]] = deque()
        self._wakeup = asyncio.Event()

    def offer(self, key: ChangeKey) -> None:
        """Emit `key` now, or once at the end of its open window."""
        if self._window_seconds <= 0:
            self._emit(key)
            return
        window = self._windows.get(key)
        if window is not None:
            window.pending = True
            metrics.CHANGES_COALESCED.inc()
            return
        self._open(key)
        self._emit(key)

    def record_published(self, key: ChangeKey, time: datetime) -> None:
        """Remember the audit time last published for `key` while its window is open."""
        window = self._windows.get(key)
        if window is not None:
            window.published_time = time

    def published_time(self, key: ChangeKey) -> datetime | None:
        """Return the audit time last published for `key` in its open window."""
        window = self._windows.get(key)
        return None if window is None else window.published_time

    @property
    def open_windows(self) -> int:
        """Number of keys that changed within the last window."""
        return len(self._windows)

    async def run(self) -> None:
        """Close windows as their deadlines pass, emitting trailing changes."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._deadlines:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline, key = self._deadlines[0]
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._deadlines.popleft()
            self._close(key)

    def _open(self, key: ChangeKey) -> _Window:
        deadline = asyncio.get_running_loop().time() + self._window_seconds
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(deadline)
        window.deadline = deadline
        window.pending = False
        self._deadlines.append((deadline, key))
        self._wakeup.set()
        return window

    def _close(self, key: ChangeKey) -> None:
        window = self._windows[key]
        if not window.pending:
            del self._windows[key]
            return
        self._open(key)
        self._emit(key)
