"""Errors of the data-contract layer.

ContractError (ValueError)
├── DatasetNotFoundError   the dataset folder does not exist
├── MissingTableError      a required table has no file
├── MissingColumnError     a table lacks a required column
└── UnreadableTableError   a file cannot be read at all (not a row problem)

Row-level problems never raise: they quarantine the row.
"""

from __future__ import annotations


class ContractError(ValueError):
    """Root of every data-contract error; its message is one line for the CLI."""


class DatasetNotFoundError(ContractError):
    pass


class MissingTableError(ContractError):
    pass


class MissingColumnError(ContractError):
    pass


class UnreadableTableError(ContractError):
    pass
