"""Provider numbers a data scientist can work with but not read: keyed pseudonyms.

A model is built and checked on billing profiles; who the provider is adds nothing to that
and is not the data scientist's to know (2021 amendment, art. 41: personal data only within
an inspection task). So the ``data_scientist`` role sees each NIHDI number as
``PS`` + 20 hex digits of its HMAC-SHA-256 under a secret key: the same provider keeps the same
pseudonym across requests and runs (profiles can be followed over time), and without the key
nobody can recompute it from the 11-digit numbers, which a plain hash would not prevent (there
are only so many). An inspector may look a provider up by its pseudonym, to act on a lead a
data scientist passes on.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "PS"
DIGITS = 20
PATTERN = rf"^{PREFIX}[0-9a-f]{{{DIGITS}}}$"
PSEUDONYMOUS_ROLES = ("data_scientist",)


def pseudonym(nihdi: str, key: bytes) -> str:
    """The pseudonym of a provider number under ``key``."""
    return PREFIX + hmac.new(key, nihdi.encode(), hashlib.sha256).hexdigest()[:DIGITS]


def sees_pseudonyms(role: str) -> bool:
    return role in PSEUDONYMOUS_ROLES
