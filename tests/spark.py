"""Spark needs a Java runtime: without one its tests are skipped, unless ``SECM_REQUIRE_SPARK``
is set (CI), which makes that a failure."""

from __future__ import annotations

import os
import shutil

import pytest


def java_or_skip() -> None:
    if shutil.which("java") is None:
        if os.environ.get("SECM_REQUIRE_SPARK"):
            pytest.fail("SECM_REQUIRE_SPARK is set but there is no Java runtime for Spark")
        pytest.skip("no Java runtime: Spark cannot start")
