"""Amounts actually recovered on confirmed cases, beside the amount to recover.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from api.tables import additive

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None
upgrade, downgrade = additive(revision)
