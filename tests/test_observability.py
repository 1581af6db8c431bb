"""Observability: one trace per change, `/metrics` of each service, JSON logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from tests.bridge_support import wait_until
from tests.conftest import Pipeline, create_history, create_user
from tests.sse_client import open_stream
from tidings.bridge.service import Bridge
from tidings.shared.settings import Settings
from tidings.shared.telemetry import (
    configure_tracing,
    disable_tracing,
    memory_exporter,
)

CHANGES = 5


@pytest.fixture
def tracing() -> Iterator[InMemorySpanExporter]:
    """Record spans of this process in memory while the test runs.

    OpenTelemetry installs a tracer provider once per process, so the first
    use installs it and later uses switch recording on again.
    """
    assert configure_tracing("tests", "memory")
    memory_exporter.clear()
    yield memory_exporter
    disable_tracing()
    memory_exporter.clear()


async def _touch(db: asyncpg.Pool, history_id: int) -> None:
    await db.execute("UPDATE history SET name = name || '.' WHERE id = $1", history_id)


def _spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def _bridge_span(exporter: InMemorySpanExporter, history_id: int) -> ReadableSpan:
    spans = [
        span
        for span in _spans_named(exporter, "bridge publish change")
        if span.attributes["tidings.change.key"] == str(history_id)
    ]
    assert len(spans) == 1, spans
    return spans[0]


def _children(
    exporter: InMemorySpanExporter, name: str, parent: ReadableSpan
) -> list[ReadableSpan]:
    return [
        span
        for span in _spans_named(exporter, name)
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


async def test_change_yields_one_connected_trace(
    tracing: InMemorySpanExporter, pipeline: Pipeline
):
    """A history change is traced from the bridge through the enricher to the edge."""
    db = pipeline.db
    alice = await create_user(db, "alice")
    history = await create_history(db, alice)
    await pipeline.settle()
    tracing.clear()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        await _touch(db, history)
        frame = await stream.next_event()
        assert frame.event == "history_update"

    bridge = _bridge_span(tracing, history)
    assert bridge.parent is None
    assert bridge.attributes["tidings.change.kind"] == "history"
    assert "tidings.change.commit_time" in bridge.attributes
    assert bridge.attributes["messaging.nats.sequence"] > 0

    enrichers = _children(tracing, "enricher resolve audience", bridge)
    assert len(enrichers) == 1
    enricher = enrichers[0]
    assert enricher.context.trace_id == bridge.context.trace_id
    assert enricher.attributes["tidings.change.kind"] == "history"
    assert enricher.attributes["tidings.change.key"] == str(history)
    assert enricher.attributes["tidings.recipients"] == 1
    assert (
        enricher.attributes["messaging.nats.sequence"]
        == bridge.attributes["messaging.nats.sequence"]
    )

    edges = _children(tracing, "edge deliver event", enricher)
    assert len(edges) == 1
    edge = edges[0]
    assert edge.context.trace_id == bridge.context.trace_id
    assert edge.attributes["tidings.event.type"] == "history_update"
    assert edge.attributes["tidings.connections"] == 1
    assert edge.attributes["messaging.nats.sequence"] > 0

    assert bridge.start_time <= enricher.start_time <= edge.start_time
    for span in (bridge, enricher, edge):
        assert alice.api_key not in json.dumps(dict(span.attributes))


async def test_http_requests_traced(tracing: InMemorySpanExporter, pipeline: Pipeline):
    """API and edge requests get HTTP server spans from Litestar's integration."""
    alice = await create_user(pipeline.db, "alice")
    async with httpx.AsyncClient() as client:
        api = await client.get(
            f"{pipeline.api_url}/notifications", headers=alice.headers
        )
        edge = await client.get(f"{pipeline.edge_url}/api/events/stats")
    assert api.status_code == 200
    assert edge.status_code == 200

    servers = {
        span.name: span
        for span in tracing.get_finished_spans()
        if span.kind is SpanKind.SERVER
    }
    assert "GET /api/notifications" in servers, sorted(servers)
    assert "GET /api/events/stats" in servers, sorted(servers)
    api_span = servers["GET /api/notifications"]
    assert api_span.attributes["http.status_code"] == 200
    assert alice.api_key not in json.dumps(dict(api_span.attributes))


def _metrics_url(settings: Settings, service: str) -> str:
    port = getattr(settings, f"{service}_port")
    return f"http://127.0.0.1:{port}/metrics"


