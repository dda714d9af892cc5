"""Real parts the tests need (PostgreSQL, pebble, chromium …) and what to do when one is missing.

On a developer's machine a missing part skips its tests with the reason; under
``LANLOCK_TEST_STRICT=1`` (CI, which installs every part) the same absence fails the test.
"""

from __future__ import annotations

import os

import pytest

STRICT = os.environ.get("LANLOCK_TEST_STRICT") == "1"
POSTGRES_URL = os.environ.get("LANLOCK_TEST_POSTGRES_URL", "")


def require(available: bool, reason: str) -> None:
    if available:
        return
    if STRICT:
        pytest.fail(f"LANLOCK_TEST_STRICT=1 but a real part is missing: {reason}")
    pytest.skip(reason)
