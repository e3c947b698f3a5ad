"""`gradchain node pin-sync`: a node's Kubo holds, and so serves, every file the chain uses.

The files the chain uses: every version's checkpoint and the deltas of its
contributions (/registry/history), and the datasets rounds draw from (admitted:
/datasets/admitted) or a version names. A dataset that is only registered is
not fetched: anyone may register one, with any size, for one fee.

Each pass tries the files not pinned yet, newest version first, then its deltas,
then datasets, at most MAX_TRIES_PER_PASS of them. For each: `files/stat` gives
its size, checked against the size the chain registered (over it: refused for
good) and against the operator's limits (over the file cap, or under the free
space floor of HOME: skipped, looked at again later). Then it streams the file
through our Kubo, checks the CID and sha256 as the bytes arrive and keeps none
of them (Kubo keeps the blocks), within a deadline that grows with the size;
then pins it and records it in HOME/pins.json. A file that cannot be had is
retried with back-off, and the back-off is in the ledger, so a restart does not
retry everything at once. Bytes that do not match their CID or sha256 never
will: such a file is refused until its registration changes.

`node start` runs this as its "pins" child whenever it runs Kubo; a validator's
worker also pins the deltas it accepts (abci_app.workers.base.Worker.pin), which
this pass then finds pinned already (pinning twice is a no-op in Kubo).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from abci_app import paging
from abci_app.ipfs.client import IpfsClient, IpfsError, IpfsUnreachable
from abci_app.ipfs.download import TooLarge, VerificationError, verify_stream
from abci_app.supervisor import Backoff

LEDGER_FILE = "pins.json"
RETRY = Backoff(initial=5.0, maximum=600.0)  # per file: 5 s, 10 s, ... at most 10 minutes between tries
DELTA_SIZE_FACTOR = 2  # a delta holds at most every weight of its model, in float32 where the checkpoint may be 16-bit
FETCH_TIMEOUT = 30.0  # seconds to find a file's root block, and the longest stall of a transfer
MAX_FILE_BYTES = 8 << 30  # operator cap: a larger file is skipped
FREE_FLOOR_BYTES = 2 << 30  # operator floor: a file that would leave less free under HOME is skipped (Kubo's repo is there)
MAX_TRIES_PER_PASS = 64  # files one pass tries, so a pass ends in bounded time however many wait
TRANSFER_GRACE = 60.0  # a file's deadline: this, plus its size at MIN_RATE
MIN_RATE = 1 << 20  # bytes/s: a slower transfer fails and is retried later
PIN_GRACE = 30.0  # pin/add after a verified fetch walks local blocks only: this, plus the size at PIN_RATE
PIN_RATE = 8 << 20
SAVE_EVERY = 60.0  # seconds between ledger writes within a pass (a crash loses at most this much of the record)
NO_PEERS = "Kubo has no peers: check the swarm key (sha256sum swarm.key against the network's) and --ipfs-peer"


@dataclass(frozen=True)
class Wanted:
    """A file the chain uses: what a node pins."""

    cid: str
    sha256: str
    max_bytes: int  # the registered size (for a delta: a bound derived from its version's)
    what: str  # "version 3", "dataset 1", "delta of submission 7 (version 3)"


class Skipped(Exception):
    """The file is beyond this node's limits (file cap, free space floor): not fetched now, not refused."""


# --- which files ------------------------------------------------------------------------


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _wanted(cid: object, sha256: object, max_bytes: object, what: str) -> Wanted | None:
    if isinstance(cid, str) and isinstance(sha256, str) and isinstance(max_bytes, int) and max_bytes > 0:
        return Wanted(cid, sha256, max_bytes, what)
    return None


