"""Persistence of provider scores: top-decile streaks per period and per provider.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

from api.tables import add_revision, drop_revision

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_revision(op, revision)


def downgrade() -> None:
    drop_revision(op, revision)
