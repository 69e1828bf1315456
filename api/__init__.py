"""The inspectors' HTTP service (FastAPI)."""
