"""The notification API: Galaxy-compatible routes that write Postgres only."""
