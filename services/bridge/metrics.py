"""Prometheus metrics of the bridge."""

from prometheus_client import Counter, Gauge, Histogram

CHANGES_RECEIVED = Counter(
    "tidings_bridge_changes_received",
    "Change notifications received from Postgres (LISTEN or poll).",
)
CHANGES_PUBLISHED = Counter(
    "tidings_bridge_changes_published",
    "Changes acknowledged by JetStream, duplicates included.",
)
CHANGES_DUPLICATE = Counter(
    "tidings_bridge_changes_duplicate",
    "Published changes that JetStream dropped as duplicates by Nats-Msg-Id.",
)
CHANGES_COALESCED = Counter(
    "tidings_bridge_changes_coalesced",
    "Changes merged into a pending trailing change of the same key.",
)
CATCHUP_ROWS = Counter(
    "tidings_bridge_catchup_rows",
    "Audit rows published by catch-up scans after a gap.",
)
LEADER = Gauge(
    "tidings_bridge_leader", "1 while this bridge holds the leader lock, else 0."
)
LISTEN_RECONNECTS = Counter(
    "tidings_bridge_listen_reconnects",
    "Times the LISTEN connection was lost and opened again.",
)
OLDEST_UNPUBLISHED_SECONDS = Gauge(
    "tidings_bridge_oldest_unpublished_age_seconds",
    "Age of the oldest audit row not yet published; 0 when none is pending.",
)
PUBLISH_LATENCY = Histogram(
    "tidings_bridge_commit_to_ack_seconds",
    "Seconds from a change's commit time to JetStream's acknowledgement.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
