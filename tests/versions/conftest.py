"""The loopback receiver the per-version tests deliver to (the AMI server is built per version)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.doubles.receiver import Receiver
from tests.e2e.harness import API_KEY


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver(api_key=API_KEY)
    with running:
        yield running
