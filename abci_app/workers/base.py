"""What the trainer and validator daemons share: chain and IPFS clients, the
verified cache, the loaded base model and dataset (kept in memory: loading
torch and a model costs seconds, so workers are long-lived)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from abci_app import crypto
from abci_app.client import ChainClient
from abci_app.ipfs.client import IpfsClient, IpfsError
from abci_app.ipfs.download import fetch_verified
from abci_app.models import Cache, dataset_entry

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
        self._entries: dict[int, dict] = {}  # dataset id -> its chain entry, for datasets not loaded

    def close(self) -> None:
        self.chain.close()
        self.ipfs.close()

    def params(self) -> dict:
        """The training params the next round opens with."""
        return self.chain.query_json("/training/params")

    def round_params(self, rnd: dict) -> dict:
        """The params `rnd` runs under: those it opened with, whatever gov changed since."""
        return rnd.get("params") or self.params()

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

    def dataset(self, dataset_id: int, family, model, timeout: float | None = None):
        """(registry entry, tokenized dataset) of a registered dataset. Pinned on our IPFS node when first loaded:
        an auditor that cannot fetch what a submission's draw needs claims it unavailable, so every node that
        holds an admitted dataset keeps serving it."""
        if dataset_id not in self._datasets:
            pulled = self.cache.pull_dataset(self.chain, self.ipfs, dataset_id, timeout=self.fetch_timeout if timeout is None else timeout)
            self._datasets[dataset_id] = (pulled.entry, family.dataset(model, pulled.path))
            self.pin(pulled.entry["cid"], f"dataset {dataset_id}")
        return self._datasets[dataset_id]

    def dataset_sha256(self, dataset_id: int) -> str:
        """A registered dataset's sha256, from the chain: no file is fetched."""
        if dataset_id not in self._datasets and dataset_id not in self._entries:
            self._entries[dataset_id] = dataset_entry(self.chain, dataset_id)
        return (self._datasets[dataset_id][0] if dataset_id in self._datasets else self._entries[dataset_id])["sha256"]

    def round_data(self, rnd: dict, family, model, needed: Iterable[int] | None = None) -> tuple[dict, Any, dict[int, str]]:
        """(entry of the round's dataset, its data with the train split of each dataset in `needed` (default: the
        round's whole mix), {dataset id: sha256} of the mix): what `recompute.round_work` and the batches need.
        Only `needed` is fetched: a dataset nobody serves stalls only the work that draws from it (an auditor
        loads the rest as its samples need them: `spotcheck.Auditor.load_source`)."""
        from abci_app.workers.recompute import Mix

        entry, data = self.dataset(rnd["dataset_id"], family, model)
        mix = [dataset_id for dataset_id, _ in rnd.get("mix") or []]
        sha256_of = {dataset_id: self.dataset_sha256(dataset_id) for dataset_id in mix}
        if not mix:
            return entry, data, sha256_of
        sources: dict[str, Any] = {}
        for dataset_id in sorted(set(mix if needed is None else needed)):
            sources[sha256_of[dataset_id]] = self.dataset(dataset_id, family, model)[1].train
        return entry, Mix(data.train, data.heldout, data.sha256, sources), sha256_of

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

    def pin(self, cid: str, what: str, report: Callable[[str], None] = log.info) -> bool:
        """Pin `cid` on our IPFS node (its blocks are local once fetched). A failure is reported, not raised:
        the pin is for later readers of the lineage, and the vote it sits beside must not wait on it."""
        try:
            self.ipfs.pin_add(cid, timeout=self.fetch_timeout)
        except IpfsError as exc:
            report(f"{what}: could not pin {cid} ({exc})")
            return False
        return True

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
