"""The dedupe numbering of CDRs: which rows of a batch are new, and under which key.

Pure: the store looks up the rows already stored under the batch's identities and hands them in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from connector.cdr.identity import dedupe_key
from connector.outbox.records import NewCdr

# The raw column holds the headers as a JSON array of [name, value] pairs, exactly as received.
_JSON = json.JSONEncoder(ensure_ascii=False)


@dataclass(frozen=True)
class NumberedCdrs:
    """A batch after numbering: rows to insert, and AMI frames adopting a row read from a CSV."""

    inserts: list[tuple[Any, ...]]
    adoptions: list[tuple[Any, ...]]


def number_cdrs(rows: Sequence[NewCdr], known: Iterable[tuple[str, str | None]]) -> NumberedCdrs:
    """Give each row its dedupe key; leave out rows whose CDR is already stored.

    `known` holds (dedupe_key, fingerprint) of the stored rows sharing an identity with the batch.
    An AMI frame is the n-th distinct frame of its identity and is left out when its fingerprint is
    known; a CSV row brings its own occurrence number and is left out when its key is known.
    """
    owner: dict[str, str | None] = dict(known)  # key -> AMI fingerprint (None: from a CSV line)
    frames: dict[str, set[str]] = {}
    for key, fingerprint in owner.items():
        if fingerprint is not None:
            frames.setdefault(key.rpartition("#")[0], set()).add(fingerprint)
    numbered = NumberedCdrs([], [])
    for row in rows:
        if row.occurrence is not None or row.fingerprint is None:
            key = dedupe_key(row.identity, row.occurrence or 1)
            if key in owner:
                continue
        else:
            seen = frames.setdefault(row.identity, set())
            if row.fingerprint in seen:
                continue
            seen.add(row.fingerprint)
            number = len(seen)
            # After a purge the n-th number may still belong to another frame: take the next free one.
            while owner.get(dedupe_key(row.identity, number)) is not None:
                number += 1
            key = dedupe_key(row.identity, number)
        raw = row.raw_json or _JSON.encode(row.headers)
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
        (numbered.adoptions if key in owner else numbered.inserts).append(params)
        owner[key] = row.fingerprint
    return numbered
