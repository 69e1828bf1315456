"""Persistence of provider scores: top-decile streaks per period and per provider.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

from api.tables import added_in

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table, columns, indexes in added_in(revision):
        with op.batch_alter_table(table.name) as batch:
            for column in columns:
                batch.add_column(column._copy())
        for index in indexes:
            op.create_index(index.name, table.name, [c.name for c in index.columns], unique=index.unique)


def downgrade() -> None:
    for table, columns, indexes in added_in(revision):
        for index in indexes:
            op.drop_index(index.name, table_name=table.name)
        with op.batch_alter_table(table.name) as batch:
            for column in columns:
                batch.drop_column(column.name)
