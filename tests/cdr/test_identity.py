"""CDR identity: AMI Cdr == its CSV twin, fingerprints, event_id stability."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.cdr.identity import (
    CANONICAL_FIELDS,
    canonical_identity,
    dedupe_key,
    event_id,
    fingerprint_of_json,
    first_wins,
    headers_json,
    linked_id,
)
from connector.outbox.records import Headers
from tests.cdr.helpers import CUSTOM_LAYOUT, csv_rows, paired_ami


def frame_fingerprint(headers: Headers) -> str:
    """The fingerprint exactly as the ingest writer computes it: over the stored `raw` JSON."""
    return fingerprint_of_json(headers_json(headers))


def test_canonical_fields_are_the_design_list() -> None:
    assert set(CANONICAL_FIELDS) == {
        "UniqueID", "Channel", "DestinationChannel", "Source", "Destination",
        "DestinationContext", "StartTime", "AnswerTime", "EndTime", "Duration",
        "BillableSeconds", "Disposition", "LastApplication", "LastData", "AccountCode",
        "AMAFlags", "UserField",
    }  # fmt: skip


def test_every_ami_cdr_has_the_identity_of_its_csv_rows() -> None:
    ami = paired_ami()
    master = csv_rows("Master.csv", "csv")
    custom = csv_rows("custom-Master.csv", CUSTOM_LAYOUT)
    assert (len(ami), len(master), len(custom)) == (57, 69, 69)
    # Row i of both files is the same CDR; custom-Master.csv carries (uniqueid, sequence).
    by_call = {}
    for master_row, custom_row in zip(master, custom, strict=True):
        fields = dict(custom_row)
        by_call[(fields["UniqueID"], fields["Sequence"])] = (master_row, custom_row)
        assert canonical_identity(master_row) == canonical_identity(custom_row)
    for event in ami:
        fields = dict(event)
        master_row, custom_row = by_call[(fields["UniqueID"], fields["Sequence"])]
        assert canonical_identity(event) == canonical_identity(master_row)
        assert canonical_identity(fields) == canonical_identity(custom_row)


def test_csv_only_calls_are_exactly_the_twelve_unseen_identities() -> None:
    seen = {canonical_identity(event) for event in paired_ami()}
    rows = csv_rows("Master.csv", "csv")
    unseen = [index + 1 for index, row in enumerate(rows) if canonical_identity(row) not in seen]
    assert unseen == list(range(56, 68))  # README: rows 56-67 were placed while AMI was down
    assert len({canonical_identity(row) for row in rows}) == 69


def test_identity_is_pinned_forever() -> None:
    # Stored dedupe keys and the event_ids the API has seen depend on these exact values.
    event = paired_ami()[0]
    assert canonical_identity(event) == "d5cb36509b311e24810c9b8198f95cca"
    assert frame_fingerprint(event) == "5e1e4caaa15477599d4757393e40c3f5"
    assert dedupe_key("d5cb36509b311e24810c9b8198f95cca", 1) == "d5cb36509b311e24810c9b8198f95cca#1"
    assert event_id("d5cb36509b311e24810c9b8198f95cca#1") == "6b5ac3a9f0a00516a36cf44930d6f601"


def test_missing_header_counts_as_empty_and_extra_headers_do_not_count() -> None:
    event = paired_ami()[0]
    fields = dict(event)
    assert fields["DestinationChannel"] == ""
    without = {name: value for name, value in fields.items() if name != "DestinationChannel"}
    assert canonical_identity(without) == canonical_identity(fields)
    extra = fields | {"Sequence": "999", "LinkedID": "x", "Timestamp": "1.0", "CallerID": "other"}
    assert canonical_identity(extra) == canonical_identity(fields)


def test_surrounding_spaces_do_not_change_identity_but_content_does() -> None:
    fields = dict(paired_ami()[0])
    padded = {name: f" {value} " for name, value in fields.items()}
    assert canonical_identity(padded) == canonical_identity(fields)
    changed = fields | {"Duration": "4"}
    assert canonical_identity(changed) != canonical_identity(fields)


def test_field_boundaries_cannot_be_forged() -> None:
    one = {"Source": "1,2", "Destination": "3"}
    two = {"Source": "1", "Destination": "2,3"}
    assert canonical_identity(one) != canonical_identity(two)


def test_repeated_header_counts_its_first_value() -> None:
    headers: Headers = (("UniqueID", "1.1"), ("UniqueID", "9.9"))
    assert first_wins(headers) == {"UniqueID": "1.1"}
    assert canonical_identity(headers) == canonical_identity({"UniqueID": "1.1"})


def test_forkcdr_twins_share_identity_but_not_fingerprint() -> None:
    event = paired_ami()[0]
    twin = tuple((name, "77" if name == "Sequence" else value) for name, value in event)
    assert canonical_identity(twin) == canonical_identity(event)
    assert frame_fingerprint(twin) != frame_fingerprint(event)
    assert frame_fingerprint(tuple(event)) == frame_fingerprint(event)


def test_fingerprint_depends_on_header_order() -> None:
    headers: Headers = (("A", "1"), ("B", "2"))
    assert frame_fingerprint(headers) != frame_fingerprint(tuple(reversed(headers)))


def test_event_id_differs_per_occurrence() -> None:
    identity = canonical_identity(paired_ami()[0])
    assert event_id(dedupe_key(identity, 1)) != event_id(dedupe_key(identity, 2))
    assert event_id(dedupe_key(identity, 2)) == event_id(f"{identity}#2")


@given(st.dictionaries(st.text(), st.text()))
def test_identity_and_fingerprint_never_raise(fields: dict[str, str]) -> None:
    headers = tuple(fields.items())
    assert len(canonical_identity(fields)) == 32
    assert len(frame_fingerprint(headers)) == 32
    assert len(event_id(canonical_identity(headers) + "#1")) == 32


def test_linked_id_takes_the_first_mapped_spelling_trimmed() -> None:
    assert linked_id({"LinkedID": " 1.5 "}) == "1.5"
    assert linked_id({"Linkedid": "1.6"}) == linked_id({"linkedid": "1.6"}) == "1.6"
    assert linked_id({"LinkedID": "  ", "linkedid": "1.7"}) == "1.7"
    assert linked_id({"UniqueID": "1.8"}) == ""
