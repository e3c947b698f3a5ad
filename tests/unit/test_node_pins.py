"""The pin sync's logic (abci_app.node.pins): which files it wants, what it refuses or skips, what it remembers, when it
retries.

A unit test cannot run Kubo, so `ServedBytes` stands in for the IPFS client here
(content by CID, as any node would serve it); the bytes go through the real
verification (abci_app.ipfs.download.verify_stream). tests/e2e/test_pin_sync_e2e.py
runs the same sync against real Kubo nodes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from abci_app import paging
from abci_app.context import encode_json
from abci_app.ipfs.cid import cid_of_bytes
from abci_app.ipfs.client import IpfsError, IpfsUnreachable
from abci_app.node import pins
from abci_app.node.pins import ChainFiles, PinSync, Wanted
from abci_app.supervisor import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ServedBytes:
    """What a swarm serves through our Kubo: bytes by CID (possibly not what the CID says), the size its root block
    states, the pins made; `home` is checked for files while a transfer runs."""

    def __init__(self, home: Path | None = None, clock: Clock | None = None, seconds_per_chunk: float = 0.0) -> None:
        self.content: dict[str, bytes] = {}
        self.stated: dict[str, int] = {}  # a root block that misstates its file's size
        self.stats: list[str] = []
        self.fetches: list[str] = []
        self.pinned: list[str] = []
        self.peers: list[dict] = [{"Peer": "12D3KooWx"}]
        self.home, self.clock, self.seconds_per_chunk = home, clock, seconds_per_chunk
        self.files_seen_during_fetch: list[Path] = []

    def stat(self, cid: str, *, timeout: float | None = None) -> dict:
        self.stats.append(cid)
        if cid not in self.content:
            raise IpfsError(f"CID {cid} not found within {timeout:g}s")
        return {"Hash": cid, "Size": self.stated.get(cid, len(self.content[cid])), "Type": "file"}

    def cat_stream(self, cid: str, chunk_size: int | None = 1 << 20, timeout: float | None = None):
        self.fetches.append(cid)
        data = self.content[cid]
        for start in range(0, len(data), 1000):
            if self.clock is not None:
                self.clock.now += self.seconds_per_chunk
            if self.home is not None:
                self.files_seen_during_fetch += [p for p in self.home.rglob("*") if p.is_file()]
            yield data[start : start + 1000]

    def pin_add(self, cid: str, *, timeout: float | None = None) -> None:
        self.pinned.append(cid)

    def recursive_pins(self) -> set[str]:
        return set(self.pinned)

    def swarm_peers(self) -> list[dict]:
        return self.peers


def serve(ipfs: ServedBytes, data: bytes, what: str = "dataset 0", size: int | None = None) -> Wanted:
    cid = cid_of_bytes(data)
    ipfs.content[cid] = data
    return Wanted(cid, hashlib.sha256(data).hexdigest(), len(data) if size is None else size, what)


def make(tmp_path: Path, ipfs: ServedBytes, clock: Clock | None = None, **limits) -> tuple[PinSync, list[str]]:
    lines: list[str] = []
    limits.setdefault("disk_free", lambda path: 1 << 50)
    sync = PinSync(ipfs, tmp_path / pins.LEDGER_FILE, report=lines.append, retry=Backoff(initial=5.0, maximum=40.0),
                   clock=clock or Clock(), **limits)
    return sync, lines


# --- which files --------------------------------------------------------------------


class Chain:
    """The views ChainFiles reads: paged /registry/history (cursor = last id), /datasets/admitted, /datasets/dataset ID."""

    def __init__(self, versions: list[dict], datasets: list[dict], admitted: list[list[int]]) -> None:
        self.versions, self.datasets, self.admitted = versions, datasets, admitted
        self.asked: list[tuple[str, str]] = []

    def query(self, path: str, data: str = "") -> bytes:
        self.asked.append((path, data))
        if path == "/registry/history":
            _, cursor = paging.split(data.encode())
            after = int(cursor) if cursor else -1
            return encode_json({"entries": [v for v in self.versions if not isinstance(v, dict) or v["id"] > after], "next": None})
        if path == "/datasets/admitted":
            return encode_json(self.admitted)
        return encode_json(next(d for d in self.datasets if d["id"] == int(data)))


def version(vid: int, cid: str, size: int, dataset_ids=(), contributions=()) -> dict:
    return {"id": vid, "cid": cid, "sha256": cid[-2:] * 2, "bytes": size, "dataset_ids": list(dataset_ids), "contributions": list(contributions)}


def dataset(did: int, cid: str, size: int) -> dict:
    return {"id": did, "cid": cid, "sha256": cid[-2:] * 2, "bytes": size, "weight": 0}


def test_chain_files_are_newest_version_first_its_deltas_then_used_datasets_once_each() -> None:
    delta = {"submission": 7, "cid": "bafkreid", "sha256": "dd", "windows": [[1, 40]]}
    chain = Chain([version(0, "bafkreia", 100, dataset_ids=[0]), version(1, "bafkreib", 120, contributions=[delta])],
                  [dataset(0, "bafkreix", 5), dataset(1, "bafkreid", 9), dataset(2, "bafkreiy", 7), dataset(3, "bafkreiz", 1 << 60)],
                  admitted=[[2, 1000]])
    files = ChainFiles(chain.query)
    assert [(w.cid, w.max_bytes, w.what) for w in files.files()] == [
        ("bafkreib", 120, "version 1"),
        ("bafkreid", 120 * pins.DELTA_SIZE_FACTOR, "delta of submission 7 (version 1)"),  # the first use of a CID wins
        ("bafkreia", 100, "version 0"),
        ("bafkreiy", 7, "dataset 2"),  # admitted
        ("bafkreix", 5, "dataset 0"),  # named by version 0
    ]  # dataset 1 is the delta's CID already; dataset 3 is only registered: not fetched


def test_chain_files_read_only_what_is_new() -> None:
    chain = Chain([version(0, "bafkreia", 100, dataset_ids=[0])], [dataset(0, "bafkreix", 5), dataset(1, "bafkreiy", 6)], admitted=[])
    files = ChainFiles(chain.query)
    files.files()
    chain.asked.clear()
    chain.versions.append(version(1, "bafkreib", 120))
    chain.admitted = [[1, 5]]
    assert [w.what for w in files.files()] == ["version 1", "version 0", "dataset 1", "dataset 0"]
    assert chain.asked == [("/registry/history", "/0"), ("/datasets/admitted", ""), ("/datasets/dataset", "1")]


def test_chain_files_skip_entries_without_cid_sha256_or_size() -> None:
    chain = Chain([{"id": 0, "cid": "bafkreia", "sha256": "aa"}, "garbage", {"id": 1, "cid": 5, "sha256": "bb", "bytes": 3}],
                  [{"id": 0, "cid": "bafkreic", "sha256": "cc", "bytes": 0}, {"id": 1, "cid": "bafkreid", "sha256": None, "bytes": 4}],
                  admitted=[[0, 1], [1, 1], "junk"])
    assert ChainFiles(chain.query).files() == []


# --- pinning ------------------------------------------------------------------------


def test_a_file_is_fetched_verified_pinned_and_remembered_and_nothing_is_written_under_home(tmp_path: Path) -> None:
    ipfs = ServedBytes(home=tmp_path)
    wanted = serve(ipfs, b"tokens " * 500)
    sync, lines = make(tmp_path, ipfs)
    assert sync.sync([wanted]) == 1
    assert ipfs.pinned == [wanted.cid]
    assert ipfs.files_seen_during_fetch == [], "the fetch wrote to disk: Kubo already holds the blocks"
    assert sync.summary() == {"wanted": 1, "pinned": 1, "failing": 0, "skipped": 0, "refused": 0, "errors": {}}
    assert "dataset 0" in lines[-1] and "pinned (1 of 1)" in lines[-1]

    restarted, _ = make(tmp_path, ipfs)
    assert restarted.sync([wanted]) == 0
    assert ipfs.fetches == [wanted.cid], "a restart fetched a file it had pinned"
    assert pins.read_summary(tmp_path / pins.LEDGER_FILE) == {"wanted": 1, "pinned": 1, "failing": 0, "refused": 0, "skipped": 0}


def test_the_ledger_is_not_rewritten_when_nothing_changed(tmp_path: Path) -> None:
    ipfs = ServedBytes()
    wanted = serve(ipfs, b"abc")
    sync, _ = make(tmp_path, ipfs)
    sync.sync([wanted])
    ledger = tmp_path / pins.LEDGER_FILE
    ledger.write_text(ledger.read_text() + " ")  # a marker a rewrite would drop
    sync.sync([wanted])
    assert ledger.read_text().endswith(" ")


def test_bytes_that_do_not_match_the_registered_sha256_are_refused_and_not_retried(tmp_path: Path) -> None:
    ipfs, clock = ServedBytes(), Clock()
    real = serve(ipfs, b"registered content")
    forged = Wanted(real.cid, hashlib.sha256(b"other").hexdigest(), real.max_bytes, "version 0")
    sync, lines = make(tmp_path, ipfs, clock)
    assert sync.sync([forged]) == 0
    assert ipfs.pinned == [] and "refused for good" in lines[-1]
    assert "sha256 mismatch" in sync.summary()["errors"][real.cid] and sync.summary()["refused"] == 1
    clock.now += 10_000
    restarted, _ = make(tmp_path, ipfs, clock)
    restarted.sync([forged])
    assert ipfs.fetches == [real.cid], "a refused file was fetched again"
    assert pins.read_summary(tmp_path / pins.LEDGER_FILE)["refused"] == 1
    assert restarted.sync([real]) == 1  # a changed registration is a new question


def test_bytes_that_do_not_match_their_cid_are_refused_and_not_retried(tmp_path: Path) -> None:
    ipfs, clock = ServedBytes(), Clock()
    good = serve(ipfs, b"good")
    ipfs.content[good.cid] = b"evil"
    sync, _ = make(tmp_path, ipfs, clock)
    assert sync.sync([good]) == 0
    assert ipfs.pinned == [] and "do not match CID" in sync.summary()["errors"][good.cid]
    clock.now += 10_000
    sync.sync([good])
    assert ipfs.fetches == [good.cid]


def test_a_file_larger_than_registered_is_refused_before_any_transfer(tmp_path: Path) -> None:
    ipfs = ServedBytes()
    wanted = serve(ipfs, b"x" * 5000, size=2500)
    sync, _ = make(tmp_path, ipfs)
    assert sync.sync([wanted]) == 0
    assert ipfs.fetches == [] and ipfs.pinned == []
    assert "more than the 2500 bytes registered" in sync.summary()["errors"][wanted.cid] and sync.summary()["refused"] == 1


def test_a_root_block_that_understates_its_file_is_refused_mid_transfer(tmp_path: Path) -> None:
    ipfs = ServedBytes()
    wanted = serve(ipfs, b"x" * 5000, size=10**12)
    ipfs.stated[wanted.cid] = 1500
    sync, _ = make(tmp_path, ipfs)
    assert sync.sync([wanted]) == 0
    assert "more than the 1500 bytes expected" in sync.summary()["errors"][wanted.cid] and sync.summary()["refused"] == 1


def test_a_file_over_the_operators_cap_is_skipped_without_a_transfer(tmp_path: Path) -> None:
    ipfs, clock = ServedBytes(), Clock()
    wanted = serve(ipfs, b"y" * 5000, size=2**64 - 1)
    sync, lines = make(tmp_path, ipfs, clock, max_file_bytes=4096)
    assert sync.sync([wanted]) == 0
    assert ipfs.fetches == [] and "skipped (5000 bytes, more than this node's limit of 4096" in lines[-1]
    assert sync.summary()["skipped"] == 1 and sync.summary()["failing"] == 0
    clock.now += 40
    sync.sync([wanted])
    assert ipfs.fetches == [] and len([line for line in lines if "skipped" in line]) == 1  # one line, not one a pass


def test_a_file_that_would_leave_less_than_the_free_space_floor_is_skipped(tmp_path: Path) -> None:
    ipfs, clock = ServedBytes(), Clock()
    wanted = serve(ipfs, b"z" * 5000)
    free = {"bytes": 6000}
    sync, lines = make(tmp_path, ipfs, clock, free_floor=2000, disk_free=lambda path: free["bytes"])
    assert sync.sync([wanted]) == 0
    assert ipfs.fetches == [] and "would leave less than 2000 bytes free" in lines[-1]
    assert sync.summary()["skipped"] == 1 and sync.summary()["failing"] == 0
    free["bytes"] = 8000
    clock.now += 40
    assert sync.sync([wanted]) == 1


def test_a_missing_file_is_retried_with_back_off_and_pinned_once_served(tmp_path: Path) -> None:
    ipfs, clock = ServedBytes(), Clock()
    data = b"served later"
    wanted = Wanted(cid_of_bytes(data), hashlib.sha256(data).hexdigest(), len(data), "version 2")
    sync, _ = make(tmp_path, ipfs, clock)
    sync.sync([wanted])
    assert sync.summary()["failing"] == 1 and len(ipfs.stats) == 1
    sync.sync([wanted])  # within the first back-off (5 s): not tried
    assert len(ipfs.stats) == 1
    clock.now += 5
    sync.sync([wanted])  # tried again, fails again: the next wait doubles
    assert len(ipfs.stats) == 2 and sync.failing[wanted.cid].next_at == clock.now + 10
    clock.now += 9
    sync.sync([wanted])
    assert len(ipfs.stats) == 2
    ipfs.content[wanted.cid] = data
    clock.now += 1
    assert sync.sync([wanted]) == 1
    assert ipfs.pinned == [wanted.cid] and sync.summary()["failing"] == 0


def test_back_off_survives_a_restart(tmp_path: Path) -> None:
    ipfs, clock = ServedBytes(), Clock()
    wanted = Wanted(cid_of_bytes(b"nobody serves this"), "00" * 32, 18, "dataset 3")
    sync, _ = make(tmp_path, ipfs, clock)
    sync.sync([wanted])
    clock.now += 5
    sync.sync([wanted])  # second failure: next try in 10 s
    restarted, _ = make(tmp_path, ipfs, clock)
    restarted.sync([wanted])
    assert len(ipfs.stats) == 2, "a restart retried a file whose back-off had not run out"
    assert restarted.failing[wanted.cid].failures == 2 and "not found" in restarted.summary()["errors"][wanted.cid]
    clock.now += 10
    restarted.sync([wanted])
    assert len(ipfs.stats) == 3


def test_a_slow_transfer_past_its_deadline_fails_with_back_off(tmp_path: Path) -> None:
    clock = Clock()
    ipfs = ServedBytes(clock=clock, seconds_per_chunk=25.0)  # 1000 bytes every 25 s, never a stall
    wanted = serve(ipfs, b"s" * 5000)
    sync, lines = make(tmp_path, ipfs, clock)
    assert sync.sync([wanted]) == 0
    assert "deadline" in sync.summary()["errors"][wanted.cid] and "try 2 in 5s" in lines[-1]
    assert ipfs.pinned == []


def test_one_pass_tries_at_most_max_tries_files_newest_first(tmp_path: Path) -> None:
    ipfs = ServedBytes()
    files = [serve(ipfs, f"file {i}".encode(), what=f"version {9 - i}") for i in range(5)]
    sync, _ = make(tmp_path, ipfs, max_tries=2)
    assert sync.sync(files) == 2
    assert ipfs.pinned == [files[0].cid, files[1].cid]
    assert sync.sync(files) == 2 and sync.sync(files) == 1


def test_no_kubo_stops_the_pass_without_blaming_any_file(tmp_path: Path) -> None:
    ipfs = ServedBytes()
    a, b = serve(ipfs, b"a"), serve(ipfs, b"b")

    def down(cid, *, timeout=None):
        raise IpfsUnreachable("IPFS (Kubo) is not running at http://127.0.0.1:5001")
    ipfs.stat = down
    sync, lines = make(tmp_path, ipfs)
    assert sync.sync([a, b]) == 0
    assert sync.failing == {} and len(lines) == 1 and "not running" in lines[0]


def test_failures_with_no_swarm_peers_point_at_the_swarm_key(tmp_path: Path) -> None:
    ipfs = ServedBytes()
    ipfs.peers = []
    sync, lines = make(tmp_path, ipfs)
    sync.sync([Wanted(cid_of_bytes(b"elsewhere"), "00" * 32, 9, "version 1")])
    assert lines[-1] == pins.NO_PEERS


def test_ledger_entries_kubo_does_not_pin_are_forgotten(tmp_path: Path) -> None:
    ipfs = ServedBytes()
    kept, lost = serve(ipfs, b"kept"), serve(ipfs, b"lost")
    sync, _ = make(tmp_path, ipfs)
    sync.sync([kept, lost])
    ipfs.pinned.remove(lost.cid)  # e.g. `ipfs pin rm`, or a repo restored from an old backup
    restarted, _ = make(tmp_path, ipfs)
    assert restarted.forget_unpinned() == 1
    assert restarted.sync([kept, lost]) == 1 and ipfs.fetches[-1] == lost.cid


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


# --- run ------------------------------------------------------------------------------


@pytest.fixture
def node_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """pins.run against a fake chain (dataset 0 admitted, dataset 1 only registered) and a fake Kubo serving both."""
    import abci_app.client
    import abci_app.node.home

    ipfs = ServedBytes()
    served, registered = serve(ipfs, b"corpus bytes"), serve(ipfs, b"registered by anyone")
    chain = Chain([], [{"id": i, "cid": w.cid, "sha256": w.sha256, "bytes": w.max_bytes} for i, w in enumerate((served, registered))],
                  admitted=[[0, 1000], [1, 0]])

    class FakeChainClient:
        def __init__(self, url: str) -> None:
            self.query = chain.query

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

    class FakeIpfsClient(FakeChainClient):
        def __init__(self, url: str) -> None:
            pass

        def __getattr__(self, name: str):
            return getattr(ipfs, name)

    settings = SimpleNamespace(rpc_url="rpc", ipfs_url="ipfs", pin_max_file_bytes=0, pin_free_floor_bytes=0)
    monkeypatch.setattr(abci_app.node.home, "load_settings", lambda home: settings)
    monkeypatch.setattr(abci_app.client, "ChainClient", FakeChainClient)
    monkeypatch.setattr(pins, "IpfsClient", FakeIpfsClient)
    return tmp_path, ipfs, served, settings


def test_run_pins_removes_stale_scratch_and_survives_a_ledger_it_cannot_write(node_home) -> None:
    home, ipfs, served, _ = node_home
    (home / ".pin-old").mkdir()
    (home / ".pin-old" / ".file.part-1").write_bytes(b"partial")
    (home / f".{pins.LEDGER_FILE}.tmp").mkdir()  # stands in for a full disk: the ledger write fails
    lines: list[str] = []
    pins.run(home, once=True, report=lines.append, free_floor=0)
    assert ipfs.pinned == [served.cid] and ipfs.stats == [served.cid]  # a dataset only registered is not fetched
    assert not (home / ".pin-old").exists()
    assert any("not written" in line for line in lines)


def test_run_survives_a_kubo_outage(node_home) -> None:
    home, ipfs, _, _ = node_home

    def down(**kwargs):
        raise IpfsUnreachable("IPFS (Kubo) is not running at ipfs")
    ipfs.recursive_pins = down
    lines: list[str] = []
    pins.run(home, once=True, report=lines.append)
    assert "not running" in lines[-1] and ipfs.pinned == []


def test_run_takes_its_caps_from_node_json_unless_flags_say_otherwise(node_home) -> None:
    home, ipfs, served, settings = node_home
    settings.pin_max_file_bytes, settings.pin_free_floor_bytes = 5, 1  # node.json: files of at most 5 bytes
    lines: list[str] = []
    pins.run(home, once=True, report=lines.append)
    assert ipfs.pinned == [] and pins.read_summary(home / pins.LEDGER_FILE)["skipped"] == 1
    pins.run(home, once=True, report=lines.append, max_file_bytes=1 << 20, free_floor=0)  # the flags win
    assert ipfs.pinned == [served.cid]
