"""Disk per 10,000 blocks of transfers, with and without pruning, and what pruning costs per block.

The same blocks (bench/transfer_chain.py) go, in the same run, to an archive node (pruning
"nothing", the baseline) and to pruning nodes ("everything": keep 2 heights, and custom: keep
100), each an in-process Application. After the run each store is checkpointed (WAL folded in)
and we print the SQLite file size, the bytes in use (file minus free pages, which SQLite reuses
instead of growing the file), and trie nodes stored after the run (the default run is the 10,000 blocks asked for: a pruned store
does not grow in proportion, so no scaling), with the ratio
archive / pruned, and the FinalizeBlock+Commit time per block against the archive's. Asserts
nothing about timing or size.

    .venv/bin/python bench/pruning.py [--blocks 10000] [--txs 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from transfer_chain import TransferChain, run_block

from abci_app.app import Application
from abci_app.state import Pruning

SETTINGS = {"nothing (archive)": Pruning(), "everything (keep 2)": Pruning.named("everything"), "custom (keep 100)": Pruning.named("custom", 100)}


def disk(app: Application) -> tuple[int, int, int]:
    """(file bytes, bytes in use, trie nodes) of the app's store after folding the WAL into the file."""
    conn = app.store._conn
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size, pages, free = (conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count", "freelist_count"))
    nodes = conn.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]
    return os.path.getsize(app.store.path), (pages - free) * page_size, nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--txs", type=int, default=10, help="transfers per block")
    args = parser.parse_args()
    chain = TransferChain(per_block=args.txs)
    with tempfile.TemporaryDirectory(prefix="bench-pruning-") as work:
        apps = {name: Application(Path(work) / str(i), pruning=pruning) for i, (name, pruning) in enumerate(SETTINGS.items())}
        seconds = dict.fromkeys(apps, 0.0)
        for app in apps.values():
            app.init_chain(chain.genesis)
        for request in chain.blocks(args.blocks):
            hashes = set()
            for name, app in apps.items():
                start = time.perf_counter()
                hashes.add(run_block(app, request))
                seconds[name] += time.perf_counter() - start
            assert len(hashes) == 1, f"pruning changed the app hash at height {request.height}"
        baseline_name = next(iter(apps))
        baseline = disk(apps[baseline_name])
        print(f"disk after {args.blocks} blocks x {args.txs} transfers:")
        for name, app in apps.items():
            size, used, nodes = disk(app)
            per_block_ms = seconds[name] / args.blocks * 1e3
            print(f"  {name:<20} file {size / 1e6:8.1f} MB  in use {used / 1e6:8.1f} MB  "
                  f"nodes {nodes:>9}  archive/this in use = {baseline[1] / used:5.1f}x  "
                  f"{per_block_ms:6.2f} ms/block ({seconds[name] / seconds[baseline_name]:.2f}x the archive's)")
        for app in apps.values():
            app.close()


if __name__ == "__main__":
    main()
