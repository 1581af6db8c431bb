"""Code shared by every Tidings service: settings, schemas, NATS and Postgres."""
