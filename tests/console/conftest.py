from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.console.running import RunningConsole, running_console, set_subscription_code

CODE = "SUB-2026-SECRET-7731"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    """One real console per test module."""
    with running_console(tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest.fixture(scope="module")
def admin(console: RunningConsole) -> Iterator[httpx.Client]:
    """A browser logged in to the console, whose admin has set the subscription code."""
    http = console.logged_in()
    set_subscription_code(http, CODE)
    yield http
    http.close()
