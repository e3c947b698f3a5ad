"""`gradchain model pull` throughput against `ipfs cat` of the same CID on an equally cold Kubo node.

A fresh 2-validator localnet with a Kubo node per validator (abci_app.localnet,
loopback, private swarm) in a temp dir, with the genesis model and the KJV
corpus in genesis. Two files, each a registered model version that only
validator node 0's Kubo holds:

  - the genesis checkpoint (version 0; the localnet publishes it to every
    node, so node 1 unpins it and garbage-collects first);
  - a ~100 MB checkpoint: a freshly initialised tiny-gpt of a bigger config
    (float32 weights, incompressible), added on node 0 and registered as the
    next version by a gov proposal that both validators vote through
    (MsgRegisterVersion with its real CID, sha256, size and config; the
    registry authority is the gov module account), so `model pull` runs its
    full path.

Cold and fair: every single measurement gets its own brand-new Kubo node (same
private swarm key and config as the localnet's, loopback, peered with node 0
only), started before the clock starts and thrown away after. So each method
moves the same bytes over the same bitswap path from the same single provider
into an empty blockstore, and writes them to a file in the same temp dir.
(Why not one node with `repo gc` between runs: Kubo v0.43 stalls -- no byte
for a minute, halfway through -- on roughly one re-fetch in three of blocks it
has just garbage-collected, with curl as with our client, even after a pause;
a first fetch of the same size never stalled in 12 of 12 tries. See
docs/benchmarks.md.) Methods, in rotating order per repeat:

  ipfs cat        `ipfs cat CID > FILE`, Kubo's own CLI against the fresh
                  node's daemon (no verification, no fsync)
  model pull      `gradchain model pull --version N` as a subprocess with a fresh
                  --home, through validator node 1's RPC and the fresh node's
                  Kubo API: chain query, stream, CID + sha256 check, fsync,
                  atomic rename, config check
  fetch_verified  abci_app.ipfs.download.fetch_verified in this process (the
                  pull's download-and-verify step alone, no process start-up)

MB/s = file bytes / wall seconds (1 MB = 1e6 bytes), median over --repeat
runs. Prints every run, the medians and the ratios to `ipfs cat`, and two
fixed costs that explain them. Asserts nothing about timing.

    .venv/bin/python bench/pull.py [--preset genesis|test] [--size-mb 100] [--repeat 3]
    .venv/bin/python bench/pull.py --genesis-model FILE   # any tiny-gpt checkpoint as version 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from abci_app import localnet  # noqa: E402
from abci_app import tx as txlib  # noqa: E402
from abci_app.client import ChainClient  # noqa: E402
from abci_app.ipfs import node as kubo  # noqa: E402
from abci_app.ipfs.client import IpfsClient, IpfsError  # noqa: E402
from abci_app.ipfs.download import fetch_verified  # noqa: E402
from tests.e2e.helpers import register_version_by_gov, short_gov  # noqa: E402

GRADCHAIN = shutil.which("gradchain", path=str(Path(sys.executable).parent)) or "gradchain"
SOURCE, CHAIN_NODE = 0, 1  # node 0's Kubo holds the files; pulls query the chain through node 1
METHODS = ("ipfs cat", "model pull", "fetch_verified")
# Keep both validators unjailable while the bench loads the 2 cores; gov windows of a few blocks, so
# registering the big checkpoint by proposal takes seconds (blocks come only with txs here).
APP_STATE = {"staking": {"params": {"downtime_window": 1000, "downtime_max_missed": 1000}}} | short_gov(10)


@dataclass(frozen=True)
class Target:
    label: str
    version: int
    cid: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Fetcher:
    """A throw-away Kubo node in the localnet's private swarm."""

    repo: Path
    url: str


def big_checkpoint(path: Path, size_mb: float) -> None:
    """A valid tiny-gpt checkpoint of about `size_mb` MB: random-initialised float32 weights."""
    from abci_app.ml.family import TinyGPT
    from abci_app.ml.model import GPTConfig

    n_embd, block = 512, 128
    per_layer = 12 * n_embd * n_embd * 4  # attention (4 n^2) + MLP (8 n^2), float32
    n_layer = max(1, round((size_mb * 1e6 - (257 + block) * n_embd * 4) / per_layer))
    fam = TinyGPT()
    config = GPTConfig(vocab_size=257, block_size=block, n_layer=n_layer, n_head=8, n_embd=n_embd)
    fam.save(fam.build(config, seed=1), path, parent="0", extra={"note": "bench/pull.py ~100 MB checkpoint"})


