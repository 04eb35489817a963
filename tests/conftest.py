from typing import Any

import pytest

from figures import FIGURES


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the tests measured (attack payloads, escapes, containment)."""
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
