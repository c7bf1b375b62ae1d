"""Each Asterisk version's real AMI session replayed through `connector run` to the API, CDR by CDR.

The fake AMI server answers with the version's own banner and command answers and sends its 82
captured `Event: Cdr` frames byte for byte; the loopback receiver must get every CDR exactly once,
mapped as README's "What each CDR becomes" says.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connector.cdr.filters import EXCLUDE_DST, filter_reason, filter_rules
from connector.cdr.identity import event_id
from connector.config import load_settings
from tests.doubles.captured import captured_session, cdr_headers, version_folder
from tests.doubles.receiver import Receiver
from tests.e2e.harness import ConnectorProcess, count_rows, eventually
from tests.paths import ASTERISK_VERSIONS
from tests.versions.helpers import CDR_COUNT, DISPOSITIONS, captured_ami, run_env

pytestmark = pytest.mark.timeout(120)

Headers = list[tuple[str, str]]
_QUOTED_NAME = re.compile(r'"(.+)" <[^<>]*>')


def utc(local: str) -> str:
    """A capture time (the servers ran in UTC) as the API's UTC ISO-8601 form."""
    return local.replace(" ", "T") + "Z"


def expected_fields(headers: Headers) -> dict[str, Any]:
    """README's mapping table, applied by hand to one captured Cdr (every header is present there)."""
    fields = dict(headers)
    expected: dict[str, Any] = {
        "uniqueid": fields["UniqueID"],
        "call_id": fields["UniqueID"],
        "linkedid": fields["LinkedID"],
        "sequence": int(fields["Sequence"]),
        "src": fields["Source"],
        "src_number": fields["Source"],
        "clid": fields["CallerID"],
        "dst": fields["Destination"],
        "dst_number": fields["Destination"],
        "dcontext": fields["DestinationContext"],
        "channel": fields["Channel"],
        "dstchannel": fields["DestinationChannel"],
        "lastapp": fields["LastApplication"],
        "lastdata": fields["LastData"],
        "calldate": utc(fields["StartTime"]),
        "started_at": utc(fields["StartTime"]),
        "ended_at": utc(fields["EndTime"]),
        "duration": int(fields["Duration"]),
        "billsec": int(fields["BillableSeconds"]),
        "disposition": fields["Disposition"],
        "amaflags": fields["AMAFlags"],
        "accountcode": fields["AccountCode"],
        "userfield": fields["UserField"],
        "raw": fields,  # every header, the mapped LinkedID/Sequence/PeerAccount/RecordingFile included
    }
    if fields["AnswerTime"]:
        expected["answered_at"] = utc(fields["AnswerTime"])
    name = _QUOTED_NAME.fullmatch(fields["CallerID"])
    if name:
        expected["src_name"] = name[1]
    return expected


def outbox_event_ids(db: Path) -> dict[str, str]:
    """event_id (from the stored dedupe key) → state, for every row of the outbox."""
    with sqlite3.connect(db) as connection:
        found = connection.execute("SELECT dedupe_key, state FROM cdr").fetchall()
    return {event_id(key): state for key, state in found}


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
async def test_every_captured_cdr_reaches_the_api_once_and_mapped(
    version: str, tmp_path: Path, clean_env: Path, receiver: Receiver
) -> None:
    session = captured_session(version_folder(version))
    captured = [cdr_headers(frame) for frame in session.cdr_frames]
    assert len(captured) == CDR_COUNT
    assert Counter(dict(headers)["Disposition"] for headers in captured) == DISPOSITIONS
    # What the connector's default filter drops (clean_env: the defaults, as the child runs with).
    rules = filter_rules(load_settings())
    kept = [headers for headers in captured if filter_reason(headers, rules) is None]
    dropped = [headers for headers in captured if filter_reason(headers, rules) is not None]
    assert 0 < len(kept) <= CDR_COUNT
    if dropped:
        assert len(kept) < CDR_COUNT
    db = tmp_path / "outbox.db"

    async with captured_ami(version, session) as ami:
        connector = await ConnectorProcess(run_env(tmp_path, ami, receiver), tmp_path).start()
        await ami.wait_for_logins(1)
        assert await ami.replay(session.cdr_frames) == CDR_COUNT
        settled = "state IN ('sent', 'filtered')"
        await eventually(lambda: count_rows(db, settled) == CDR_COUNT, what=f"{CDR_COUNT} rows settled")
        await eventually(lambda: receiver.state.summary()["cdrs"] == len(kept), what="kept CDRs delivered")
        assert await connector.stop() == 0
    assert "Traceback" not in connector.log

    snapshot = receiver.state.snapshot()
    received: list[dict[str, Any]] = snapshot["cdr_list"]
    assert snapshot["duplicates"] == 0 and set(snapshot["counts"].values()) == {1}
    # Exactly once by event_id: each one an outbox row's, sent; the dropped ones filtered, not sent.
    states = outbox_event_ids(db)
    assert len(states) == CDR_COUNT
    assert {cdr["event_id"] for cdr in received} == {key for key, state in states.items() if state == "sent"}
    assert Counter(states.values()) == Counter(sent=len(kept), filtered=len(dropped))
    assert count_rows(db, "filter_reason IS NOT NULL") == len(dropped)
    # Exactly once by (UniqueID, Sequence), and every field as README maps it.
    by_key = {(cdr["uniqueid"], cdr["sequence"]): cdr for cdr in received}
    assert len(by_key) == len(received) == len(kept)
    for headers in kept:
        fields = expected_fields(headers)
        cdr = by_key[(fields["uniqueid"], fields["sequence"])]
        assert {key: cdr.get(key) for key in fields} == fields
        assert ("answered_at" in cdr) == bool(dict(headers)["AnswerTime"])
        assert cdr["direction"] in ("inbound", "outbound", "internal")
    assert Counter(cdr["disposition"] for cdr in received) == Counter(DISPOSITIONS) - Counter(
        dict(headers)["Disposition"] for headers in dropped
    )
    assert any(cdr["raw"]["RecordingFile"] for cdr in received)  # the MixMonitor calls


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
def test_the_default_filter_judges_the_h_extension_cdrs_of_the_capture(version: str, clean_env: Path) -> None:
    # The capture's `h` CDRs (endbeforehexten=no) are ANSWERED with a duration: README says kept.
    # The same CDR unanswered and without duration is dropped: the expected set above can differ.
    rules = filter_rules(load_settings())
    captured = [cdr_headers(frame) for frame in captured_session(version_folder(version)).cdr_frames]
    h_exten = [headers for headers in captured if dict(headers)["Destination"] == "h"]
    assert len(h_exten) == 2
    for headers in h_exten:
        assert filter_reason(headers, rules) is None
        empty = {**dict(headers), "Disposition": "NO ANSWER", "Duration": "0", "BillableSeconds": "0"}
        assert filter_reason(empty, rules) == EXCLUDE_DST
