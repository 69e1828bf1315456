"""The registered anomaly models and their model cards, for every role.

An inspector who acts on a score, a data scientist who maintains the model and the SCA that
accounts for it all read the same card: what the model was trained on, how it did on periods
it had not seen, where it is uneven, its known limits, and who approved it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, status

from api.auth import ROLES
from api.dependencies import Session, allow

router = APIRouter(prefix="/models", tags=["models"])
Version = Annotated[str, Path(pattern=r"^[0-9]{1,9}$", description="A registered model version.")]


@router.get("")
def models(_: Annotated[Session, Depends(allow(*ROLES))]) -> list[dict[str, Any]]:
    """Registered versions of the provider anomaly model, newest first, with the champion
    marked and who approved it."""
    from detectors.tracking import registered_models

    return registered_models()


@router.get("/{version}")
def model(_: Annotated[Session, Depends(allow(*ROLES))], version: Version) -> dict[str, Any]:
    """A registered version and its model card: data window, features, peer grouping,
    evaluation on a temporal hold-out, fairness, known limits, approver and date."""
    from detectors.tracking import registered_card

    found = registered_card(version)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No registered model has version {version}")
    return found
