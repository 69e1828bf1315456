"""The real-time history of claim checks, shared by every process of the service.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from api.tables import additive

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None
upgrade, downgrade = additive(revision)
