"""Deploy-file tests: register the `slow` marker (the clean-venv install test downloads packages)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: takes tens of seconds (builds a clean venv); -m 'not slow' skips"
    )