async def _scrape(settings: Settings, service: str) -> dict[str, float]:
    """Return every sample of a service's `/metrics`, keyed as it is written."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(_metrics_url(settings, service))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = (
                sample.value
            )
    return samples


async def test_metrics_move_with_changes(pipeline: Pipeline):
    """N history changes to one open stream move each service's counters by N."""
    settings = pipeline.settings
    db = pipeline.db
    alice = await create_user(db, "alice")
    history = await create_history(db, alice)
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        await stream.wait_status()
        before = {s: await _scrape(settings, s) for s in ("bridge", "enricher", "edge")}
        connections = 'tidings_edge_connections{auth="api_key"}'
        assert before["edge"][connections] >= 1

        for _ in range(CHANGES):
            await _touch(db, history)
            frame = await stream.next_event()
            assert frame.event == "history_update"

        processed = 'tidings_enricher_changes_processed_total{kind="history"}'
        expected = before["enricher"][processed] + CHANGES

        async def enricher_counted() -> bool:
            return (await _scrape(settings, "enricher"))[processed] >= expected

        await wait_until(enricher_counted, 10, f"{processed} at {expected}")
        after = {s: await _scrape(settings, s) for s in ("bridge", "enricher", "edge")}

    published = "tidings_bridge_changes_published_total"
    assert after["bridge"][published] - before["bridge"][published] >= CHANGES
    assert after["bridge"]["tidings_bridge_leader"] == 1

    enricher_before, enricher_after = before["enricher"], after["enricher"]
    assert enricher_after[processed] - enricher_before[processed] == CHANGES
    events = 'tidings_enricher_events_published_total{event_type="history_update"}'
    assert enricher_after[events] - enricher_before[events] == CHANGES
    audiences = "tidings_enricher_audience_size_count"
    assert enricher_after[audiences] - enricher_before[audiences] == CHANGES
    assert "tidings_enricher_consumer_pending" in enricher_after

    edge_before, edge_after = before["edge"], after["edge"]
    delivered = "tidings_edge_events_delivered_total"
    assert edge_after[delivered] - edge_before[delivered] == CHANGES
    latency = "tidings_edge_commit_to_frame_seconds_count"
    assert edge_after[latency] - edge_before[latency] == CHANGES
    assert edge_after[connections] == edge_before[connections]

    async def stream_closed() -> bool:
        edge_now = await _scrape(settings, "edge")
        return edge_now[connections] == edge_before[connections] - 1

    await wait_until(stream_closed, 10, "connection gauge back down after close")


async def test_api_metrics_count_requests(pipeline: Pipeline):
    """The API's `/metrics` counts its requests by route."""
    alice = await create_user(pipeline.db, "alice")
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{pipeline.api_url}/notifications", headers=alice.headers
        )
    assert response.status_code == 200
    samples = await _scrape(pipeline.settings, "api")
    requests = [
        value
        for name, value in samples.items()
        if name.startswith("tidings_api_requests_total")
        and 'path="/api/notifications"' in name
    ]
    assert sum(requests) >= 1, sorted(samples)


async def test_edge_metrics_count_resets(pipeline: Pipeline):
    """A stream resumed from an id of another epoch is counted as a reset."""
    alice = await create_user(pipeline.db, "alice")
    before = await _scrape(pipeline.settings, "edge")
    headers = {**alice.headers, "Last-Event-ID": "otherepoch.5"}
    async with open_stream(
        pipeline.stream_url, headers=headers, divert_status=False
    ) as stream:
        frame = await stream.next_event()
        assert frame.event == "reset"
        reason = json.loads(frame.data)["reason"]
    after = await _scrape(pipeline.settings, "edge")
    resets = f'tidings_edge_resets_total{{reason="{reason}"}}'
    assert after[resets] - before.get(resets, 0) == 1


class _EnricherProcess:
    """An enricher run as `python -m tidings.cli.main enricher`, logging JSON."""

    def __init__(self, settings: Settings, log_path: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env.update(
            TIDINGS_DATABASE_URL=settings.database_url,
            TIDINGS_NATS_URL=settings.nats_url,
            TIDINGS_ENRICHER_PORT=str(settings.enricher_port),
            TIDINGS_LOG_FORMAT="json",
            TIDINGS_OTEL="memory",
        )
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidings.cli.main", "enricher"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


async def test_json_logs_carry_change_ids(
    tracing: InMemorySpanExporter,
    settings: Settings,
    db: asyncpg.Pool,
    tmp_path: Path,
):
    """The enricher's per-change JSON line carries the change's ids and trace id."""
    bridge = Bridge(settings)
    await bridge.start()
    enricher = _EnricherProcess(settings, tmp_path / "enricher.log")
    try:
        alice = await create_user(db, "alice")
        history = await create_history(db, alice)

        def enriched_lines() -> list[dict]:
            records = [json.loads(line) for line in enricher.lines()]
            return [
                record
                for record in records
                if record.get("event") == "change enriched"
                and record.get("key") == str(history)
            ]

        async def history_enriched() -> bool:
            assert enricher.proc.poll() is None, enricher.lines()[-20:]
            return bool(enriched_lines())

        await wait_until(history_enriched, 30, "enricher logs the change")
    finally:
        enricher.stop()
        await bridge.stop()

    lines = enricher.lines()
    assert lines
    for line in lines:
        record = json.loads(line)
        assert "event" in record
        assert "level" in record
        assert "timestamp" in record

    (record,) = enriched_lines()
    bridge_span = _bridge_span(tracing, history)
    assert record["kind"] == "history"
    assert record["level"] == "info"
    assert record["change_id"].startswith(f"history.{history}.")
    assert record["sequence"] == bridge_span.attributes["messaging.nats.sequence"]
    assert record["trace_id"] == format(bridge_span.context.trace_id, "032x")
    assert len(record["span_id"]) == 16


async def test_edge_metrics_count_catchups(pipeline: Pipeline):
    """A stream resumed after a missed event counts one catch-up and its frame."""
    db = pipeline.db
    alice = await create_user(db, "alice")
    history = await create_history(db, alice)
    await pipeline.settle()

    async with open_stream(pipeline.stream_url, headers=alice.headers) as stream:
        await _touch(db, history)
        seen = await stream.next_event()
    await _touch(db, history)
    await pipeline.settle()

    before = await _scrape(pipeline.settings, "edge")
    headers = {**alice.headers, "Last-Event-ID": seen.id}
    async with open_stream(pipeline.stream_url, headers=headers) as stream:
        missed = await stream.next_event()
        assert missed.event == "history_update"
    after = await _scrape(pipeline.settings, "edge")

    catchups = "tidings_edge_catchups_total"
    assert after[catchups] - before[catchups] == 1
    delivered = "tidings_edge_events_delivered_total"
    assert after[delivered] - before[delivered] == 1
