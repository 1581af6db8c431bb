"""`tidings up`: the whole system on one machine, for trying Tidings out.

Starts an embedded Postgres and NATS when no URLs are given, migrates, seeds
the demo, runs the four services as child processes, prints where they are
and writes the same to `<data dir>/endpoints.json`. SIGINT or SIGTERM stops
everything and leaves the data folder reusable.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgspec

from tidings.cli.seed import ADMIN_EMAIL, seed_demo
from tidings.shared.embedded import EmbeddedNats, EmbeddedPostgres
from tidings.shared.errors import TidingsError
from tidings.shared.migrate import upgrade
from tidings.shared.settings import PREFIX, Settings

SERVICES = ["bridge", "enricher", "api", "edge"]
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0


def run_up(settings: Settings, data_dir: str) -> int:
    """Run the whole system until SIGINT or SIGTERM; return the exit code."""
    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    servers: list[EmbeddedPostgres | EmbeddedNats] = []
    children: dict[str, subprocess.Popen] = {}
    try:
        settings = _start_servers(settings, root, servers)
        _say(f"migrating {_redact(settings.database_url)}")
        upgrade(settings.database_url)
        demo = asyncio.run(seed_demo(settings.database_url))
        # The demo is on unless TIDINGS_DEMO is set to false.
        demo_on = settings.demo or f"{PREFIX}DEMO" not in os.environ
        settings = settings.replace(
            demo=demo_on, admin_users=settings.admin_users or ADMIN_EMAIL
        )
        settings = _demo_page_settings(settings)
        env = {**os.environ, **settings_env(settings)}
        for name in SERVICES:
            children[name] = _start_child(name, env)
        _wait_ready(settings, children, stop)
        endpoints = _endpoints(settings, demo)
        (root / "endpoints.json").write_text(json.dumps(endpoints, indent=2) + "\n")
        _print_endpoints(endpoints, root)
        return _supervise(children, servers, env, stop)
    except TidingsError as exc:
        _say(f"error: {exc}")
        return 1
    finally:
        _stop_children(children)
        for server in reversed(servers):
            server.stop()
        _say("stopped")


def settings_env(settings: Settings) -> dict[str, str]:
    """The `TIDINGS_*` variables that reproduce these settings in a child."""
    env = {}
    for field, value in msgspec.structs.asdict(settings).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[PREFIX + field.upper()] = str(value)
    return env


def _demo_page_settings(settings: Settings) -> Settings:
    """Let the demo page, served by the edge, call the API on its own port."""
    edge = f"http://{settings.host}:{settings.edge_port}"
    api = f"http://{settings.host}:{settings.api_port}/api"
    return settings.replace(
        cors_origins=settings.cors_origins or edge,
        api_public_url=settings.api_public_url or api,
        token_secret=settings.token_secret or secrets.token_hex(32),
    )


def _start_servers(settings: Settings, root: Path, servers: list) -> Settings:
    if not settings.database_url:
        _say(f"starting embedded Postgres in {root / 'postgres'}")
        postgres = EmbeddedPostgres(root / "postgres")
        servers.append(postgres)
        postgres.start()
        settings = settings.replace(database_url=postgres.url)
    if not settings.nats_url:
        _say(f"starting embedded NATS with JetStream in {root / 'nats'}")
        nats = EmbeddedNats(root / "nats")
        servers.append(nats)
        nats.start()
        settings = settings.replace(nats_url=nats.url)
    return settings


def _wait_ready(settings: Settings, children: dict, stop: threading.Event) -> None:
    ports = {
        "bridge": settings.bridge_port,
        "enricher": settings.enricher_port,
        "api": settings.api_port,
        "edge": settings.edge_port,
    }
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    for name, port in ports.items():
        url = f"http://{settings.host}:{port}/readyz"
        while not _is_ready(url):
            if children[name].poll() is not None:
                raise TidingsError(
                    f"{name} exited with code {children[name].returncode}; "
                    f"is port {port} free? (set {PREFIX}{name.upper()}_PORT)"
                )
            if stop.is_set():
                raise TidingsError("interrupted while starting")
            if time.monotonic() > deadline:
                raise TidingsError(f"{name} was not ready at {url} in time")
            time.sleep(0.1)


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _endpoints(settings: Settings, demo: dict) -> dict:
    edge = f"http://{settings.host}:{settings.edge_port}"
    api = f"http://{settings.host}:{settings.api_port}"
    return {
        "database_url": settings.database_url,
        "nats_url": settings.nats_url,
        "stream_url": f"{edge}/api/events/stream",
        "api_url": f"{api}/api",
        "demo_url": f"{edge}/demo",
        "users": demo["users"],
        "anonymous_session": demo["anonymous_session"],
    }


def _print_endpoints(endpoints: dict, root: Path) -> None:
    lines = [
        "Tidings is running.",
        f"  database    {endpoints['database_url']}",
        f"  NATS        {endpoints['nats_url']}",
        f"  stream      {endpoints['stream_url']}",
        f"  API         {endpoints['api_url']}",
        f"  demo page   {endpoints['demo_url']}",
        "  demo users (id, email, API key):",
    ]
    for user in endpoints["users"]:
        role = " (admin)" if user["is_admin"] else ""
        lines.append(
            f"    {user['id']:>3}  {user['email']:<20} {user['api_key']}{role}"
        )
    anonymous = endpoints["anonymous_session"]
    if anonymous:
        lines.append(
            f"    anonymous session #{anonymous['session_id']} "
            f"with history #{anonymous['history_id']}"
        )
    lines.append(f"  written to {root / 'endpoints.json'}; press Ctrl-C to stop")
    print("\n".join(lines), flush=True)


def _start_child(name: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tidings.cli.main", name], env=env)


def _supervise(
    children: dict[str, subprocess.Popen],
    servers: list,
    env: dict[str, str],
    stop: threading.Event,
) -> int:
    """Restart any service or embedded server that exits, until asked to stop.

    A service that exits more than `MAX_RESTARTS` times within
    `RESTART_WINDOW_SECONDS` is taken to be broken, and everything stops.
    """
    restarts: dict[str, list[float]] = {name: [] for name in children}
    while not stop.wait(0.5):
        for server in servers:
            if server.proc is not None and server.proc.poll() is not None:
                _say(f"{type(server).__name__} exited; starting it again")
                server.proc = None
                server.start()
        for name, child in children.items():
            if child.poll() is None:
                continue
            now = time.monotonic()
            recent = [t for t in restarts[name] if now - t < RESTART_WINDOW_SECONDS]
            if len(recent) >= MAX_RESTARTS:
                _say(f"{name} keeps exiting (code {child.returncode}); stopping")
                return 1
            restarts[name] = [*recent, now]
            _say(f"{name} exited with code {child.returncode}; starting it again")
            children[name] = _start_child(name, env)
    return 0


def _stop_children(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        return f"{scheme}{sep}{credentials.split(':')[0]}:***@{host}"
    return url


def _say(message: str) -> None:
    print(f"tidings up: {message}", file=sys.stderr, flush=True)