def register(net: localnet.Network, path: Path, cid: str, folder: Path) -> int:
    """Register `path` (already on node 0's IPFS as `cid`) as the next version through a gov proposal the validators pass; its id."""
    from abci_app.ml import checkpoint

    meta = checkpoint.read_meta(path)
    msg = txlib.MsgRegisterVersion(
        parent=0, cid=cid, sha256=checkpoint.file_sha256(path), bytes=path.stat().st_size, family=meta.family,
        config_json=checkpoint.canonical_json(meta.config), dataset_ids=[0], licence="CC0-1.0", note="bench/pull.py",
    )
    version = register_version_by_gov(net, msg, folder)
    with net.client(SOURCE) as source, net.client(CHAIN_NODE) as client:
        client.wait_for_height(source.latest_height(), timeout=60)
    return version


def only_on_source(net: localnet.Network, cids: list[str]) -> None:
    """Unpin the genesis files on every node but node 0 and garbage-collect there: one provider."""
    for node in net.nodes:
        if node.index == SOURCE:
            continue
        with IpfsClient(node.ipfs_url, timeout=120) as client:
            for cid in cids:
                try:
                    client._post("pin/rm", {"arg": cid})
                except IpfsError:
                    pass  # not pinned there
            client._post("repo/gc", {"quiet": "true"})


@contextmanager
def fetcher(net: localnet.Network, folder: Path) -> Iterator[Fetcher]:
    """A new Kubo node peered with node 0 only; stopped and deleted on exit."""
    source = net.nodes[SOURCE]
    swarm_key = (source.ipfs_repo / "swarm.key").read_bytes()
    api, gateway, swarm = localnet.free_ports(3)
    repo = folder / "kubo"
    kubo.init_node(repo, api, gateway, swarm, swarm_key)
    source_addr = kubo.swarm_multiaddr(source.ipfs_swarm_port)
    kubo.set_peering(repo, [(source.ipfs_peer_id, source_addr)])
    proc = kubo.start_node(repo, folder / "kubo.log")
    try:
        url = kubo.api_url(repo)
        with IpfsClient(url) as client:
            client.swarm_connect(f"{source_addr}/p2p/{source.ipfs_peer_id}")
            deadline = time.monotonic() + 30
            while source.ipfs_peer_id not in {p["Peer"] for p in client.swarm_peers()}:
                if time.monotonic() > deadline:
                    raise SystemExit(f"fresh Kubo node at {url} did not connect to node {SOURCE}")
                time.sleep(0.1)
        yield Fetcher(repo, url)
    finally:
        kubo.stop_node(proc)


def time_ipfs_cat(f: Fetcher, target: Target, out: Path) -> float:
    started = time.perf_counter()
    with open(out, "wb") as sink:
        done = subprocess.run([str(kubo.require_ipfs()), "cat", target.cid], stdout=sink, stderr=subprocess.PIPE,
                              env=kubo._ipfs_env(f.repo), timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or out.stat().st_size != target.size:
        raise SystemExit(f"ipfs cat {target.cid} failed: {done.stderr.decode().strip()}")
    return elapsed


def time_model_pull(net: localnet.Network, ipfs_url: str, target: Target, home: Path, *, cached: bool = False) -> float:
    argv = [GRADCHAIN, "model", "pull", "--version", str(target.version), "--home", str(home), "--node", net.rpc_url(CHAIN_NODE),
            "--ipfs", ipfs_url, "--timeout", "60", "-o", "json"]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"model pull failed: {done.stderr.strip()}")
    result = json.loads(done.stdout)
    if result["cached"] is not cached or result["sha256"] != target.sha256:
        raise SystemExit(f"model pull of version {target.version}: expected cached={cached}, got {result}")
    return elapsed


def time_fetch_verified(f: Fetcher, target: Target, out: Path) -> float:
    with IpfsClient(f.url) as client:
        started = time.perf_counter()
        fetch_verified(client, target.cid, target.sha256, out, timeout=60)
        return time.perf_counter() - started


