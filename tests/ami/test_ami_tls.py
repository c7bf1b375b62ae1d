"""AMI over TLS against the fake AMI server wrapped in TLS, with a throwaway CA made by each test.

Every refusal (unknown CA, wrong name, expired, a plain-TCP port, TLS port without AMI_TLS) has its
own one-line message, stores nothing, and is retried until the setting is right. No secret is
ever printed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from connector.ami.client import AmiClient
from connector.ami.session import AmiSession
from connector.ami.tls import NOT_TLS, client_context
from connector.demo.ami_server import AmiUser
from connector.errors import HandshakeFailed
from connector.outbox.records import Headers
from tests.ami.conftest import SECRET, USER, Running, barrier
from tests.doubles.ami_server import FakeAmiServer

HOST = "127.0.0.1"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA(organization_name="Test PBX CA")


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ami-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA, *names: str, **validity: datetime) -> ssl.SSLContext:
    """What Asterisk's tlscertfile/tlsprivatekey give: a certificate for `names`, signed by `ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or (HOST, "localhost")), common_name="pbx.test", **validity).configure_cert(context)
    return context


async def tls_server(context: ssl.SSLContext | None) -> FakeAmiServer:
    return await FakeAmiServer({USER: AmiUser(SECRET)}, tls=context).start()


async def refusal(
    server: FakeAmiServer, ca_file: Path | None, *, tls: bool = True, verify: bool = True
) -> str:
    context = client_context(ca_file, verify) if tls else None
    with pytest.raises(HandshakeFailed) as failed:
        session = await AmiSession.open(
            HOST, server.port, lambda _: None, tls=context, handshake_timeout_s=0.5, ca_file=ca_file
        )
        session.close()
    return str(failed.value)


async def test_cdrs_arrive_once_over_tls(ca: trustme.CA, ca_file: Path, running: Running) -> None:
    server = await tls_server(server_context(ca))
    received: list[Headers] = []
    client = AmiClient(HOST, server.port, USER, SECRET, received.append, tls=client_context(ca_file, True))
    running.start(client)
    try:
        await client.wait_connected()
        await server.send_cdrs(5)
        await barrier(client)
        assert [dict(h)["UniqueID"] for h in received] == [f"1795700000.{i}" for i in range(5)]
        assert client.session is not None
        state = client.session.tls
        assert state is not None and state.verified and state.protocol.startswith("TLSv1.")
        assert "commonName=pbx.test" in state.subject and "Test PBX CA" in state.issuer
        assert state.days_left() is not None and state.days_left() > 30
    finally:
        client.close()
        await server.go_down()


async def test_an_unknown_ca_is_refused_with_its_own_message(ca: trustme.CA, ca_file: Path) -> None:
    server = await tls_server(server_context(trustme.CA()))
    try:
        message = await refusal(server, ca_file)
        assert "signed by a CA not in AMI_TLS_CA_FILE" in message and str(ca_file) in message
        system = await refusal(server, None)
        assert "not in the system's CAs (set AMI_TLS_CA_FILE)" in system
    finally:
        await server.go_down()


async def test_a_wrong_host_name_is_refused(ca: trustme.CA, ca_file: Path) -> None:
    server = await tls_server(server_context(ca, "pbx.example.com"))
    try:
        message = await refusal(server, ca_file)
        assert f"not valid for AMI_HOST '{HOST}'" in message
    finally:
        await server.go_down()


async def test_an_expired_certificate_is_refused(ca: trustme.CA, ca_file: Path) -> None:
    now = datetime.now(UTC)
    expired = server_context(ca, not_before=now - timedelta(days=400), not_after=now - timedelta(days=1))
    server = await tls_server(expired)
    try:
        assert "has expired" in await refusal(server, ca_file)
    finally:
        await server.go_down()


async def test_a_plain_tcp_port_is_refused_never_used_in_clear(ca_file: Path) -> None:
    server = await tls_server(None)
    try:
        message = await refusal(server, ca_file)
        assert message.endswith(NOT_TLS)
        assert server.connections == 1 and server.logins == 0  # no Login, no secret, sent in clear
    finally:
        await server.go_down()


async def test_the_tls_port_without_ami_tls_says_to_set_it(ca: trustme.CA) -> None:
    server = await tls_server(server_context(ca))
    try:
        assert "set AMI_TLS=true" in await refusal(server, None, tls=False)
    finally:
        await server.go_down()


async def test_verify_off_accepts_any_certificate(running: Running) -> None:
    server = await tls_server(server_context(trustme.CA(), "elsewhere.example"))
    client = AmiClient(HOST, server.port, USER, SECRET, lambda _: None, tls=client_context(None, False))
    running.start(client)
    try:
        await client.wait_connected()
        assert client.session is not None
        state = client.session.tls
        assert state is not None and not state.verified and state.days_left() is None
    finally:
        client.close()
        await server.go_down()


async def test_a_refused_handshake_is_retried_and_recovers_once_the_certificate_is_right(
    ca: trustme.CA, ca_file: Path, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    server = await tls_server(server_context(ca, "pbx.example.com"))
    waits: list[float] = []
    received: list[Headers] = []
    fixed = asyncio.Event()

    async def sleep(delay_s: float) -> None:
        waits.append(delay_s)
        if len(waits) == 3 and not fixed.is_set():
            # The operator reissues Asterisk's certificate with the right name, reloads the manager.
            await server.go_down()
            server.tls = server_context(ca)
            await server.start()
            fixed.set()
        await asyncio.sleep(0)

    client = AmiClient(
        HOST,
        server.port,
        USER,
        SECRET,
        received.append,
        tls=client_context(ca_file, True),
        tls_ca_file=ca_file,
        sleep=sleep,
        rand=lambda: 1.0,
    )
    running.start(client)
    try:
        await asyncio.wait_for(client.wait_connected(), 10)
        assert waits == [1.0, 2.0, 4.0]  # a configuration problem: backoff, not 0.5 s retries
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and f"not valid for AMI_HOST '{HOST}'" in errors[0].getMessage()
        assert received == []
        await server.send_cdrs(1)
        await barrier(client)
        assert len(received) == 1
        assert SECRET not in caplog.text
    finally:
        client.close()
        await server.go_down()
