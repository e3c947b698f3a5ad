"""The command line of each child a node runs, shared by `gradchain node start` and the localnet.

Imports nothing of abci_app.node's own, so abci_app.localnet may import it at its top.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from abci_app.localnet.config import COMETBFT, REPO_ROOT


def child_env() -> dict[str, str]:
    """The environment of a Python child: it imports abci_app from this checkout, whichever clone the venv was installed from."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}


def app_argv(app_home: Path, addr: str, metrics: str | None = None, ipfs_url: str | None = None, extra: list[str] = ()) -> list[str]:
    """`python -m abci_app` serving ABCI at `addr`, with its metrics endpoint and extra flags (snapshots, pruning)."""
    argv = [sys.executable, "-m", "abci_app", "--home", str(app_home), "--addr", addr, *extra]
    if metrics:
        argv += ["--metrics", metrics] + (["--metrics-ipfs", ipfs_url] if ipfs_url else [])
    return argv


def cometbft_argv(home: Path) -> list[str]:
    return [str(COMETBFT), "start", "--home", str(home)]


def worker_argv(kind: str, key: str, keyring_home: Path, cache_dir: Path, node_url: str, ipfs_url: str, extra: list[str] = ()) -> list[str]:
    """`gradchain validate|train` as a daemon signing with `key` from the keyring at `keyring_home`."""
    return [sys.executable, "-m", "abci_app.cli", kind, "--key", key, "--home", str(keyring_home), "--cache-dir", str(cache_dir),
            "--node", node_url, "--ipfs", ipfs_url, "--yes", *extra]


PIN_SYNC = "pin-sync"  # the subcommand; also the marker that tells the pin sync's process apart


def pins_argv(home: Path) -> list[str]:
    """`gradchain node pin-sync`: keeps the node's Kubo pinning every file the chain uses (abci_app.node.pins)."""
    return [sys.executable, "-m", "abci_app.cli", "node", PIN_SYNC, "--home", str(home)]
