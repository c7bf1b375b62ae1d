"""AmiClient against the fake AMI server over real TCP: login, reconnects, keepalive, one session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from connector.ami.client import AmiClient, AmiSession
from connector.demo.ami_server import AmiUser, encode_frame
from connector.demo.ports import free_port
from connector.errors import LoginRefused
from connector.outbox.records import Headers
from tests.ami.conftest import SECRET, USER, Delta, MakeClient, Running, barrier, metric
from tests.doubles.ami_server import CDR_STATUS_SUSPENDED, FakeAmiServer, synthetic_cdrs

DISCONNECTIONS = "ami_disconnections_total"
DISCONNECTED_SECONDS = "ami_disconnected_seconds_total"
LOGIN_FAILURES = "ami_login_failures_total"


async def test_login_events_and_commands(server: FakeAmiServer, make_client: MakeClient) -> None:
    states: list[bool] = []
    client, received = make_client(on_state_change=states.append)
    await client.wait_connected()
    assert client.connected and states == [True]
    assert metric("ami_connection_status") == 1
    login = server.logged_in[0].actions[0]
    assert login["username"] == USER and login["events"] == "cdr,system"
    session = client.session
    assert session is not None
    status = await session.command("cdr show status")
    assert "    cdr_manager" in status
    server.commands["cdr show status"] = CDR_STATUS_SUSPENDED
    assert "    cdr_manager (suspended)" in await session.command("cdr show status")
    await server.send_cdrs(3)
    await barrier(client)
    assert [dict(h)["UniqueID"] for h in received] == [f"1795700000.{i}" for i in range(3)]


async def test_ami_down_at_start_then_up(running: Running) -> None:
    port = free_port()
    received: list[Headers] = []
    client = AmiClient(
        "127.0.0.1", port, USER, SECRET, received.append, backoff_initial_s=0.01, backoff_max_s=0.05
    )
    running.start(client)
    await asyncio.sleep(0.1)  # a few refused connection attempts
    assert not client.connected
    async with FakeAmiServer({USER: AmiUser(SECRET)}, port=port) as server:
        await client.wait_connected()
        await server.send_cdrs(2)
        await barrier(client)
        assert len(received) == 2
        assert server.connections == 1


async def test_drop_and_reconnect_with_one_session_at_a_time(
    server: FakeAmiServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    delta = Delta(DISCONNECTIONS, DISCONNECTED_SECONDS)
    client, received = make_client()
    await client.wait_connected()
    await server.send_cdrs(2)
    await barrier(client)
    server.drop_connections()
    await server.wait_for_logins(2)
    await client.wait_connected()
    assert len(server.logged_in) == 1
    await server.send_cdrs(2, start=2)
    await barrier(client)
    assert [dict(h)["UniqueID"][-1] for h in received] == ["0", "1", "2", "3"]
    assert delta[DISCONNECTIONS] == 1
    assert delta[DISCONNECTED_SECONDS] > 0
    assert "AMI session to" in caplog.text and "lost after" in caplog.text
    assert "re-established" in caplog.text and "without one" in caplog.text


async def test_half_open_link_is_detected_by_the_keepalive(
    server: FakeAmiServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = make_client(ping_interval_s=0.05, ping_timeout_s=0.2)
    await server.wait_for_logins(1)
    # The link looks alive (TCP is up) but nothing answers: the client must abort and reconnect.
    server.answer_pings = False
    await server.wait_for_logins(2)
    server.answer_pings = True
    assert "no answer to AMI Ping" in caplog.text
    await client.wait_connected()


async def test_a_refused_login_is_logged_once_and_retried_with_backoff(
    server: FakeAmiServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    delta = Delta(LOGIN_FAILURES)
    delays: list[float] = []

    async def sleep(delay_s: float) -> None:
        delays.append(delay_s)
        await asyncio.sleep(0)

    caplog.set_level(logging.INFO)
    client, _ = make_client(
        password="wrong", rand=lambda: 1.0, sleep=sleep, backoff_initial_s=0.5, backoff_max_s=4
    )
    await server.wait_for_attempts(6)
    client.close()
    refusals = [r for r in caplog.records if "login refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
    assert "AMI_USERNAME/AMI_PASSWORD" in refusals[0].getMessage()
    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert delta[LOGIN_FAILURES] >= 5  # the 6th may still be in flight
    assert not client.connected


async def test_shutdown_event_makes_the_client_reconnect(
    server: FakeAmiServer, make_client: MakeClient
) -> None:
    client, received = make_client()
    await server.wait_for_logins(1)
    shutdown = [("Event", "Shutdown"), ("Privilege", "system,all"), ("Restart", "True")]
    server.send_raw(next(synthetic_cdrs(1)) + encode_frame(shutdown))
    await server.wait_for_logins(2)
    await client.wait_connected()
    assert len(received) == 1


async def test_run_can_be_started_only_once(server: FakeAmiServer, make_client: MakeClient) -> None:
    client, _ = make_client()
    await client.wait_connected()
    with pytest.raises(RuntimeError, match="one session"):
        await client.run()
    assert len(server.logged_in) == 1


async def test_close_stops_run_during_backoff(running: Running) -> None:
    client = AmiClient("127.0.0.1", free_port(), USER, SECRET, lambda _: None, backoff_max_s=30)
    task = asyncio.create_task(client.run())
    await asyncio.sleep(0.05)
    client.close()
    await asyncio.wait_for(task, 5)
    assert metric("ami_connection_status") == 0


async def test_aclose_logs_off(server: FakeAmiServer, make_client: MakeClient) -> None:
    client, _ = make_client()
    await client.wait_connected()
    session = server.logged_in[0]
    await client.aclose()
    assert session.actions[-1]["action"] == "Logoff"


async def test_a_user_without_the_cdr_class_receives_no_cdr(make_client: MakeClient) -> None:
    users = {"ops": AmiUser("pw", frozenset({"system"}))}
    async with FakeAmiServer(users) as server:
        client, received = make_client(username="ops", password="pw", port=server.port)
        await client.wait_connected()
        await server.send_cdrs(3)
        await barrier(client)
        assert received == []
        client.close()


async def test_session_reports_a_refused_login(server: FakeAmiServer) -> None:
    session = await AmiSession.open("127.0.0.1", server.port, lambda _: None)
    with pytest.raises(LoginRefused, match="Authentication failed"):
        await session.login(USER, "wrong")
    await asyncio.wait_for(session.lost, 5)


async def test_a_saturated_writer_pauses_reading(server: FakeAmiServer, make_client: MakeClient) -> None:
    class Gate:
        saturated = False

        def __init__(self) -> None:
            self.watchers: list[Callable[[bool], None]] = []

        def watch(self, on_change: Callable[[bool], None]) -> None:
            self.watchers.append(on_change)

    gate = Gate()
    client, _ = make_client(gate=gate)
    await client.wait_connected()
    session = client.session
    assert session is not None
    transport: Any = session.protocol.transport
    gate.watchers[0](True)
    assert not transport.is_reading()
    gate.watchers[0](False)
    assert transport.is_reading()
