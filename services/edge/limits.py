"""Limits on open SSE streams: per caller and per edge process."""

from __future__ import annotations

from tidings.shared.errors import TidingsError


class LimitExceeded(TidingsError):
    """A stream that would pass a limit; `reason` is a short code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class StreamLimits:
    """Counts open streams per caller audience and in total."""

    def __init__(self, max_total: int, max_per_caller: int):
        self.max_total = max_total
        self.max_per_caller = max_per_caller
        self._per_caller: dict[str, int] = {}
        self.total = 0

    def acquire(self, audience: str) -> None:
        """Count one more stream for `audience`, or raise `LimitExceeded`."""
        if self.total >= self.max_total:
            raise LimitExceeded(
                "edge_full",
                f"this edge already serves {self.total} streams, its limit "
                "(TIDINGS_MAX_STREAMS); retry later or on another edge",
            )
        count = self._per_caller.get(audience, 0)
        if count >= self.max_per_caller:
            raise LimitExceeded(
                "too_many_streams",
                f"{audience} already has {count} open streams on this edge, the "
                "limit (TIDINGS_MAX_STREAMS_PER_USER); close a tab and retry",
            )
        self._per_caller[audience] = count + 1
        self.total += 1

    def release(self, audience: str) -> None:
        """Count one stream of `audience` less."""
        count = self._per_caller.get(audience, 0)
        if count <= 1:
            self._per_caller.pop(audience, None)
        else:
            self._per_caller[audience] = count - 1
        self.total = max(0, self.total - 1)
