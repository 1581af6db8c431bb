"""Prometheus metrics of the edge."""

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge(
    "tidings_edge_connections",
    "Open SSE streams, by kind of credential.",
    ["auth"],
)
EVENTS_DELIVERED = Counter(
    "tidings_edge_events_delivered",
    "Event frames queued to open streams.",
)
CATCHUPS = Counter(
    "tidings_edge_catchups",
    "Streams that replayed missed events from JetStream after Last-Event-ID.",
)
RESETS = Counter(
    "tidings_edge_resets",
    "Reset events sent, by reason.",
    ["reason"],
)
SLOW_CLIENTS = Counter(
    "tidings_edge_slow_clients_cut",
    "Streams closed because the client fell too far behind.",
)
COMMIT_TO_FRAME = Histogram(
    "tidings_edge_commit_to_frame_seconds",
    "Seconds from a change's commit time to its frame being queued on a stream.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
