"""The bridge: publishes Postgres change notifications to `TIDINGS_CHANGES`."""
