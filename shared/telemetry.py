"""Tracing: one trace per change, carried across services in NATS headers.

Tracing is off unless configured: by `TIDINGS_OTEL` (`otlp`, `console` or
`memory`), or by the standard `OTEL_TRACES_EXPORTER` / `OTEL_EXPORTER_OTLP_*`
variables, which the OTLP exporter reads for its endpoint and headers. The
W3C `traceparent` travels in message headers through OpenTelemetry's
propagator API, so the bridge, the enricher and the edge add their spans to
one trace.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.util.types import AttributeValue

from tidings.shared.logs import get_logger

log = get_logger(__name__)

# Exporter of `TIDINGS_OTEL=memory`, readable by tests and `tidings up --otel`.
memory_exporter = InMemorySpanExporter()

# Whether `configure_tracing` turned tracing on in this process. Hot paths
# check it before any per-message tracing work.
_enabled = False


def tracing_enabled() -> bool:
    """Return whether spans are recorded in this process."""
    return _enabled


def tracing_mode(setting: str, environ: Mapping[str, str] | None = None) -> str:
    """Return `otlp`, `console`, `memory` or `off` from settings and `OTEL_*`."""
    environ = os.environ if environ is None else environ
    if setting:
        return setting
    exporter = environ.get("OTEL_TRACES_EXPORTER", "")
    if exporter in ("otlp", "console"):
        return exporter
    if any(
        environ.get(name)
        for name in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        )
    ):
        return "otlp"
    return "off"


def configure_tracing(service: str, setting: str = "") -> bool:
    """Install a tracer provider for `service`; return whether tracing is on."""
    global _enabled
    mode = tracing_mode(setting)
    if mode in ("off", "none"):
        return False
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        # OpenTelemetry sets the global provider once per process, so services
        # run in one process (tests, benchmarks) share the first one.
        _enabled = True
        return True
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"tidings-{service}"})
    )
    if mode == "memory":
        provider.add_span_processor(SimpleSpanProcessor(memory_exporter))
    elif mode == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        exporter = _ReportOnceExporter(OTLPSpanExporter())
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _enabled = True
    log.info("tracing on", service=service, exporter=mode)
    return True


def disable_tracing() -> None:
    """Stop recording spans in this process; the provider stays installed."""
    global _enabled
    _enabled = False


def get_tracer(name: str) -> trace.Tracer:
    """Return a tracer; its spans are no-ops while tracing is off."""
    return trace.get_tracer(name)


def extract_context(headers: Mapping[str, str] | None) -> Context:
    """Return the trace context carried by message headers, if any."""
    return propagate.extract(dict(headers or {}))


def start_span(
    tracer: trace.Tracer,
    name: str,
    headers: Mapping[str, str] | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> trace.Span:
    """Start a span continuing the trace in `headers`; a no-op span when off.

    The caller ends the span. While tracing is off this costs one check.
    """
    if not _enabled:
        return trace.INVALID_SPAN
    context = extract_context(headers) if headers else None
    return tracer.start_span(name, context=context, attributes=attributes)


def span_headers(span: trace.Span, headers: dict[str, str]) -> dict[str, str]:
    """Add the `traceparent` of `span` to message headers, when it records."""
    if span.is_recording():
        propagate.inject(headers, context=trace.set_span_in_context(span))
    return headers


class _ReportOnceExporter(SpanExporter):
    """Wraps an exporter and logs once when spans cannot be delivered.

    The services keep working without a collector, and the warning is
    logged once instead of on every batch.
    """

    def __init__(self, inner: SpanExporter):
        self._inner = inner
        self._reported = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception as exc:
            result = SpanExportResult.FAILURE
            error = str(exc)
        else:
            error = "collector rejected or did not answer"
        if result is SpanExportResult.FAILURE and not self._reported:
            self._reported = True
            log.warning("spans not exported; is the collector reachable?", error=error)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def http_tracing_plugins() -> list:
    """Return Litestar's OpenTelemetry plugin while tracing is on, else nothing.

    Health and metrics probes are left out, so scrapes do not fill traces.
    """
    if not _enabled:
        return []
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    config = OpenTelemetryConfig(exclude=["^/healthz$", "^/readyz$", "^/metrics$"])
    return [OpenTelemetryPlugin(config)]
