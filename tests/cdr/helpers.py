"""Read the real Asterisk captures: Cdr events of an AMI session, rows of the paired CSV files."""

from __future__ import annotations

from pathlib import Path

from connector.cdr.csv_rows import parse_layout, parse_line, row_headers
from connector.outbox.records import Headers
from tests.paths import AMI_FIXTURES, PAIRED_FIXTURES

CUSTOM_LAYOUT = (
    "clid,src,dst,dcontext,channel,dstchannel,lastapp,lastdata,start,answer,end,duration,billsec,"
    "disposition,amaflags,accountcode,uniqueid,userfield,linkedid,sequence"
)


def ami_cdrs(path: Path) -> list[Headers]:
    """Every `Event: Cdr` of a capture, as ordered (name, value) pairs, values byte-exact."""
    text = path.read_bytes().decode("utf-8")
    frames = [frame for frame in text.split("\r\n\r\n") if frame.startswith("Event: Cdr\r\n")]
    return [
        tuple((line.partition(": ")[0], line.partition(": ")[2]) for line in frame.split("\r\n"))
        for frame in frames
    ]


def all_fixture_cdrs() -> list[Headers]:
    """Every Cdr event in every capture of fixtures/ami and fixtures/paired."""
    paths = sorted(AMI_FIXTURES.glob("*.txt")) + sorted(PAIRED_FIXTURES.glob("ami-*.txt"))
    return [cdr for path in paths if "annotated" not in path.name for cdr in ami_cdrs(path)]


def paired_ami() -> list[Headers]:
    """The 57 Cdr events of the two paired AMI sessions."""
    return ami_cdrs(PAIRED_FIXTURES / "ami-1.txt") + ami_cdrs(PAIRED_FIXTURES / "ami-2.txt")


def csv_rows(name: str, layout_spec: str) -> list[Headers]:
    """Every line of a paired Master.csv, named with AMI headers."""
    layout = parse_layout(layout_spec)
    lines = (PAIRED_FIXTURES / name).read_text(encoding="utf-8").splitlines()
    return [row_headers(parse_line(line), layout) for line in lines]
