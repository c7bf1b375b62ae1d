"""Fixtures of the recording tests: the loopback receiver, an API client for it, a spool folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from connector.api.client import ApiClient
from tests.doubles.receiver import Receiver
from tests.recordings.uploading import KEY


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(api_key=KEY, data_dir=tmp_path / "received") as running:
        yield running


@pytest.fixture
async def api(receiver: Receiver) -> AsyncIterator[ApiClient]:
    client = ApiClient(base_url=receiver.base_url, api_key=KEY, hostname="pbx1", timeout_s=10)
    yield client
    await client.aclose()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    folder = tmp_path / "monitor"
    folder.mkdir()
    return folder
