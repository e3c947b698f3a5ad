"""What the trainer and validator daemons share: chain and IPFS clients, the
verified cache, the loaded base model and dataset (kept in memory: loading
torch and a model costs seconds, so workers are long-lived)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from abci_app import crypto
from abci_app.client import ChainClient
from abci_app.ipfs.client import IpfsClient
from abci_app.ipfs.download import fetch_verified
from abci_app.models import Cache

log = logging.getLogger("worker")


class Worker:
    def __init__(self, key: crypto.PrivateKey, node: str, ipfs: str, home: Path, threads: int = 2, fetch_timeout: float = 30.0):
        from abci_app.ml import determinism

        self.key = key
        self.address = key.address
        self.chain = ChainClient(node)
        self.ipfs = IpfsClient(ipfs)
        self.cache = Cache(home)  # files under HOME/cache
        self.fetch_timeout = fetch_timeout
        self.kernel_path = determinism.pin(threads)
        self._models: dict[int, Any] = {}  # version id -> (family, LoadedModel)
        self._datasets: dict[int, Any] = {}

    def close(self) -> None:
        self.chain.close()
        self.ipfs.close()

    def params(self) -> dict:
        return self.chain.query_json("/training/params")

    def current_round(self) -> dict | None:
        return self.chain.query_json("/training/current")

    def base_model(self, version: int, params: dict | None = None):
        """(family, model) of a registered version, pulled and verified once, and shaped for
        the chain's training `params` (smollm2-lora: adapters of the params' LoRA spec)."""
        if version not in self._models:
            from abci_app.ml.family import load_model

            pulled = self.cache.pull_version(self.chain, self.ipfs, version, timeout=self.fetch_timeout)
            self._models = {version: load_model(pulled.path, expect_config_hash=pulled.entry["config_hash"])}
        family, loaded = self._models[version]
        if params is not None:
            loaded = family.for_training(loaded, params)  # the same object unless the params' LoRA spec changed
            self._models[version] = (family, loaded)
        return family, loaded

    def dataset(self, dataset_id: int, family, model):
        """(registry entry, tokenized dataset) of a registered dataset."""
        if dataset_id not in self._datasets:
            pulled = self.cache.pull_dataset(self.chain, self.ipfs, dataset_id, timeout=self.fetch_timeout)
            self._datasets[dataset_id] = (pulled.entry, family.dataset(model, pulled.path))
        return self._datasets[dataset_id]

    def warm_up(self) -> None:
        """Pull and load the latest version and the training dataset while no round needs us: for
        SmolLM2 that is a 540 MB pull, ~12 s of loading and ~5 s of tokenizing, which would otherwise
        eat into the round's submission window."""
        latest = self.chain.query_json("/registry/latest")
        params = self.params()
        if latest is None or not params or not params.get("enabled"):
            return
        family, base = self.base_model(latest["id"], params)
        self.dataset(params["dataset_id"], family, base)

    def fetch(self, cid: str, sha256: str, suffix: str) -> Path:
        """A file referenced on chain, verified against its CID and sha256 (cached)."""
        path = self.cache.path_for(sha256, suffix)
        if not path.exists():
            fetch_verified(self.ipfs, cid, sha256, path, timeout=self.fetch_timeout)
        return path


def run_loop(
    step: Callable[[], bool], poll: float, once: bool, label: str,
    transient: tuple[type[BaseException], ...] = (), fatal: tuple[type[BaseException], ...] = (),
) -> None:
    """Call `step` until it reports done (with --once) or forever, sleeping `poll` between calls.

    A `transient` error (a node or IPFS that did not answer in time) is logged and
    retried at the next poll: a daemon must outlive a busy minute of its node.
    """
    while True:
        try:
            done = step()
        except fatal:
            raise  # e.g. a tx the chain refused: retrying would repeat the same mistake
        except transient as exc:
            log.warning("%s: %s (retrying in %.0fs)", label, exc, poll)
            done = False
        if once and done:
            return
        time.sleep(poll)
