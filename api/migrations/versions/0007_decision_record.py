"""A case keeps what prompted it: the flags, scores, explanation, model and catalog versions.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from api.tables import additive

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None
upgrade, downgrade = additive(revision)
