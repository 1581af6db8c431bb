"""The enricher: resolves each change to its audience and publishes browser events."""
