"""The tables of a dataset: which schema, which key, whether the table may be absent."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import dataframely as dy
import polars as pl

from data_contracts import schemas
from data_contracts.schemas import PROVENANCE_COLUMNS


@dataclass(frozen=True, eq=False)  # one per table: compared and hashed by identity
class TableSpec:
    name: str
    schema: type[dy.Schema]
    required: bool
    # Values that a null stands for once the row is valid ("quantity: default 1").
    defaults: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def dtypes(self) -> dict[str, pl.DataType]:
        """Contract columns and their Polars types, provenance excluded (read from the schema
        once: that takes a tenth of a millisecond, and real-time checks ask for them often)."""
        return {name: column.dtype for name, column in self.schema.columns().items() if name not in PROVENANCE_COLUMNS}

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns a file must have; nullable columns may be absent and read as null."""
        columns = self.schema.columns()
        return tuple(name for name in self.dtypes if not columns[name].nullable)

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.dtypes)


# In load order: a table comes after the tables it refers to.
TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec("providers", schemas.Providers, required=True),
        TableSpec("nomenclature", schemas.Nomenclature, required=False),
        TableSpec("third_party_invoices", schemas.ThirdPartyInvoices, required=True),
        TableSpec("third_party_registry", schemas.ThirdPartyRegistry, required=True),
        TableSpec("tp_suspensions", schemas.TpSuspensions, required=False),
        TableSpec(
            "provider_debts",
            schemas.ProviderDebts,
            required=False,
            defaults={"plan_respected": False},
        ),
        TableSpec("provider_status", schemas.ProviderStatus, required=False),
        TableSpec("patients", schemas.Patients, required=False),
        TableSpec("billing_lines", schemas.BillingLines, required=True, defaults={"quantity": 1}),
    )
}