@dataclass
class ChainFiles:
    """The files the chain uses, read incrementally: versions are append-only by id and never change, so each call
    walks /registry/history only past the last id seen; datasets come from /datasets/admitted (at most 16) and the ids
    versions name, each record read once (its cid, sha256 and size never change). `query` is ChainClient.query."""

    query: Callable[[str, str], bytes]
    last_version: int = -1
    versions: list[Wanted] = field(default_factory=list)  # newest version first, each followed by its deltas
    named: set[int] = field(default_factory=set)  # dataset ids versions name (dataset_ids, contributions' windows)
    datasets: dict[int, Wanted | None] = field(default_factory=dict)  # records read, by id

    def files(self) -> list[Wanted]:
        """Every file the chain uses, one per CID, in the order a pass tries them. ValueError on a chain that does not
        answer pages; the caller's ChainError on one that does not answer."""
        after = str(self.last_version) if self.last_version >= 0 else ""
        fresh: list[Wanted] = []
        for version in paging.walk(lambda data: self.query("/registry/history", data), after=after):
            if not isinstance(version, dict) or not isinstance(version.get("id"), int):
                continue
            vid, size = version["id"], version.get("bytes")
            self.last_version = max(self.last_version, vid)
            files = [_wanted(version.get("cid"), version.get("sha256"), size, f"version {vid}")]
            self.named.update(d for d in _list(version.get("dataset_ids")) if isinstance(d, int))
            for contribution in _list(version.get("contributions")):
                if not isinstance(contribution, dict):
                    continue
                self.named.update(w[0] for w in _list(contribution.get("windows")) if _list(w) and isinstance(w[0], int))
                if isinstance(size, int):
                    files.append(_wanted(contribution.get("cid"), contribution.get("sha256"), size * DELTA_SIZE_FACTOR,
                                         f"delta of submission {contribution.get('submission')} (version {vid})"))
            fresh = [w for w in files if w] + fresh  # pages are oldest first; a pass wants the newest first
        self.versions[:0] = fresh
        admitted = json.loads(self.query("/datasets/admitted", "") or b"[]")
        if not isinstance(admitted, list):
            raise ValueError(f"/datasets/admitted answered {admitted!r:.64}, not a list")
        ids = set(self.named) | {pair[0] for pair in admitted if isinstance(pair, list) and len(pair) == 2
                                 and isinstance(pair[0], int) and isinstance(pair[1], int) and pair[1] > 0}
        for dataset_id in sorted(ids - self.datasets.keys()):
            record = json.loads(self.query("/datasets/dataset", str(dataset_id)) or b"null")
            self.datasets[dataset_id] = _wanted(*(record.get(k) for k in ("cid", "sha256", "bytes")), f"dataset {dataset_id}") \
                if isinstance(record, dict) else None
        unique: dict[str, Wanted] = {}
        for wanted in [*self.versions, *(self.datasets[d] for d in sorted(ids, reverse=True))]:
            if wanted is not None and wanted.cid not in unique:
                unique[wanted.cid] = wanted
        return list(unique.values())


# --- pinning ----------------------------------------------------------------------------


