"""Sensitisation campaigns: who was selected, by which criteria, contacted or kept for comparison.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from api.tables import additive

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
upgrade, downgrade = additive(revision)
