"""Data contracts: schemas of the input tables, and a loader that validates and quarantines."""

from data_contracts.errors import (
    ContractError,
    DatasetNotFoundError,
    MissingColumnError,
    MissingTableError,
    UnreadableTableError,
)
from data_contracts.loader import (
    QUARANTINE_SCHEMA,
    Dataset,
    TableStats,
    default_nomenclature,
    found_dataset,
    load_dataset,
)
from data_contracts.tables import TABLES, TableSpec

__all__ = [
    "QUARANTINE_SCHEMA",
    "TABLES",
    "ContractError",
    "Dataset",
    "DatasetNotFoundError",
    "MissingColumnError",
    "MissingTableError",
    "TableSpec",
    "TableStats",
    "UnreadableTableError",
    "default_nomenclature",
    "found_dataset",
    "load_dataset",
]
