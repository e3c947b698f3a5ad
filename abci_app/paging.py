"""Paged list views: one bounded page per Query, and the one client walk that fetches every page.

Every Query runs on the ABCI server's one thread, between the blocks it also
serves, so a view of a collection that grows with user actions (datasets,
model versions, proposals, votes, validators, delegations, unbondings)
answers one page, never the whole collection:

    data:   [ARG][/AFTER]   ARG the view's own argument (an id, an address, a
                            status, or nothing); AFTER the `next` of the page
                            before (none: from the start)
    answer: {"entries": [...], "next": CURSOR or null}   null on the last page

A page lists at most MAX_ENTRIES entries in the view's fixed order, and stops
early once its answer passes MAX_ANSWER_BYTES or, for a view that filters,
once it has read MAX_SCANNED records or MAX_SCANNED_BYTES: each view starts
reading at its cursor (a key or an id), so no page's work grows with the
collection. Clients call `walk`, never a loop of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from abci_app.context import encode_json, parse_uint64

MAX_ENTRIES = 100  # entries one page lists
MAX_ANSWER_BYTES = 256 * 1024  # a page ends once its entries pass this (so at most this plus one entry)
MAX_SCANNED = 1_000  # records one page of a filtering view reads (a status, an owner), listed or not
MAX_SCANNED_BYTES = 1024 * 1024  # bytes of records one page reads (a proposal is up to ~90 KB)


def split(data: bytes) -> tuple[str, str]:
    """(ARG, AFTER) of a paged view's `[ARG][/AFTER]` argument; ValueError (a bad query) on non-ASCII."""
    arg, _, after = data.decode("ascii").partition("/")
    return arg, after


def page(records: Iterable[tuple[str, int, dict | None]]) -> bytes:
    """One page's answer from the view's records in listing order, each (cursor, bytes read, entry or None when
    the view's filter leaves it out); a view that lists every record it reads may say 0 bytes, as its answer
    bounds them. Pulled lazily, one past the page: that tells whether there is more."""
    entries: list[dict] = []
    answer = scanned = read = 0
    last = None
    for cursor, size, entry in records:
        if len(entries) == MAX_ENTRIES or answer >= MAX_ANSWER_BYTES or scanned >= MAX_SCANNED or read >= MAX_SCANNED_BYTES:
            return encode_json({"entries": entries, "next": last})
        scanned, read, last = scanned + 1, read + size, cursor
        if entry is not None:
            entries.append(entry)
            answer += len(encode_json(entry))
    return encode_json({"entries": entries, "next": None})


def by_id(path: str, data: bytes, total: int, read: Callable[[int], tuple[int, dict] | None]) -> bytes:
    """A page of a view whose records have the contiguous ids 0..total-1, by id; the cursor is the last id listed,
    so a page reads only its own records. `read(id)` gives (bytes read, entry), or None for a gap."""
    arg, after = split(data)
    if arg:
        raise ValueError(f"{path} takes no argument but its page cursor (/AFTER)")
    start = parse_uint64(after) + 1 if after else 0

    def records():
        for record_id in range(start, total):
            found = read(record_id)
            if found is not None:
                yield str(record_id), *found
    return page(records())


def walk(fetch: Callable[[str], bytes], arg: str = "", after: str = "") -> list:
    """Every entry of a paged view from `after` on: `fetch(data)` answers one page. Pages are read at the
    node's latest height each, so a list that changes meanwhile may be seen part before, part after.
    ValueError on an answer that is not a page, or a `next` already walked (a broken node whose cursors repeat or
    cycle would otherwise hang the caller)."""
    entries: list = []
    seen = {after}  # every cursor this walk has fetched; bounded by the pages it got
    while True:
        raw = fetch(f"{arg}/{after}" if after else arg)
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        if not (isinstance(doc, dict) and isinstance(doc.get("entries"), list) and (doc.get("next") is None or isinstance(doc["next"], str))):
            raise ValueError(f"expected a page {{entries, next}}, got {raw[:64]!r}")
        entries += doc["entries"]
        if doc["next"] is None:
            return entries
        if doc["next"] in seen:
            raise ValueError(f"the page after {after!r} names {doc['next']!r} as the next, a page already walked: the node does not page on")
        after = doc["next"]
        seen.add(after)
