"""Alembic migrations: Galaxy-shaped tables and the change triggers."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent
