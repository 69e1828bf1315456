"""The graduated response on cases: sensitisation, warning, official report, sanction.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from api.tables import additive

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
upgrade, downgrade = additive(revision)
