"""Entry point of the `tidings` command."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from tidings.shared.errors import TidingsError
from tidings.shared.logs import configure_logging, get_logger
from tidings.shared.settings import Settings, load_settings
from tidings.shared.telemetry import configure_tracing

log = get_logger("tidings.cli")

ServiceMain = Callable[[Settings, asyncio.Event], Awaitable[None]]


def _service_main(name: str) -> ServiceMain:
    # Imported on demand, so `tidings bridge` loads no edge code.
    if name == "bridge":
        from tidings.bridge.service import main
    elif name == "enricher":
        from tidings.enricher.service import main
    elif name == "api":
        from tidings.api.app import main
    else:
        from tidings.edge.app import main
    return main


async def run_until_signal(service: ServiceMain, settings: Settings) -> None:
    """Run a service until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await service(settings, stop)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings",
        description="Push database changes and notifications to browsers over SSE.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up",
        help="start the whole system, with embedded Postgres and NATS when no URLs "
        "are set",
    )
    up.add_argument(
        "--data-dir",
        default=".tidings",
        help="folder for the embedded servers' data and endpoints.json "
        "(default: .tidings)",
    )
    up.add_argument(
        "--otel",
        action="store_true",
        help="print every service's trace spans to its output (no collector needed)",
    )

    for name, what in [
        ("bridge", "publish Postgres changes to TIDINGS_CHANGES"),
        ("enricher", "turn changes into browser events on TIDINGS_EVENTS"),
        ("api", "serve the notification API"),
        ("edge", "serve SSE streams to browsers"),
    ]:
        service = commands.add_parser(name, help=what, description=what)
        service.add_argument("--database-url", help="overrides TIDINGS_DATABASE_URL")
        service.add_argument("--nats-url", help="overrides TIDINGS_NATS_URL")

    migrate = commands.add_parser(
        "migrate", help="migrate the database to the latest revision"
    )
    migrate.add_argument("--database-url", help="overrides TIDINGS_DATABASE_URL")
    attach = migrate.add_mutually_exclusive_group()
    attach.add_argument(
        "--triggers-only",
        action="store_true",
        help="install only the audit and notify triggers on a database whose tables "
        "exist (such as Galaxy's), without Alembic; safe to repeat",
    )
    attach.add_argument(
        "--remove-triggers",
        action="store_true",
        help="remove the triggers that --triggers-only installed",
    )

    from tidings.cli.token import add_token_parser

    add_token_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `tidings` command."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_format, settings.log_level)
        overrides = {
            key: value
            for key in ("database_url", "nats_url")
            if (value := getattr(args, key, None))
        }
        settings = settings.replace(**overrides)
        if args.command == "up":
            from tidings.cli.up import run_up

            if args.otel:
                settings = settings.replace(otel="console")
            return run_up(settings, args.data_dir)
        if args.command == "migrate" and (args.triggers_only or args.remove_triggers):
            return _attach_triggers(settings.database_url, install=args.triggers_only)
        if args.command == "token":
            from tidings.cli.token import run_token

            return run_token(settings, args)
        if args.command == "migrate":
            from tidings.shared.migrate import upgrade

            upgrade(settings.database_url)
            return 0
        configure_tracing(args.command, settings.otel)
        asyncio.run(run_until_signal(_service_main(args.command), settings))
    except TidingsError as exc:
        print(f"tidings: {exc}", file=sys.stderr)
        return 2
    return 0


def _attach_triggers(database_url: str, *, install: bool) -> int:
    import asyncpg

    from tidings.cli.triggers import install_triggers, remove_triggers
    from tidings.shared.db import asyncpg_dsn
    from tidings.shared.errors import MigrationError

    asyncpg_dsn(database_url)  # raises ConfigurationError when missing or invalid
    action = "installing" if install else "removing"
    try:
        if install:
            created = asyncio.run(install_triggers(database_url))
            log.info("triggers installed", created_functions=created)
        else:
            dropped, kept = asyncio.run(remove_triggers(database_url))
            log.info("triggers removed", dropped_functions=dropped, kept_functions=kept)
    except asyncpg.exceptions.UndefinedTableError as exc:
        raise MigrationError(
            f"{action} triggers failed: {exc}. --triggers-only attaches to a "
            "database that has Galaxy's tables; run `tidings migrate` to create them"
        ) from exc
    except (OSError, asyncpg.PostgresError) as exc:
        raise MigrationError(f"{action} triggers failed: {exc}") from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
