"""A naive bridge, the baseline of `bench/bridge.py`.

It does what a first bridge would: for each NOTIFY, one SELECT of the
history's newest audit time, then one JetStream publish whose ack it awaits
before it reads the next notification. No batching, no pipelining, no
coalescing, no leader election and no catch-up. Histories only.

Run as `python -m bench.naive_bridge DATABASE_URL NATS_URL`; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC

import asyncpg
import nats

from tidings.bridge.publisher import change_msg_id
from tidings.shared.events import Change, encode
from tidings.shared.subjects import change_subject
from tidings.shared.triggers import HISTORY_CHANNEL

_NEWEST = "SELECT max(update_time) FROM history_audit WHERE history_id = $1"


async def run(database_url: str, nats_url: str) -> None:
    """Publish every history notification until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    query = await asyncpg.connect(database_url)
    listen = await asyncpg.connect(database_url)
    notifications: asyncio.Queue[str] = asyncio.Queue()
    await listen.add_listener(
        HISTORY_CHANNEL, lambda _c, _p, _ch, payload: notifications.put_nowait(payload)
    )
    print("listening", flush=True)
    relay = asyncio.create_task(_relay(notifications, query, js))
    await stop.wait()
    relay.cancel()
    await asyncio.gather(relay, return_exceptions=True)
    await listen.close()
    await query.close()
    await nc.close()


async def _relay(notifications: asyncio.Queue[str], query, js) -> None:
    while True:
        key = await notifications.get()
        newest = await query.fetchval(_NEWEST, int(key))
        change = Change("history", key, newest.replace(tzinfo=UTC))
        await js.publish(
            change_subject("history", key),
            encode(change),
            headers={"Nats-Msg-Id": change_msg_id(change)},
        )


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2]))
