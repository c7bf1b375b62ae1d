"""LOG_FORMAT=json gives one JSON object per line; text is one line per event."""

from __future__ import annotations

import json
import logging

import pytest

from connector.logs import configure_logging


def test_json_format_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("connector.test").info("stored %d CDRs", 3)
    logging.getLogger("connector.test").debug("not shown at INFO")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "INFO" and entry["message"] == "stored 3 CDRs"
    assert entry["logger"] == "connector.test"


def test_text_format_and_chatty_libraries_quieted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "text")
    logging.getLogger("httpx").info("HTTP Request: POST ...")
    logging.getLogger("connector.test").debug("a debug line")
    err = capsys.readouterr().err
    assert "HTTP Request" not in err
    assert "DEBUG connector.test: a debug line" in err


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)
