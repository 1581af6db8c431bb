"""The exception tree of Tidings, rooted in one project error."""


class TidingsError(Exception):
    """Base class of every error Tidings raises on purpose."""


class ConfigurationError(TidingsError):
    """A `TIDINGS_*` setting is missing or invalid."""


class EmbeddedServerError(TidingsError):
    """An embedded Postgres or NATS server failed to start or stop."""


class ServiceError(TidingsError):
    """A service cannot start or keep running."""


class BridgeError(TidingsError):
    """The bridge cannot turn database changes into stream messages."""


class MigrationError(TidingsError):
    """Installing or removing database objects failed."""
