"""Initial schema: runs and their results, cases, tokens, audit log.

Revision ID: 0001
Revises:

The baseline is the table definitions of ``api/tables.py`` without what later revisions add
(columns and indexes tagged ``since``), so a later column is created once, by its revision.
"""

from __future__ import annotations

from alembic import op

from api.tables import as_of

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    as_of(revision).create_all(op.get_bind())


def downgrade() -> None:
    as_of(revision).drop_all(op.get_bind())
