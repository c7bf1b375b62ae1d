"""`connector run` with AMI_TLS against the fake AMI server wrapped in TLS (a throwaway CA).

A refused certificate is one ERROR line, stores nothing and never stops the process; once Asterisk
presents the right certificate, CDRs flow and arrive exactly once. No secret in the output.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from connector.demo.ami_server import AmiUser
from tests.doubles.ami_server import FakeAmiServer
from tests.doubles.receiver import Receiver
from tests.e2e.harness import (
    AMI_SECRET,
    AMI_USER,
    API_KEY,
    ConnectorProcess,
    connector_env,
    count_rows,
    eventually,
)


def server_context(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name, common_name=name).configure_cert(context)
    return context


async def test_a_wrong_certificate_waits_for_the_right_one_then_cdrs_arrive_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "asterisk-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ami = await FakeAmiServer(
        {AMI_USER: AmiUser(AMI_SECRET)}, tls=server_context(ca, "pbx.example.com")
    ).start()
    env = connector_env(tmp_path, ami, receiver, AMI_TLS="true", AMI_TLS_CA_FILE=str(ca_file))
    connector = await ConnectorProcess(env, tmp_path).start()
    try:
        await eventually(lambda: "not valid for AMI_HOST '127.0.0.1'" in connector.log, what="the TLS error")
        assert connector.process is not None and connector.process.returncode is None
        assert ami.logins == 0 and count_rows(tmp_path / "outbox.db") == 0
        # Asterisk gets a certificate for the name the connector uses; nothing is restarted here.
        await ami.go_down()
        ami.tls = server_context(ca, "127.0.0.1")
        await ami.start()
        await ami.wait_for_logins(1)
        await ami.send_cdrs(200)
        await eventually(lambda: receiver.state.summary()["cdrs"] == 200, what="200 CDRs delivered")
        assert await connector.stop() == 0
        summary = receiver.state.summary()
        assert summary["cdrs"] == 200 and summary["duplicates"] == 0
        assert count_rows(tmp_path / "outbox.db") == 200
        log = connector.log
        assert log.count("not valid for AMI_HOST") == 1
        assert AMI_SECRET not in log and API_KEY not in log
    finally:
        await connector.stop()
        await ami.go_down()


async def test_verify_off_connects_and_warns_at_start(tmp_path: Path, receiver: Receiver) -> None:
    ami = await FakeAmiServer(
        {AMI_USER: AmiUser(AMI_SECRET)}, tls=server_context(trustme.CA(), "other")
    ).start()
    env = connector_env(tmp_path, ami, receiver, AMI_TLS="true", AMI_TLS_VERIFY="false")
    connector = await ConnectorProcess(env, tmp_path).start()
    try:
        await ami.wait_for_logins(1)
        await ami.send_cdrs(3)
        await eventually(lambda: receiver.state.summary()["cdrs"] == 3, what="3 CDRs delivered")
        assert "AMI_TLS_VERIFY=false" in connector.log and "WARNING" in connector.log
        assert AMI_SECRET not in connector.log
    finally:
        await connector.stop()
        await ami.go_down()


async def test_a_plain_port_is_never_used_in_clear(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    env = connector_env(tmp_path, ami, receiver, AMI_TLS="true", AMI_TLS_CA_FILE=str(ca_file))
    connector = await ConnectorProcess(env, tmp_path).start()
    try:
        await eventually(lambda: "did not answer TLS" in connector.log, what="the plain-port error")
        assert ami.logins == 0 and ami.login_failures == 0  # no Login, so no secret, ever sent
        assert connector.process is not None and connector.process.returncode is None
    finally:
        await connector.stop()
