"""Triggers for entry points, seen and deleted notifications, and stale audiences.

Installs every trigger again through the idempotent install, so a database
migrated to 0002 before these triggers existed gains them: changes of
`interactivetool_entry_point` rows, updates of `user_notification_association`
rows, and the `audience` changes that tell enrichers a cached audience is
stale (a history or session changing owner, a session using a history).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from alembic import op

from tidings.shared.triggers import install_statements

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DOWNGRADE = [
    "DROP TRIGGER IF EXISTS trigger_tidings_entry_point_ais"
    " ON interactivetool_entry_point",
    "DROP TRIGGER IF EXISTS trigger_tidings_entry_point_aus"
    " ON interactivetool_entry_point",
    "DROP TRIGGER IF EXISTS trigger_tidings_user_notification_aus"
    " ON user_notification_association",
    "DROP FUNCTION IF EXISTS tidings_record_stale_audience() CASCADE",
]


def upgrade() -> None:
    for statement in install_statements():
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
