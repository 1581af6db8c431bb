"""Errors that a retry can cure, and the backoff between retries."""

from __future__ import annotations

import asyncio

import asyncpg

# A lost or refused connection, a server shutting down or restarting, or a
# statement that timed out: all pass once Postgres is reachable again.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError,
)


class Backoff:
    """Exponential delay between retries: 0.1 s doubling up to `maximum` seconds."""

    def __init__(self, initial: float = 0.1, maximum: float = 2.0):
        self._initial = initial
        self._maximum = maximum
        self._next = initial

    async def sleep(self) -> None:
        """Wait the current delay, then double it."""
        await asyncio.sleep(self._next)
        self._next = min(self._maximum, self._next * 2)

    def reset(self) -> None:
        """Start again from the initial delay, after a success."""
        self._next = self._initial
