"""The test doubles every end-to-end test runs `connector run` between."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from connector.demo.ami_server import AmiUser
from tests.doubles.ami_server import FakeAmiServer
from tests.doubles.receiver import Receiver
from tests.e2e.harness import AMI_SECRET, AMI_USER, API_KEY


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmiServer]:
    async with FakeAmiServer({AMI_USER: AmiUser(AMI_SECRET)}) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(api_key=API_KEY) as running:
        yield running
