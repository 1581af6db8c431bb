"""Change triggers: history audit (as in Galaxy) and notification changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from alembic import op

from tidings.shared.triggers import install_statements, remove_statements

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in install_statements():
        op.execute(statement)


def downgrade() -> None:
    for statement in remove_statements():
        op.execute(statement)
    op.execute("DROP TABLE IF EXISTS tidings_change_audit")
