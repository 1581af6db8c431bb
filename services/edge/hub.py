"""Live fan-out: one core NATS subscription per audience, shared by its streams.

The hub keeps one subscription per audience subject in use, reference
counted by the streams that hear it, and writes each message to every one
of them without awaiting any, so one slow socket never delays the others.

Core NATS loses what it cannot deliver, so the hub watches for holes and
fills them from `TIDINGS_EVENTS`:

- A republished message carries `Nats-Last-Sequence`, the sequence of the
  previous message on its subject. When that is past the last sequence the
  hub saw on the subject, the messages in between are replayed first.
- While NATS is away nothing arrives. From the disconnect on, live messages
  are held. Once NATS is back, the hub replays its subjects after the
  highest sequence it delivered. Then it lets the held messages through,
  dropping those the replay already delivered.
- When the stream was recreated (a new epoch) or no longer contains what was
  missed, the hub ends every stream: clients come back with their last id
  and are reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from tidings.edge import metrics
from tidings.edge.catchup import ReplayError, replay
from tidings.edge.connection import SseConnection
from tidings.edge.sse import FramingError, format_event
from tidings.shared.errors import TidingsError
from tidings.shared.logs import get_logger
from tidings.shared.nats import stream_epoch
from tidings.shared.subjects import (
    COMMIT_TIME_HEADER,
    EVENT_PREFIX,
    EVENT_TYPE_HEADER,
    EVENTS_STREAM,
    LIVE_PREFIX,
    event_subject,
    live_subject,
)
from tidings.shared.telemetry import get_tracer, start_span, tracing_enabled

log = get_logger(__name__)

# Above this many audiences, recovery replays every event subject instead of
# naming each audience in the consumer's filter.
_MAX_FILTER_SUBJECTS = 100

tracer = get_tracer(__name__)


class StreamState(msgspec.Struct, frozen=True):
    """The state of `TIDINGS_EVENTS`: its epoch and first and last sequences."""

    epoch: str
    first_sequence: int
    last_sequence: int


class SubscribeError(TidingsError):
    """A live subscription could not be made."""


class _Audience:
    """The subscription of one audience and the streams that hear it."""

    __slots__ = ("last_sequence", "members", "name", "ready", "subscription")

    def __init__(self, name: str):
        self.name = name
        self.members: set[SseConnection] = set()
        self.subscription: Subscription | None = None
        # Set, then dropped, once the subscription is known to the server or
        # has failed; an idle audience keeps no event.
        self.ready: asyncio.Event | None = asyncio.Event()
        # Highest sequence delivered on this subject; None until known.
        self.last_sequence: int | None = None


class Hub:
    """Subscriptions of one edge process, shared across its streams."""

    def __init__(self, nc: Client, state: StreamState):
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self.epoch = state.epoch
        self._audiences: dict[str, _Audience] = {}
        # Highest sequence delivered live or replayed: recovery starts after it.
        self.live_high = state.last_sequence
        # Live messages held while NATS is away and until recovery ends.
        self._held: list[tuple[_Audience, Msg]] | None = None
        self._tasks: set[asyncio.Task] = set()
        self._recovery_lock = asyncio.Lock()
        self.recovering = False

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context replays run on."""
        return self._js

    @property
    def subscription_count(self) -> int:
        """Number of audience subjects subscribed to right now."""
        return len(self._audiences)

    @property
    def connection_count(self) -> int:
        """Number of streams registered right now."""
        return len({c for a in self._audiences.values() for c in a.members})

    @staticmethod
    async def read_state(js: JetStreamContext) -> StreamState:
        """Read the epoch and the first and last sequences of `TIDINGS_EVENTS`."""
        info = await js.stream_info(EVENTS_STREAM)
        return StreamState(
            epoch=stream_epoch(info),
            first_sequence=info.state.first_seq,
            last_sequence=info.state.last_seq,
        )

    async def stream_state(self) -> StreamState:
        """Read the current state of `TIDINGS_EVENTS`."""
        return await self.read_state(self._js)

    async def attach(self, connection: SseConnection) -> StreamState:
        """Deliver the live events of the connection's audiences to it.

        Returns the stream's state read after every subscription is known to
        the server, so each event past its last sequence reaches the stream.
        Raises `SubscribeError` (or a NATS error) when a subscription failed;
        the connection is detached again then.
        """
        added, joined = [], []
        for name in connection.audiences:
            audience = self._audiences.get(name)
            if audience is None:
                audience = self._audiences[name] = _Audience(name)
                added.append(audience)
            audience.members.add(connection)
            joined.append(audience)
        try:
            await self._subscribe(added)
            for audience in joined:
                if audience.ready is not None:
                    await audience.ready.wait()
                if audience.subscription is None:
                    raise SubscribeError(f"subscribing {audience.name} failed")
            state = await self.stream_state()
        except BaseException:
            self.detach(connection)
            raise
        for audience in added:
            if audience.last_sequence is None:
                audience.last_sequence = state.last_sequence
        return state

    async def _subscribe(self, audiences: list[_Audience]) -> None:
        # Other streams of these audiences wait on `ready` meanwhile, so none
        # reads the stream's state before the server has the subscription.
        try:
            for audience in audiences:
                subscription = await self._nc.subscribe(
                    live_subject(audience.name),
                    cb=functools.partial(self._on_live, audience),
                )
                if self._audiences.get(audience.name) is audience:
                    audience.subscription = subscription
                else:
                    self._spawn(_unsubscribe(subscription))
            if audiences:
                await self._nc.flush()
        finally:
            for audience in audiences:
                ready, audience.ready = audience.ready, None
                if ready is not None:
                    ready.set()

    def detach(self, connection: SseConnection) -> None:
        """Stop delivering to the connection, and drop subscriptions left unused."""
        for name in connection.audiences:
            audience = self._audiences.get(name)
            if audience is None:
                continue
            audience.members.discard(connection)
            if not audience.members:
                del self._audiences[name]
                if audience.subscription is not None:
                    self._spawn(_unsubscribe(audience.subscription))

    def connections(self) -> set[SseConnection]:
        """Return every registered stream."""
        return {c for a in self._audiences.values() for c in a.members}

    async def close(self) -> None:
        """Wait for the background work of the hub to end."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # NATS connection events

    async def on_disconnected(self) -> None:
        """Hold live messages from now until the recovery after the reconnect."""
        if self._held is None:
            self._held = []

    async def on_reconnected(self) -> None:
        """Bring every stream up to date from `TIDINGS_EVENTS` in the background."""
        self._spawn(self._recover())

    # live delivery

    async def _on_live(self, audience: _Audience, msg: Msg) -> None:
        if self._held is not None:
            self._held.append((audience, msg))
            return
        await self._deliver_live(audience, msg)

    async def _deliver_live(self, audience: _Audience, msg: Msg) -> None:
        headers = msg.headers or {}
        try:
            sequence = int(headers["Nats-Sequence"])
            previous = int(headers.get("Nats-Last-Sequence", "0"))
        except (KeyError, ValueError):
            log.error("live message without a sequence dropped", subject=msg.subject)
            return
        last = audience.last_sequence
        if last is not None and sequence <= last:
            return  # Delivered already, by a replay.
        if last is not None and previous > last:
            await self._fill(audience, after=last, before=sequence)
        self._fan_out(audience, sequence, headers, msg.data)

    def _fan_out(
        self, audience: _Audience, sequence: int, headers: dict[str, str], data: bytes
    ) -> None:
        if audience.last_sequence is None or sequence > audience.last_sequence:
            audience.last_sequence = sequence
        self.live_high = max(self.live_high, sequence)
        event_type = headers.get(EVENT_TYPE_HEADER)
        try:
            frame = self.frame(event_type, data, sequence)
        except FramingError as exc:
            log.error("event dropped", sequence=sequence, error=str(exc))
            return
        now = time.monotonic()
        members = list(audience.members)
        for connection in members:
            connection.offer(sequence, frame, now)
        metrics.EVENTS_DELIVERED.inc(len(members))
        if commit_time := headers.get(COMMIT_TIME_HEADER):
            _observe_commit_to_frame(commit_time)
        if tracing_enabled():
            # The span ends the trace the bridge started for the change.
            span = start_span(
                tracer,
                "edge deliver event",
                headers,
                {
                    "tidings.event.type": event_type or "",
                    "messaging.nats.sequence": sequence,
                    "tidings.connections": len(members),
                },
            )
            span.end()

    def frame(self, event_type: str | None, data: bytes, sequence: int) -> bytes:
        """Encode an event of `TIDINGS_EVENTS` as an SSE frame with its id."""
        if event_type is None:
            raise FramingError(f"{EVENT_TYPE_HEADER} header missing")
        return format_event(event_type, data, f"{self.epoch}.{sequence}")

    async def _fill(self, audience: _Audience, after: int, before: int) -> None:
        """Replay the audience's messages between two live ones it saw."""
        subject = event_subject(audience.name)
        log.warning("live gap", audience=audience.name, after=after, before=before)
        try:
            async with contextlib.aclosing(replay(self._js, [subject], after)) as msgs:
                async for msg in msgs:
                    sequence = msg.metadata.sequence.stream
                    if sequence >= before:
                        break
                    self._fan_out(audience, sequence, msg.headers or {}, msg.data)
        except (ReplayError, nats.errors.Error, TidingsError) as exc:
            # The streams' clients reconnect with their last id and catch up.
            log.error("live gap not filled", audience=audience.name, error=str(exc))
            for connection in list(audience.members):
                connection.end()

    # recovery after a NATS outage

    async def _recover(self) -> None:
        async with self._recovery_lock:
            if self._held is None:
                self._held = []
            self.recovering = True
            try:
                await self._replay_missed()
            except (ReplayError, nats.errors.Error, TidingsError, TimeoutError) as exc:
                log.error("recovery after reconnect failed", error=str(exc))
                self._end_all(self.live_high)
            finally:
                self._release_held()
                self.recovering = False

    def _release_held(self) -> None:
        # Runs without awaiting, so no newer live message can overtake a held one.
        held, self._held = self._held or [], None
        for audience, msg in held:
            headers = msg.headers or {}
            try:
                sequence = int(headers["Nats-Sequence"])
            except (KeyError, ValueError):
                continue
            if sequence > (audience.last_sequence or 0):
                self._fan_out(audience, sequence, headers, msg.data)

    async def _replay_missed(self) -> None:
        state = await self.stream_state()
        if state.epoch != self.epoch:
            log.warning("event stream recreated; ending streams", epoch=state.epoch)
            self.epoch = state.epoch
            self._end_all(state.last_sequence)
            return
        if self.live_high < state.first_sequence - 1:
            log.warning("missed events expired; ending streams", after=self.live_high)
            self._end_all(state.last_sequence)
            return
        names = list(self._audiences)
        if not names or self.live_high >= state.last_sequence:
            return
        subjects = [event_subject(n) for n in names]
        if len(subjects) > _MAX_FILTER_SUBJECTS:
            subjects = [f"{EVENT_PREFIX}.>"]
        count = 0
        missed = replay(self._js, subjects, self.live_high)
        async with contextlib.aclosing(missed) as msgs:
            async for msg in msgs:
                audience = self._audiences.get(msg.subject[len(EVENT_PREFIX) + 1 :])
                sequence = msg.metadata.sequence.stream
                if audience is not None and sequence > (audience.last_sequence or 0):
                    self._fan_out(audience, sequence, msg.headers or {}, msg.data)
                    count += 1
                self.live_high = max(self.live_high, sequence)
        log.info("recovered after reconnect", events=count, through=self.live_high)

    def _end_all(self, through: int) -> None:
        """End every stream, and continue live delivery after sequence `through`."""
        self.live_high = through
        for audience in self._audiences.values():
            audience.last_sequence = through
        for connection in self.connections():
            connection.end()

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _observe_commit_to_frame(commit_time: str) -> None:
    try:
        seconds = time.time() - float(commit_time)
    except ValueError:
        return
    metrics.COMMIT_TO_FRAME.observe(max(0.0, seconds))


async def _unsubscribe(subscription: Subscription) -> None:
    with contextlib.suppress(nats.errors.Error):
        await subscription.unsubscribe()


__all__ = ["LIVE_PREFIX", "Hub", "StreamState"]
