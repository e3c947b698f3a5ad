"""Join time: a fresh node reaching serving state by restoring a snapshot, against replaying the blocks.

For each chain length H, a source node executes H blocks of transfers (bench/transfer_chain.py)
with a snapshot at height H. Then, in the same run, two fresh in-process Applications reach
height H: the baseline replays every block (InitChain, then FinalizeBlock + Commit per block, what
CometBFT's block sync makes the app do), the other restores the snapshot through the ABCI calls
(OfferSnapshot with the source's app hash, then ApplySnapshotChunk for every chunk read with
LoadSnapshotChunk, which verifies each chunk and rebuilds the trie). Both end with Info at H and
the same app hash. Measured: app-side wall time only; CometBFT's block fetching and light-client
checks, and p2p chunk transfer, are not included in either. Asserts nothing about timing.

    .venv/bin/python bench/statesync.py [--blocks 1000,10000] [--txs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from transfer_chain import TransferChain, run_block

from abci_app.app import Application
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.snapshots import SnapshotSettings

Apply = abci.ResponseApplySnapshotChunk


def measure(blocks: int, per_block: int, work: Path) -> None:
    chain = TransferChain(per_block=per_block)
    requests = list(chain.blocks(blocks))  # signed once, outside every timing

    source = Application(work / "source", SnapshotSettings(interval=blocks, keep_recent=1))
    source.init_chain(chain.genesis)
    for request in requests:
        run_block(source, request)
    start = time.perf_counter()
    source.snapshots.wait()  # the snapshot of height H is written in the background
    snapshot_wait = time.perf_counter() - start
    (snapshot,) = source.list_snapshots(abci.RequestListSnapshots()).snapshots
    app_hash = source.store.app_hash
    chunks = [source.load_snapshot_chunk(abci.RequestLoadSnapshotChunk(height=blocks, format=snapshot.format, chunk=i)).chunk
              for i in range(snapshot.chunks)]

    replayer = Application(work / "replay")
    start = time.perf_counter()
    replayer.init_chain(chain.genesis)
    for request in requests:
        run_block(replayer, request)
    replay = time.perf_counter() - start

    restorer = Application(work / "restore")
    start = time.perf_counter()
    offered = restorer.offer_snapshot(abci.RequestOfferSnapshot(snapshot=snapshot, app_hash=app_hash)).result
    results = [restorer.apply_snapshot_chunk(abci.RequestApplySnapshotChunk(index=i, chunk=c, sender="source")).result
               for i, c in enumerate(chunks)]
    restore = time.perf_counter() - start

    assert offered == abci.ResponseOfferSnapshot.ACCEPT and results == [Apply.ACCEPT] * len(chunks), "restore refused"
    for node in (replayer, restorer):
        info = node.info(abci.RequestInfo())
        assert (info.last_block_height, info.last_block_app_hash) == (blocks, app_hash), "node did not reach the source's state"
    keys = source.store._conn.execute("SELECT COUNT(*) FROM kv").fetchone()[0]
    print(f"{blocks:>6} blocks x {per_block} transfers ({keys} keys, snapshot {sum(map(len, chunks)) / 1e6:.2f} MB "
          f"in {len(chunks)} chunks, {snapshot_wait:.2f} s still writing after the last Commit): "
          f"replay {replay:.2f} s, restore {restore:.3f} s, replay/restore = {replay / restore:.0f}x")
    for node in (source, replayer, restorer):
        node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", default="1000,10000", help="chain lengths, comma-separated")
    parser.add_argument("--txs", type=int, default=10, help="transfers per block")
    args = parser.parse_args()
    for blocks in [int(b) for b in args.blocks.split(",")]:
        with tempfile.TemporaryDirectory(prefix="bench-statesync-") as work:
            measure(blocks, args.txs, Path(work))


if __name__ == "__main__":
    main()
