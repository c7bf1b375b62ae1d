"""Where the test material lives: the real Asterisk captures copied from shared/fixtures."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
AMI_FIXTURES = FIXTURES / "ami"
PAIRED_FIXTURES = FIXTURES / "paired"
RECORDING_FIXTURES = FIXTURES / "recordings"
