"""Shared fixtures for the AMI tests: a fake AMI server, a real outbox, metric deltas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from connector.ami.client import AmiClient
from connector.demo.ami_server import AmiUser
from connector.metrics import REGISTRY
from connector.outbox.records import Headers
from connector.outbox.store import Store
from tests.doubles.ami_server import FakeAmiServer

USER, SECRET = "connector", "s3cret"
MakeClient = Callable[..., tuple[AmiClient, list[Headers]]]


def metric(name: str) -> float:
    """Current value of an unlabelled metric sample."""
    return REGISTRY.get_sample_value(name) or 0.0


class Delta:
    """Change of metric samples since creation."""

    def __init__(self, *names: str) -> None:
        self._start = {name: metric(name) for name in names}

    def __getitem__(self, name: str) -> float:
        return metric(name) - self._start[name]


@pytest.fixture
async def server() -> AsyncIterator[FakeAmiServer]:
    """A fake AMI server with one user that may read everything."""
    async with FakeAmiServer({USER: AmiUser(SECRET)}) as fake:
        yield fake


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real, migrated outbox under tmp_path."""
    opened = await Store.open(tmp_path / "outbox.db")
    yield opened
    await opened.close()


class Running:
    """Clients started by a test, stopped at its end."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.clients: list[AmiClient] = []

    def start(self, client: AmiClient) -> AmiClient:
        self.clients.append(client)
        self.tasks.append(asyncio.create_task(client.run()))
        return client


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    """Start AmiClients in the background; close them and check run() ended cleanly."""
    state = Running()
    yield state
    for client in state.clients:
        client.close()
    for task in state.tasks:
        await asyncio.wait_for(task, 10)


@pytest.fixture
def make_client(server: FakeAmiServer, running: Running) -> Callable[..., tuple[AmiClient, list[Headers]]]:
    """Build and start a client against `server`; returns it and the Cdr headers it received."""

    def make(**options: Any) -> tuple[AmiClient, list[Headers]]:
        received: list[Headers] = []
        settings: dict[str, Any] = {
            "ping_interval_s": 30.0,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.05,
        }
        settings.update(options)
        username = settings.pop("username", USER)
        password = settings.pop("password", SECRET)
        on_cdr = settings.pop("on_cdr", received.append)
        port = settings.pop("port", server.port)
        client = AmiClient("127.0.0.1", port, username, password, on_cdr, **settings)
        return running.start(client), received

    return make


async def barrier(client: AmiClient) -> None:
    """Return once everything the server wrote before now has been read by the client."""
    session = client.session
    assert session is not None, "barrier() needs a logged-in client"
    await session.send_action({"Action": "Ping"}, 10)
