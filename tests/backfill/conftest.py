"""Followers built by a test are closed when it ends (they hold the file open)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.backfill.follower import BackfillStore, CsvFollower
from tests.backfill.helpers import CSV_LAYOUT

FollowerFactory = Callable[..., CsvFollower]


@pytest.fixture
def make_follower() -> Iterator[FollowerFactory]:
    """Build followers (no grace period, from the start unless told) and close them afterwards."""
    made: list[CsvFollower] = []

    def make(store: BackfillStore, path: Path | str, layout: Any = CSV_LAYOUT, **options: Any) -> CsvFollower:
        options.setdefault("grace_s", 0.0)
        options.setdefault("start", "start")
        made.append(CsvFollower(store, path, layout, **options))
        return made[-1]

    yield make
    for follower in made:
        follower.close()
