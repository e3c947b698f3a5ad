"""`gradchain node pin-sync`: a node's Kubo holds, and so serves, every file the chain registered.

Each pass walks the paged views /registry/history (every version's checkpoint
and the deltas of its contributions) and /datasets/list, and for each file not
pinned yet: fetches it over IPFS with the workers' verified fetch (CID and
sha256 checked, at most the registered size), pins it, and records it in
HOME/pins.json so a restart does not fetch it again. A file that cannot be had
is retried with back-off. Only files the chain registered are fetched; the
ledger's counts are what `node status` shows.

`node start` runs this as its "pins" child whenever it runs Kubo; a validator's
worker also pins the deltas it accepts (abci_app.workers.base.Worker.pin), which
this pass then finds pinned already (pinning twice is a no-op in Kubo).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from abci_app.ipfs.client import IpfsClient, IpfsError
from abci_app.ipfs.download import VerificationError, fetch_verified
from abci_app.supervisor import Backoff

LEDGER_FILE = "pins.json"
RETRY = Backoff(initial=5.0, maximum=600.0)  # per file: 5 s, 10 s, ... at most 10 minutes between tries
DELTA_SIZE_FACTOR = 2  # a delta holds at most every weight of its model, in float32 where the checkpoint may be 16-bit
FETCH_TIMEOUT = 30.0  # seconds to find a file's root block, and the longest stall of a transfer


@dataclass(frozen=True)
class Wanted:
    """A file the chain registered: what a node pins."""

    cid: str
    sha256: str
    max_bytes: int  # the registered size (for a delta: a bound derived from its version's)
    what: str  # "version 3", "dataset 1", "delta of submission 7 (version 3)"


class TooLarge(VerificationError):
    """A transfer ran past the size the chain registered for the file."""


def registered_files(query_pages: Callable[[str], list]) -> list[Wanted]:
    """Every file the chain registered, one per CID, oldest first: versions' checkpoints and their
    contributions' deltas (/registry/history), then datasets (/datasets/list). `query_pages` is
    ChainClient.query_pages. Entries without a well-formed CID, sha256 or size are skipped."""
    wanted: dict[str, Wanted] = {}

    def add(cid: object, sha256: object, max_bytes: object, what: str) -> None:
        if isinstance(cid, str) and isinstance(sha256, str) and isinstance(max_bytes, int) and max_bytes > 0 and cid not in wanted:
            wanted[cid] = Wanted(cid, sha256, max_bytes, what)

    for version in query_pages("/registry/history"):
        if not isinstance(version, dict):
            continue
        size = version.get("bytes")
        add(version.get("cid"), version.get("sha256"), size, f"version {version.get('id')}")
        for contribution in version.get("contributions") or []:
            if isinstance(contribution, dict) and isinstance(size, int):
                add(contribution.get("cid"), contribution.get("sha256"), size * DELTA_SIZE_FACTOR,
                    f"delta of submission {contribution.get('submission')} (version {version.get('id')})")
    for dataset in query_pages("/datasets/list"):
        if isinstance(dataset, dict):
            add(dataset.get("cid"), dataset.get("sha256"), dataset.get("bytes"), f"dataset {dataset.get('id')}")
    return list(wanted.values())


@dataclass
class Retry:
    failures: int
    next_at: float  # time.monotonic() of the next try
    error: str


@dataclass
class PinSync:
    """Pins registered files on one Kubo node; `ledger` (HOME/pins.json) remembers what is pinned."""

    ipfs: IpfsClient
    ledger: Path
    report: Callable[[str], None] = print
    timeout: float = FETCH_TIMEOUT
    retry: Backoff = RETRY
    clock: Callable[[], float] = time.monotonic
    pinned: dict[str, dict] = field(default_factory=dict)  # cid -> {"sha256", "what"}
    failing: dict[str, Retry] = field(default_factory=dict)
    wanted: int = 0

    def __post_init__(self) -> None:
        try:
            doc = json.loads(self.ledger.read_text())
            self.pinned = {cid: entry for cid, entry in doc.get("files", {}).items() if isinstance(entry, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            self.report(f"pin ledger {self.ledger} unreadable ({exc}): starting afresh")

    def sync(self, files: Iterable[Wanted]) -> int:
        """One pass over `files`: fetch, verify and pin each one not pinned whose retry is due. Returns how many it pinned."""
        files = list(files)
        self.wanted = len(files)
        done = 0
        for wanted in files:
            if wanted.cid in self.pinned:
                continue
            retry = self.failing.get(wanted.cid)
            if retry is not None and self.clock() < retry.next_at:
                continue
            try:
                self.pin(wanted)
            except (IpfsError, VerificationError, OSError) as exc:
                failures = retry.failures + 1 if retry else 1
                delay = self.retry.delay(failures - 1)
                self.failing[wanted.cid] = Retry(failures, self.clock() + delay, str(exc))
                self.report(f"{wanted.what} {wanted.cid}: not pinned ({exc}); try {failures + 1} in {delay:.0f}s")
            else:
                self.failing.pop(wanted.cid, None)
                self.pinned[wanted.cid] = {"sha256": wanted.sha256, "what": wanted.what}
                self.save()
                done += 1
                self.report(f"{wanted.what} {wanted.cid}: pinned ({len(self.pinned)} of {self.wanted})")
        self.save()
        return done

    def pin(self, wanted: Wanted) -> None:
        """Fetch `wanted` through our Kubo (verified against its CID and sha256, at most its registered size), then pin it:
        the blocks the fetch brought are local, so the pin only records them."""
        received = 0

        def bound(n: int) -> None:
            nonlocal received
            received += n
            if received > wanted.max_bytes:
                raise TooLarge(f"more than the {wanted.max_bytes} bytes registered for {wanted.cid}: refusing it")

        with tempfile.TemporaryDirectory(prefix=".pin-", dir=self.ledger.parent) as scratch:
            fetch_verified(self.ipfs, wanted.cid, wanted.sha256, Path(scratch) / "file", timeout=self.timeout, progress=bound)
        self.ipfs.pin_add(wanted.cid, timeout=self.timeout)

    def summary(self) -> dict:
        return {"wanted": self.wanted, "pinned": len(self.pinned), "failing": len(self.failing),
                "errors": {cid: retry.error for cid, retry in sorted(self.failing.items())}}

    def save(self) -> None:
        """Write the ledger atomically: a crash mid-write must not lose what was pinned."""
        tmp = self.ledger.with_name(f".{self.ledger.name}.tmp")
        tmp.write_text(json.dumps({"files": self.pinned, **self.summary()}, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.ledger)


def read_summary(ledger: Path) -> dict | None:
    """What `node status` shows of the pin sync: {"wanted", "pinned", "failing"}; None before its first pass."""
    try:
        doc = json.loads(Path(ledger).read_text())
        return {key: doc[key] for key in ("wanted", "pinned", "failing")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run(home: Path, *, poll: float = 10.0, once: bool = False, report: Callable[[str], None] = print) -> None:
    """Sync pins for the node in HOME every `poll` seconds (or one pass with `once`); a chain or Kubo that does not
    answer is reported and tried again at the next poll."""
    from abci_app.client import ChainClient, ChainError
    from abci_app.node.home import load_settings

    home = Path(home).resolve()
    settings = load_settings(home)
    with ChainClient(settings.rpc_url) as chain, IpfsClient(settings.ipfs_url) as ipfs:
        sync = PinSync(ipfs, home / LEDGER_FILE, report=report)
        report(f"pin sync: {len(sync.pinned)} files pinned before; chain {settings.rpc_url}, IPFS {settings.ipfs_url}")
        while True:
            try:
                sync.sync(registered_files(chain.query_pages))
            except ChainError as exc:
                report(f"pin sync: the chain did not answer ({exc}); next try in {poll:g}s")
            if once:
                return
            time.sleep(poll)
