"""Persistence of provider scores: top-decile streaks per period and per provider.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from api.tables import additive

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
upgrade, downgrade = additive(revision)
