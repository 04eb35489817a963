"""Figures the security and robustness tests measure; printed at the end of the test run."""

from __future__ import annotations

FIGURES: list[str] = []


def figure(line: str) -> None:
    """Record one figure line (shown in the "figures" section of pytest's summary)."""
    FIGURES.append(" ".join(line.split()))