@dataclass
class Retry:
    failures: int
    next_at: float  # wall time (`PinSync.clock`) of the next try: the ledger keeps it across restarts
    error: str
    skipped: bool = False  # beyond this node's limits, not failing: looked at again when due


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass
class PinSync:
    """Pins the chain's files on one Kubo node; `ledger` (HOME/pins.json) remembers what is pinned, refused and
    waiting for a retry."""

    ipfs: IpfsClient
    ledger: Path
    report: Callable[[str], None] = print
    timeout: float = FETCH_TIMEOUT
    retry: Backoff = RETRY
    clock: Callable[[], float] = time.time
    max_file_bytes: int = MAX_FILE_BYTES
    free_floor: int = FREE_FLOOR_BYTES
    max_tries: int = MAX_TRIES_PER_PASS
    disk_free: Callable[[Path], int] = _disk_free
    pinned: dict[str, dict] = field(default_factory=dict)  # cid -> {"sha256", "what"}
    failing: dict[str, Retry] = field(default_factory=dict)  # cid -> when to try again (failing or skipped)
    refused: dict[str, dict] = field(default_factory=dict)  # cid -> {"sha256", "max_bytes", "reason"}: final for that registration
    wanted: int = 0
    changed: bool = False  # since the ledger was last written
    saved_at: float = 0.0

    def __post_init__(self) -> None:
        try:
            doc = json.loads(self.ledger.read_text())
            self.pinned = {cid: entry for cid, entry in doc.get("files", {}).items() if isinstance(entry, dict)}
            self.refused = {cid: entry for cid, entry in (doc.get("refused_files") or {}).items() if isinstance(entry, dict)}
            latest = self.clock() + self.retry.maximum  # a clock set back must not postpone a retry for longer
            for cid, entry in (doc.get("retry") or {}).items():
                if isinstance(entry, dict) and entry.get("skipped"):
                    continue  # skipped for this node's limits, which a restart may have changed: looked at again now (one stat)
                try:
                    self.failing[cid] = Retry(int(entry["failures"]), min(float(entry["next_at"]), latest), str(entry["error"]))
                except (KeyError, TypeError, ValueError):
                    continue
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            self.report(f"pin ledger {self.ledger} unreadable ({exc}): starting afresh")

    def forget_unpinned(self) -> int:
        """Drop ledger entries Kubo does not pin (a repo re-initialized or restored, an `ipfs pin rm`): they are fetched
        again. Returns how many."""
        held = self.ipfs.recursive_pins()
        gone = [cid for cid in self.pinned if cid not in held]
        for cid in gone:
            del self.pinned[cid]
        self.changed = self.changed or bool(gone)
        return len(gone)

    def is_refused(self, wanted: Wanted) -> bool:
        verdict = self.refused.get(wanted.cid)
        return verdict is not None and verdict.get("sha256") == wanted.sha256 and verdict.get("max_bytes") == wanted.max_bytes

    def sync(self, files: Iterable[Wanted]) -> int:
        """One pass over `files`, in their order: fetch, verify and pin each one not pinned, not refused and due, at most
        `max_tries` of them. Returns how many it pinned."""
        files = list(files)
        self.wanted = len(files)
        done = tries = failed = 0
        for wanted in files:
            if wanted.cid in self.pinned or self.is_refused(wanted):
                continue
            retry = self.failing.get(wanted.cid)
            if retry is not None and self.clock() < retry.next_at:
                continue
            if tries == self.max_tries:
                self.report(f"pin sync: tried {tries} files this pass; the rest wait for the next")
                break
            tries += 1
            try:
                self.pin(wanted)
            except Skipped as exc:
                self.failing[wanted.cid] = Retry(0, self.clock() + self.retry.maximum, str(exc), skipped=True)
                if retry is None or retry.error != str(exc):
                    self.report(f"{wanted.what} {wanted.cid}: skipped ({exc})")
            except IpfsUnreachable as exc:
                self.report(f"pin sync: {exc}")  # no file is at fault: nothing gets a back-off
                break
            except VerificationError as exc:
                self.failing.pop(wanted.cid, None)
                self.refused[wanted.cid] = {"sha256": wanted.sha256, "max_bytes": wanted.max_bytes, "reason": str(exc)}
                self.report(f"{wanted.what} {wanted.cid}: refused for good ({exc})")
            except (IpfsError, OSError) as exc:
                failed += 1
                failures = retry.failures + 1 if retry and not retry.skipped else 1
                delay = self.retry.delay(failures - 1)
                self.failing[wanted.cid] = Retry(failures, self.clock() + delay, str(exc))
                self.report(f"{wanted.what} {wanted.cid}: not pinned ({exc}); try {failures + 1} in {delay:.0f}s")
            else:
                self.failing.pop(wanted.cid, None)
                self.refused.pop(wanted.cid, None)
                self.pinned[wanted.cid] = {"sha256": wanted.sha256, "what": wanted.what}
                done += 1
                self.report(f"{wanted.what} {wanted.cid}: pinned ({len(self.pinned)} of {self.wanted})")
            self.changed = True
            if self.clock() - self.saved_at >= SAVE_EVERY:
                self.save_or_report()
        if failed:
            self.check_peers()
        if self.changed:
            self.save_or_report()
        return done

    def check_peers(self) -> None:
        """After failed fetches: a Kubo with no peers at all points at the swarm key or the peering, not at the files."""
        try:
            if not self.ipfs.swarm_peers():
                self.report(NO_PEERS)
        except IpfsError:
            pass

    def pin(self, wanted: Wanted) -> None:
        """Stream `wanted` through our Kubo, verified against its CID and sha256 and kept nowhere, within a deadline
        that grows with its size; then pin it: the blocks the fetch brought are local, so the pin only records them."""
        size = self.size(wanted)
        limit = TRANSFER_GRACE + size / MIN_RATE
        deadline = self.clock() + limit
        received = 0

        def arriving() -> Iterator[bytes]:
            nonlocal received
            for chunk in self.ipfs.cat_stream(wanted.cid, chunk_size=None, timeout=self.timeout):
                received += len(chunk)
                if self.clock() > deadline:
                    raise IpfsError(f"transfer ran past its {limit:.0f}s deadline with {received} of {size} bytes: too slow")
                yield chunk

        try:
            verify_stream(arriving(), wanted.cid, wanted.sha256, max_bytes=size)  # the root's size: no more may come
        except TooLarge:
            raise
        except VerificationError:
            if received < size:  # a cut transfer hashes wrong too, but is no verdict on the file
                raise IpfsError(f"transfer of {wanted.cid} ended after {received} of {size} bytes") from None
            raise
        try:
            self.ipfs.pin_add(wanted.cid, timeout=PIN_GRACE + size / PIN_RATE)
        except IpfsUnreachable:
            raise
        except IpfsError as exc:  # its blocks are local now: "not found" would mislead
            raise IpfsError(f"pinning it after a verified fetch failed ({exc})") from None

    def size(self, wanted: Wanted) -> int:
        """The file's size from Kubo's `files/stat` (one root block), checked before any transfer: past the registered
        size it is refused (TooLarge); past this node's file cap or free space floor it is skipped (Skipped)."""
        stat = self.ipfs.stat(wanted.cid, timeout=self.timeout)
        kind, size = stat.get("Type", "file"), stat.get("Size")
        if kind != "file":
            raise VerificationError(f"{wanted.cid} is a {kind}, not a file")
        if not isinstance(size, int) or size < 0:
            raise IpfsError(f"IPFS stat of {wanted.cid} gave no size ({size!r})")
        if size > wanted.max_bytes:
            raise TooLarge(f"{wanted.cid} is {size} bytes, more than the {wanted.max_bytes} bytes registered for it: refusing it")
        if size > self.max_file_bytes:
            raise Skipped(f"{size} bytes, more than this node's limit of {self.max_file_bytes} bytes a file")
        free = self.disk_free(self.ledger.parent)
        if free - size < self.free_floor:
            raise Skipped(f"{size} bytes would leave less than {self.free_floor} bytes free under {self.ledger.parent} ({free} free)")
        return size

    def summary(self) -> dict:
        skipped = sum(retry.skipped for retry in self.failing.values())
        errors = {cid: retry.error for cid, retry in self.failing.items()} | {cid: v.get("reason", "") for cid, v in self.refused.items()}
        return {"wanted": self.wanted, "pinned": len(self.pinned), "failing": len(self.failing) - skipped, "skipped": skipped,
                "refused": len(self.refused), "errors": dict(sorted(errors.items()))}

    def save(self) -> None:
        """Write the ledger atomically: a crash mid-write must not lose what was pinned."""
        tmp = self.ledger.with_name(f".{self.ledger.name}.tmp")
        doc = {"files": self.pinned, "refused_files": self.refused, "retry": {cid: asdict(r) for cid, r in self.failing.items()},
               **self.summary()}
        tmp.write_text(json.dumps(doc, sort_keys=True) + "\n")
        os.replace(tmp, self.ledger)
        self.changed, self.saved_at = False, self.clock()

    def save_or_report(self) -> None:
        """A ledger that cannot be written (a full disk) costs a refetch after a restart, never the pin sync itself."""
        try:
            self.save()
        except OSError as exc:
            self.report(f"pin ledger {self.ledger} not written ({exc}); trying again after the next change")


