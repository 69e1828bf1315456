"""The workbench's tests run on the API tests' published run and service (a SQLite file, and
PostgreSQL when the machine has one)."""

from tests.api.conftest import database_url, results, service

__all__ = ["database_url", "results", "service"]
