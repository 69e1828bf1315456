"""Initial schema: runs and their results, cases, tokens, audit log.

Revision ID: 0001
Revises:

The baseline is the table definitions of ``api/tables.py`` as first released; every later
change to them comes with its own revision of explicit operations.
"""

from __future__ import annotations

from alembic import op

from api.tables import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
