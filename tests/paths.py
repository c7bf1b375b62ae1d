"""Where the test material lives: the real Asterisk captures copied from shared/fixtures."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
AMI_FIXTURES = FIXTURES / "ami"
PAIRED_FIXTURES = FIXTURES / "paired"
RECORDING_FIXTURES = FIXTURES / "recordings"
VERSION_FIXTURES = FIXTURES / "versions"
# The Asterisk builds captured in fixtures/versions (README there), oldest first.
ASTERISK_VERSIONS = ("16.30.1", "18.26.4", "20.20.1", "22.10.1")
