"""The pin sync's logic (abci_app.node.pins): which files it wants, what it refuses, what it remembers, when it retries.

A unit test cannot run Kubo, so `ServedBytes` stands in for the IPFS client here
(content by CID, as any node would serve it); tests/e2e/test_pin_sync_e2e.py runs
the same sync against real Kubo nodes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from abci_app.ipfs.cid import cid_of_bytes
from abci_app.ipfs.client import IpfsError
from abci_app.node import pins
from abci_app.node.pins import PinSync, Wanted, registered_files
from abci_app.supervisor import Backoff


class ServedBytes:
    """What a swarm serves: bytes by CID (possibly not what the CID says), and the pins made."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.fetches: list[str] = []
        self.pinned: list[str] = []

    def cat_stream(self, cid: str, timeout: float | None = None):
        self.fetches.append(cid)
        if cid not in self.content:
            raise IpfsError(f"CID {cid} not found within {timeout:g}s")
        data = self.content[cid]
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    def pin_add(self, cid: str, *, timeout: float | None = None) -> None:
        self.pinned.append(cid)


def serve(ipfs: ServedBytes, data: bytes, what: str = "dataset 0", size: int | None = None) -> Wanted:
    cid = cid_of_bytes(data)
    ipfs.content[cid] = data
    return Wanted(cid, hashlib.sha256(data).hexdigest(), len(data) if size is None else size, what)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, ipfs: ServedBytes, clock: Clock | None = None) -> tuple[PinSync, list[str]]:
    lines: list[str] = []
    sync = PinSync(ipfs, tmp_path / pins.LEDGER_FILE, report=lines.append, retry=Backoff(initial=5.0, maximum=40.0), clock=clock or Clock())
    return sync, lines


# --- which files --------------------------------------------------------------------


def pages(views: dict[str, list]):
    return lambda path: views[path]


def test_registered_files_are_versions_their_deltas_and_datasets_once_each() -> None:
    a, b, d = "bafkreia", "bafkreib", "bafkreid"
    views = {
        "/registry/history": [
            {"id": 0, "cid": a, "sha256": "aa", "bytes": 100, "contributions": []},
            {"id": 1, "cid": b, "sha256": "bb", "bytes": 120, "contributions": [{"submission": 7, "cid": d, "sha256": "dd"}]},
        ],
        "/datasets/list": [{"id": 0, "cid": d, "sha256": "dd", "bytes": 5}, {"id": 1, "cid": "bafkreie", "sha256": "ee", "bytes": 9}],
    }
    wanted = registered_files(pages(views))
    assert [(w.cid, w.max_bytes, w.what) for w in wanted] == [
        (a, 100, "version 0"),
        (b, 120, "version 1"),
        (d, 120 * pins.DELTA_SIZE_FACTOR, "delta of submission 7 (version 1)"),  # first registration of a CID wins
        ("bafkreie", 9, "dataset 1"),
    ]


def test_registered_files_skip_entries_without_cid_sha256_or_size() -> None:
    views = {
        "/registry/history": [{"id": 0, "cid": "bafkreia", "sha256": "aa"}, "garbage", {"id": 1, "cid": 5, "sha256": "bb", "bytes": 3}],
        "/datasets/list": [{"id": 0, "cid": "bafkreic", "sha256": "cc", "bytes": 0}, {"id": 1, "cid": "bafkreid", "sha256": None, "bytes": 4}],
    }
    assert registered_files(pages(views)) == []


# --- pinning ------------------------------------------------------------------------


def test_a_registered_file_is_fetched_verified_pinned_and_remembered(tmp_path: Path) -> None:
    ipfs = ServedBytes()
    wanted = serve(ipfs, b"tokens " * 500)
    sync, lines = make(tmp_path, ipfs)
    assert sync.sync([wanted]) == 1
    assert ipfs.pinned == [wanted.cid]
    assert sync.summary() == {"wanted": 1, "pinned": 1, "failing": 0, "errors": {}}
    assert "dataset 0" in lines[-1] and "pinned (1 of 1)" in lines[-1]
    assert list(tmp_path.glob(".pin-*")) == []  # the scratch copy is gone: Kubo holds the blocks

    restarted, _ = make(tmp_path, ipfs)
    assert restarted.sync([wanted]) == 0
    assert ipfs.fetches == [wanted.cid], "a restart fetched a file it had pinned"
    assert pins.read_summary(tmp_path / pins.LEDGER_FILE) == {"wanted": 1, "pinned": 1, "failing": 0}


def test_bytes_that_do_not_match_the_registered_sha256_are_not_pinned(tmp_path: Path) -> None:
    ipfs = ServedBytes()
    real = serve(ipfs, b"registered content")
    forged = Wanted(real.cid, hashlib.sha256(b"other").hexdigest(), real.max_bytes, "version 0")
    sync, lines = make(tmp_path, ipfs)
    assert sync.sync([forged]) == 0
    assert ipfs.pinned == []
    assert "sha256 mismatch" in sync.summary()["errors"][real.cid] and "not pinned" in lines[-1]


def test_a_file_larger_than_registered_is_refused_mid_transfer(tmp_path: Path) -> None:
    ipfs = ServedBytes()
    wanted = serve(ipfs, b"x" * 5000, size=2500)
    sync, _ = make(tmp_path, ipfs)
    assert sync.sync([wanted]) == 0
    assert ipfs.pinned == []
    assert "more than the 2500 bytes registered" in sync.summary()["errors"][wanted.cid]


def test_a_missing_file_is_retried_with_back_off_and_pinned_once_served(tmp_path: Path) -> None:
    ipfs, clock = ServedBytes(), Clock()
    data = b"served later"
    wanted = Wanted(cid_of_bytes(data), hashlib.sha256(data).hexdigest(), len(data), "version 2")
    sync, _ = make(tmp_path, ipfs, clock)
    sync.sync([wanted])
    assert sync.summary()["failing"] == 1 and len(ipfs.fetches) == 1
    sync.sync([wanted])  # within the first back-off (5 s): not tried
    assert len(ipfs.fetches) == 1
    clock.now += 5
    sync.sync([wanted])  # tried again, fails again: the next wait doubles
    assert len(ipfs.fetches) == 2 and sync.failing[wanted.cid].next_at == clock.now + 10
    clock.now += 9
    sync.sync([wanted])
    assert len(ipfs.fetches) == 2
    ipfs.content[wanted.cid] = data
    clock.now += 1
    assert sync.sync([wanted]) == 1
    assert ipfs.pinned == [wanted.cid] and sync.summary()["failing"] == 0


def test_an_unreadable_ledger_starts_afresh(tmp_path: Path) -> None:
    (tmp_path / pins.LEDGER_FILE).write_text("{not json")
    ipfs = ServedBytes()
    wanted = serve(ipfs, b"abc")
    sync, lines = make(tmp_path, ipfs)
    assert "unreadable" in lines[0]
    assert sync.sync([wanted]) == 1
    assert json.loads((tmp_path / pins.LEDGER_FILE).read_text())["files"][wanted.cid]["sha256"] == wanted.sha256


def test_no_summary_before_the_first_pass(tmp_path: Path) -> None:
    assert pins.read_summary(tmp_path / pins.LEDGER_FILE) is None


@pytest.mark.parametrize("ledger", ['{"files": []}', '[]'])
def test_a_ledger_of_the_wrong_shape_is_not_trusted(tmp_path: Path, ledger: str) -> None:
    (tmp_path / pins.LEDGER_FILE).write_text(ledger)
    sync, _ = make(tmp_path, ServedBytes())
    assert sync.pinned == {}
