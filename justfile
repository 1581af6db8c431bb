# Tasks for developing Tidings. `just --list` shows them.

python := ".venv/bin/python"

# Install Tidings with its test tools into .venv.
install:
    test -x {{python}} || python3 -m venv .venv
    {{python}} -m pip install --quiet --upgrade pip
    {{python}} -m pip install --quiet -e '.[test]'

# Install Debian's Chromium for the browser tests, unless it is there already.
chromium:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v chromium >/dev/null; then exit 0; fi
    sudo=""; if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null

# Run the whole test suite (real Postgres, NATS and Chromium).
test *args: chromium
    {{python}} -m pytest {{args}}

# Check lint and formatting.
lint:
    {{python}} -m ruff check .
    {{python}} -m ruff format --check .

# Start the whole system with embedded Postgres and NATS.
up *args:
    {{python}} -m tidings.cli.main up {{args}}

# Measure latency and throughput; prints a table and writes BENCHMARKS.md.
bench *args:
    {{python}} -m bench.run {{args}}
