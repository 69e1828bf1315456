"""Token expiry and last use: ``expires_at`` and ``last_used_at`` on tokens.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from api.tables import additive

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
upgrade, downgrade = additive(revision)
