"""Prometheus metrics of the enricher."""

from prometheus_client import Counter, Gauge, Histogram

CHANGES_PROCESSED = Counter(
    "tidings_enricher_changes_processed",
    "Changes handled and acknowledged, by kind.",
    ["kind"],
)
EVENTS_PUBLISHED = Counter(
    "tidings_enricher_events_published",
    "Events stored in TIDINGS_EVENTS, one per audience, by event type.",
    ["event_type"],
)
AUDIENCE_SIZE = Histogram(
    "tidings_enricher_audience_size",
    "Audiences a change is delivered to.",
    buckets=(0, 1, 2, 5, 10, 50, 100, 500, 1000, 5000),
)
REDELIVERIES = Counter(
    "tidings_enricher_redeliveries",
    "Changes received more than once (a replica crashed or timed out).",
)
DEAD_LETTERED = Counter(
    "tidings_enricher_dead_lettered",
    "Changes given up on and sent to the dead-letter subject.",
)
CONSUMER_PENDING = Gauge(
    "tidings_enricher_consumer_pending",
    "Changes in TIDINGS_CHANGES not yet delivered to any enricher.",
)