def torch_import() -> float:
    """Seconds a fresh process needs to import the model code (torch): what a downloading pull's config check pays."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import abci_app.ml.family"], check=True, timeout=300,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    return time.perf_counter() - started


def measure(net: localnet.Network, target: Target, work: Path, repeat: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(repeat):
        order = METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]  # rotate: no method always goes first
        for method in order:
            run_dir = work / f"v{target.version}-{r}-{method.replace(' ', '_')}"
            run_dir.mkdir()
            with fetcher(net, run_dir) as f:
                if method == "ipfs cat":
                    s = time_ipfs_cat(f, target, run_dir / "out")
                elif method == "model pull":
                    s = time_model_pull(net, f.url, target, run_dir / "home")
                else:
                    s = time_fetch_verified(f, target, run_dir / "out")
            seconds[method].append(s)
            print(f"  {target.label:<22} run {r + 1}/{repeat}  {method:<15} {s:7.2f} s  {target.size / 1e6 / s:7.1f} MB/s", flush=True)
            shutil.rmtree(run_dir)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["genesis", "test"], default="genesis", help="genesis model preset (trained once, cached)")
    parser.add_argument("--genesis-model", type=Path, default=None,
                        help="use this checkpoint as version 0 instead of the preset's (e.g. when the genesis preset is not trained yet)")
    parser.add_argument("--size-mb", type=float, default=100.0, help="size of the big checkpoint in MB")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs per method and file (median reported)")
    args = parser.parse_args()

    if args.genesis_model is not None:
        _, corpus_path = localnet.genesis_assets("test")  # the corpus only; the test model trains in seconds
        model_path, label = args.genesis_model.resolve(), "genesis (given file)"
    else:
        model_path, corpus_path = localnet.genesis_assets(args.preset)
        label = f"genesis ({args.preset})"
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp:
        root = Path(tmp)
        net = localnet.create(root / "net", validators=2, chain_id="bench-pull", app_state=APP_STATE,
                              ipfs=True, genesis_model=model_path, corpus=corpus_path)
        try:
            net.start()
            net.wait_for_blocks(1, timeout=60)
            with ChainClient(net.rpc_url(SOURCE)) as chain:
                v0 = chain.query_json("/registry/version", "0")
                d0 = chain.query_json("/datasets/dataset", "0")
            only_on_source(net, [v0["cid"], d0["cid"]])
            targets = [Target(label, 0, v0["cid"], v0["sha256"], v0["bytes"])]

            big = root / "big.safetensors"
            big_checkpoint(big, args.size_mb)
            with IpfsClient(net.nodes[SOURCE].ipfs_url, timeout=60) as client:
                cid = client.add(big)
            from abci_app.ml import checkpoint

            targets.append(Target(f"{big.stat().st_size / 1e6:.0f} MB checkpoint", register(net, big, cid, root), cid,
                                  checkpoint.file_sha256(big), big.stat().st_size))
            big.unlink()

            print(f"2 validators on loopback; node {SOURCE}'s Kubo is the only provider; every run fetches through a new, "
                  f"empty Kubo node peered with it; {args.repeat} run(s) per method", flush=True)
            work = root / "work"
            work.mkdir()
            results = {t: measure(net, t, work, args.repeat) for t in targets}
            warm = work / "warm"
            time_model_pull(net, net.nodes[SOURCE].ipfs_url, targets[0], warm)
            overhead = statistics.median(time_model_pull(net, net.nodes[SOURCE].ipfs_url, targets[0], warm, cached=True) for _ in range(3))
            importing = statistics.median(torch_import() for _ in range(3))
        except IpfsError as exc:
            raise SystemExit(f"IPFS: {exc}") from None
        finally:
            net.stop()

    print()
    print(f"{'file':<22} {'MB':>7} {'ipfs cat MB/s':>14} {'model pull MB/s':>16} {'fetch_verified MB/s':>20} {'pull/cat':>9} {'fetch_verified/cat':>19}")
    for t, seconds in results.items():
        rate = {m: t.size / 1e6 / statistics.median(s) for m, s in seconds.items()}
        print(f"{t.label:<22} {t.size / 1e6:7.1f} {rate['ipfs cat']:14.1f} {rate['model pull']:16.1f} {rate['fetch_verified']:20.1f} "
              f"{rate['model pull'] / rate['ipfs cat']:8.2f}x {rate['fetch_verified'] / rate['ipfs cat']:18.2f}x")
    print(f"fixed cost of a `model pull` process that finds the genesis file cached (median of 3): {overhead:.2f} s")
    print(f"importing abci_app.ml.family (torch) in a fresh process, as a downloading pull's config check does (median of 3): {importing:.2f} s")
    print(f"1-minute load average: {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
