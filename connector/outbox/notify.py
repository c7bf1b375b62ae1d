"""The store as the producers see it: append, then wake the drainer that waits for those rows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from connector.outbox.records import CsvPosition, DbPosition, NewCdr, NewRecording
from connector.outbox.store import Store


class NotifyingSink:
    """Append through the store and set `new_rows` whenever an append stored anything new."""

    def __init__(self, store: Store, new_rows: asyncio.Event) -> None:
        self._store = store
        self._new_rows = new_rows

    def _stored(self, new: int) -> int:
        # Set only after the commit: a woken drainer must find the rows.
        if new:
            self._new_rows.set()
        return new

    async def append_cdrs(
        self, rows: Sequence[NewCdr], position: CsvPosition | DbPosition | None = None
    ) -> int:
        """Append CDRs (and a reader's position) as Store.append_cdrs does; wake the drainer if new."""
        return self._stored(await self._store.append_cdrs(rows, position))

    async def csv_position(self, path: str) -> CsvPosition | None:
        """Where the CSV follower of `path` stopped, as Store.csv_position says."""
        return await self._store.csv_position(path)

    async def db_position(self, source: str) -> DbPosition | None:
        """Where the CDR database follower of `source` stopped, as Store.db_position says."""
        return await self._store.db_position(source)

    async def append_recordings(self, rows: Sequence[NewRecording]) -> int:
        """Append recordings as Store.append_recordings does; wake the uploader if any was new."""
        return self._stored(await self._store.append_recordings(rows))
