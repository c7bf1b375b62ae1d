"""The dedupe numbering of CDRs: which rows of a batch are new, and under which key.

Pure: the store looks up the rows already stored under the batch's identities and hands them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.cdr.identity import dedupe_key
from connector.cdr.raw import raw_json
from connector.outbox.records import NewCdr


@dataclass(frozen=True)
class NumberedCdrs:
    """A batch after numbering: rows to insert, and AMI frames adopting a row read from a CSV."""

    inserts: list[tuple[Any, ...]]
    adoptions: list[tuple[Any, ...]]
    # The index in the batch of each insert, in order: for a caller that stores more per row
    # (connector salvage keeps each row's delivery state).
    origins: list[int] = field(default_factory=list)


def number_cdrs(rows: Sequence[NewCdr], known: Iterable[tuple[str, str | None]]) -> NumberedCdrs:
    """Give each row its dedupe key; leave out rows whose CDR is already stored.

    `known` holds (dedupe_key, fingerprint) of the stored rows sharing an identity with the batch.
    An AMI frame is the n-th distinct frame of its identity and is left out when its fingerprint is
    known; a CSV row brings its own occurrence number and is left out when its key is known. A frame
    that brings an occurrence (salvaged from another outbox) keeps that number unless another frame
    holds it, so its event_id stays the same and a CSV line of a CDR lost with it still finds its key.
    """
    owner: dict[str, str | None] = dict(known)  # key -> AMI fingerprint (None: from a CSV line)
    frames: dict[str, set[str]] = {}
    for key, fingerprint in owner.items():
        if fingerprint is not None:
            frames.setdefault(key.rpartition("#")[0], set()).add(fingerprint)
    numbered = NumberedCdrs([], [])
    for index, row in enumerate(rows):
        if row.fingerprint is None:
            key = dedupe_key(row.identity, row.occurrence or 1)
            if key in owner:
                continue
        else:
            seen = frames.setdefault(row.identity, set())
            if row.fingerprint in seen:
                continue
            seen.add(row.fingerprint)
            number = row.occurrence or len(seen)
            # After a purge the n-th number may still belong to another frame: take the next free one.
            while owner.get(dedupe_key(row.identity, number)) is not None:
                number += 1
            key = dedupe_key(row.identity, number)
        raw = row.raw_json or raw_json(row.headers)
        params = (
            row.received_at,
            key,
            row.identity,
            row.fingerprint,
            row.source,
            row.uniqueid,
            row.linkedid,
            raw,
        )
        if key in owner:
            numbered.adoptions.append(params)
        else:
            numbered.inserts.append(params)
            numbered.origins.append(index)
        owner[key] = row.fingerprint
    return numbered
