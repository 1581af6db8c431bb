"""Code shared by every Tidings service: settings, event schemas, NATS and Postgres helpers."""