def read_summary(ledger: Path) -> dict | None:
    """What `node status` shows of the pin sync: {"wanted", "pinned", "failing", "refused", "skipped"}; None before
    its first pass."""
    try:
        doc = json.loads(Path(ledger).read_text())
        return {key: doc[key] for key in ("wanted", "pinned", "failing")} | {key: doc.get(key, 0) for key in ("refused", "skipped")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remove_scratch(home: Path) -> int:
    """Remove HOME/.pin-* folders an older pin sync left (it wrote fetches to disk; a SIGTERM skipped their cleanup)."""
    stale = list(home.glob(".pin-*"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def run(home: Path, *, poll: float = 10.0, once: bool = False, report: Callable[[str], None] = print,
        max_file_bytes: int | None = None, free_floor: int | None = None) -> None:
    """Sync pins for the node in HOME every `poll` seconds (or one pass with `once`); a chain or Kubo that does not
    answer is reported and tried again at the next poll. The caps default to HOME/node.json's pin_max_file_bytes and
    pin_free_floor_bytes, and to MAX_FILE_BYTES and FREE_FLOOR_BYTES where those are 0."""
    from abci_app.client import ChainClient, ChainError
    from abci_app.node.home import load_settings

    home = Path(home).resolve()
    settings = load_settings(home)
    if max_file_bytes is None:
        max_file_bytes = settings.pin_max_file_bytes or MAX_FILE_BYTES
    if free_floor is None:
        free_floor = settings.pin_free_floor_bytes or FREE_FLOOR_BYTES
    if removed := remove_scratch(home):
        report(f"pin sync: removed {removed} stale scratch folder(s) HOME/.pin-*")
    with ChainClient(settings.rpc_url) as chain, IpfsClient(settings.ipfs_url) as ipfs:
        sync = PinSync(ipfs, home / LEDGER_FILE, report=report, max_file_bytes=max_file_bytes, free_floor=free_floor)
        chain_files = ChainFiles(chain.query)
        report(f"pin sync: {len(sync.pinned)} files pinned before; chain {settings.rpc_url}, IPFS {settings.ipfs_url}")
        reconciled = False
        while True:
            try:
                if not reconciled:
                    gone = sync.forget_unpinned()
                    reconciled = True
                    if gone:
                        report(f"pin sync: Kubo does not pin {gone} file(s) the ledger listed: fetching them again")
                sync.sync(chain_files.files())
            except (ChainError, ValueError) as exc:
                report(f"pin sync: the chain did not answer ({exc}); next try in {poll:g}s")
            except IpfsError as exc:
                report(f"pin sync: {exc}; next try in {poll:g}s")
            if once:
                return
            time.sleep(poll)
