"""Errors of the data-contract layer.

ContractError (ValueError)
├── DatasetNotFoundError   the dataset folder does not exist
├── MissingTableError      a required table has no file
├── MissingColumnError     a table lacks a required column
└── UnreadableTableError   a file cannot be read at all (not a row problem)

OutputError (OSError)      a file the run writes cannot be written (disk full, read-only)

Row-level problems never raise: they quarantine the row.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

# What only a write meets: the disk or the quota full, a file too large, a read-only file
# system. A step that reads and writes at once (a Polars sink) failed to write if it met one.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
# A Parquet writer that fails on a file's footer says only this, without the OS error. An
# input's footer is read before anything is written (each scan reads its files' metadata),
# so in a write it is the output's.
FOOTER_UNWRITTEN = "thrift: transport error"


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


class OutputError(OSError):
    """A file of the run's own could not be written; its message is one line for the CLI."""


@contextmanager
def writing(folder: Path, what: str) -> Iterator[None]:
    """Say which of the run's files could not be written, and why, where the writer would say
    only why (``[Errno 28] No space left on device``) or that the file it was filling is not
    valid Parquet. Any other failure passes through unchanged: one from reading an input is
    reported as such by its caller."""
    try:
        yield
    except (OSError, pl.exceptions.PolarsError) as exc:
        text = str(exc)
        met = exc.errno if isinstance(exc, OSError) else None
        number = next((n for n in WRITE_ERRNOS if met == n or f"(os error {n})" in text), None)
        if number is not None:
            reason = os.strerror(number)
        elif isinstance(exc, pl.exceptions.PolarsError) and FOOTER_UNWRITTEN in text:
            reason = "a Parquet file's footer could not be written (is the disk full?)"
        else:
            raise
        raise OutputError(f"Cannot write {what} under {folder}: {reason}") from None
