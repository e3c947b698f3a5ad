"""Models on IPFS, end to end: real Kubo and CometBFT, the `gradchain` CLI as a subprocess.

One 4-validator network with a Kubo node per validator (private swarm), the
"test" genesis model and the KJV corpus registered in genesis and published
to every Kubo node. Checks: genesis content is on IPFS under the CIDs the
chain holds; `model pull` through a node other than node 0 verifies and
caches; a tampered, missing or mismatched checkpoint is refused with one
line and leaves nothing in the cache; `chat --prompt` answers
deterministically; `tx dataset add` publishes and registers.

Order matters in one place: the pull and chat tests that use the *latest*
version run before the tests that register (bad) versions; every later test
names its version explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from abci_app import localnet
from abci_app import tx as txlib
from abci_app.client import ChainClient
from abci_app.ipfs.cid import cid_of_bytes, cid_of_file
from abci_app.ipfs.client import IpfsClient
from abci_app.ipfs.download import file_sha256
from abci_app.localnet import Network
from abci_app.models import Cache
from tests.e2e.conftest import require_cometbft, require_kubo, serve
from tests.e2e import helpers
from tests.e2e.helpers import assert_one_error_line, json_out

pytestmark = pytest.mark.e2e

PULL_NODE = 2  # pulls go through this node's RPC and Kubo API, never node 0's
# Keep every validator unjailable while 2 shared cores are busy with torch subprocesses. Versions are
# registered by gov proposals: 10 blocks to vote (blocks come only with txs here, so the votes all land).
APP_STATE = {"staking": {"params": {"downtime_window": 1000, "downtime_max_missed": 1000}}} | helpers.short_gov(10)


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def assets() -> tuple[Path, Path]:
    """(genesis model, corpus): the cached "test" preset (seconds to build the first time)."""
    return localnet.genesis_assets("test", echo=lambda *_: None)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, assets: tuple[Path, Path]) -> Iterator[Network]:
    """4 validators + 4 Kubo nodes with the genesis model and corpus; always stopped afterwards.

    Named `network` so conftest's failure hook attaches the nodes' log tails.
    """
    require_cometbft()
    require_kubo()
    model_path, corpus_path = assets
    root = tmp_path_factory.mktemp("models-localnet")
    net = localnet.create(root, validators=4, chain_id="gradchain-models-e2e", app_state=APP_STATE,
                          ipfs=True, genesis_model=model_path, corpus=corpus_path)
    yield from serve(net, height=1)


# --- helpers -----------------------------------------------------------------------


def gradchain(net: Network, *args: str, node: int = PULL_NODE, home: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """The CLI against node `node` (its RPC and its Kubo API); `home` defaults to the network's keyring."""
    return helpers.gradchain(net, *args, node=node, home=home, timeout=timeout)


def cache_files(home: Path) -> list[str]:
    """Everything in a CLI home's cache dir, hidden partial files included."""
    folder = home / "cache"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def wait_all(net: Network, height: int) -> None:
    """Every node serves queries at its own latest height: wait until all have `height`."""
    for i in range(len(net.nodes)):
        with net.client(i) as client:
            client.wait_for_height(height, timeout=60)


def genesis_entry(net: Network) -> dict:
    with ChainClient(net.rpc_url(0)) as chain:
        return chain.query_json("/registry/version", "0")


def register_version(net: Network, folder: Path, *, cid: str, sha256: str, size: int, config_json: str, note: str) -> int:
    """Register a version through a gov proposal (the registry authority is the gov account); its id, once every node has it."""
    msg = txlib.MsgRegisterVersion(parent=0, cid=cid, sha256=sha256, bytes=size, family="tiny-gpt",
                                   config_json=config_json, dataset_ids=[0], licence="CC0-1.0", note=note)
    version = helpers.register_version_by_gov(net, msg, folder)
    with ChainClient(net.rpc_url(0)) as chain:
        wait_all(net, chain.rpc.latest_height())
    return version


def add_on_node0(net: Network, data: bytes) -> str:
    with IpfsClient(net.nodes[0].ipfs_url, timeout=30) as client:
        return client.add(data)


def file_sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flip_byte(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


# --- genesis content -------------------------------------------------------------------


def test_genesis_model_and_corpus_on_ipfs_and_registered(network: Network, assets: tuple[Path, Path]) -> None:
    model_path, corpus_path = assets
    with ChainClient(network.rpc_url(1)) as chain:
        latest = chain.query_json("/registry/latest")
        dataset = chain.query_json("/datasets/dataset", "0")

    assert latest["id"] == 0 and latest["parent"] is None
    assert latest["cid"] == cid_of_file(model_path)
    assert latest["sha256"] == file_sha256(model_path) and latest["bytes"] == model_path.stat().st_size
    assert latest["dataset_ids"] == [0]
    assert dataset["cid"] == cid_of_file(corpus_path)
    assert dataset["sha256"] == file_sha256(corpus_path) and dataset["bytes"] == corpus_path.stat().st_size

    for node in network.nodes:
        with IpfsClient(node.ipfs_url) as client:
            for cid, size in ((latest["cid"], latest["bytes"]), (dataset["cid"], dataset["bytes"])):
                assert client.stat(cid, timeout=5)["Size"] == size, f"node{node.index}"
                pins = client._json("pin/ls", params={"arg": cid, "type": "recursive"})["Keys"]
                assert cid in pins, f"node{node.index} does not pin {cid}"  # held by every replica, not just reachable

    listed = json_out(gradchain(network, "model", "list", "-o", "json", node=3))
    assert [v["cid"] for v in listed] == [latest["cid"]]
    shown = gradchain(network, "model", "show", "--version", "0", node=1)
    assert shown.returncode == 0 and f"cid: {latest['cid']}" in shown.stdout, shown.stderr


# --- pull (latest = genesis) ------------------------------------------------------------


def test_pull_through_another_node_verifies_and_caches(network: Network, tmp_path: Path) -> None:
    home = tmp_path / "fresh-home"
    entry = genesis_entry(network)
    flags = ("--home", str(home), "--node", network.rpc_url(PULL_NODE), "--ipfs", network.nodes[PULL_NODE].ipfs_url)

    first = json_out(gradchain(network, "model", "pull", *flags, "-o", "json"))

    path = Path(first["path"])
    assert first["version"] == 0 and first["cached"] is False and first["cid"] == entry["cid"]
    assert path == home / "cache" / f"{entry['sha256']}.safetensors"
    assert file_sha256(path) == entry["sha256"]
    assert cache_files(home) == [path.name]  # no partial file beside it

    started = time.monotonic()
    second = gradchain(network, "model", "pull", *flags)
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert "version 0 already cached" in second.stdout and str(path) in second.stdout
    assert elapsed < 15, f"a cached pull took {elapsed:.1f}s"  # loose: 2 shared cores; the next check is the real one
    # A cached, verified file needs no IPFS at all: it works with Kubo unreachable.
    dead_ipfs = f"http://127.0.0.1:{localnet.free_ports(1)[0]}"
    offline = json_out(gradchain(network, "model", "pull", "--home", str(home), "--ipfs", dead_ipfs, "-o", "json"))
    assert offline["cached"] is True and offline["path"] == str(path)


def test_corrupt_cached_file_is_fetched_again(network: Network, tmp_path: Path) -> None:
    home = tmp_path / "home"
    pulled = json_out(gradchain(network, "model", "pull", "--home", str(home), "-o", "json"))
    path = Path(pulled["path"])
    data = path.read_bytes()
    path.write_bytes(flip_byte(data, len(data) // 2))  # bit rot on disk, same size

    again = json_out(gradchain(network, "model", "pull", "--home", str(home), "-o", "json"))

    assert again["cached"] is False and again["path"] == str(path)
    assert path.read_bytes() == data and cache_files(home) == [path.name]


# --- chat (latest = genesis) --------------------------------------------------------------


def test_chat_answers_from_registered_model_deterministically(network: Network, tmp_path: Path) -> None:
    home = tmp_path / "chat-home"
    args = ("chat", "--prompt", "In the beginning", "--max-tokens", "20", "--seed", "1", "--home", str(home))

    first = gradchain(network, *args, node=1)
    second = gradchain(network, *args, node=3)
    as_json = json_out(gradchain(network, *args, "-o", "json", node=1))

    assert first.returncode == 0, first.stderr
    assert first.stdout.strip(), "empty answer"
    assert second.returncode == 0 and second.stdout == first.stdout, (first.stdout, second.stdout)
    assert as_json["version"] == 0 and as_json["cid"] == genesis_entry(network)["cid"]
    assert as_json["prompt"] == "In the beginning" and as_json["completion"] + "\n" == first.stdout
    assert 0 < len(as_json["completion"].encode()) <= 20 * 4  # at most 20 byte-level tokens, whole characters


# --- versions that must be refused -------------------------------------------------------


def test_pull_new_version_added_on_node0_only(network: Network, tmp_path: Path) -> None:
    """A valid version whose file only node 0 has is fetched through node 2 and verified."""
    from abci_app.ml import checkpoint
    from abci_app.ml.family import TinyGPT, load_model

    genesis = genesis_entry(network)
    fam = TinyGPT()
    fresh = fam.build(fam.config_from_dict(json.loads(genesis["config_json"])), seed=7)
    ckpt = tmp_path / "v-new.safetensors"
    sha = fam.save(fresh, ckpt, parent="0", extra={"note": "e2e fresh weights"})
    cid = add_on_node0(network, ckpt.read_bytes())
    assert cid == cid_of_file(ckpt)
    meta = checkpoint.read_meta(ckpt)
    version = register_version(network, tmp_path, cid=cid, sha256=sha, size=ckpt.stat().st_size,
                               config_json=checkpoint.canonical_json(meta.config), note="e2e: node 0 only")

    home = tmp_path / "home"
    pulled = json_out(gradchain(network, "model", "pull", "--version", str(version), "--home", str(home), "--timeout", "20", "-o", "json"))

    assert pulled["version"] == version and pulled["cached"] is False
    assert file_sha256(Path(pulled["path"])) == sha
    _, loaded = load_model(Path(pulled["path"]), expect_config_hash=genesis["config_hash"])
    assert loaded.sha256 == sha


def test_sha256_mismatch_is_refused_and_leaves_nothing(network: Network, assets: tuple[Path, Path], tmp_path: Path) -> None:
    """The chain's sha256 is of one file, the bytes under its CID are another (tampered) one."""
    original = assets[0].read_bytes()
    honest, tampered = flip_byte(original, len(original) - 1), flip_byte(original, len(original) - 2)
    cid = add_on_node0(network, tampered)
    version = register_version(network, tmp_path, cid=cid, sha256=file_sha256_of(honest), size=len(tampered),
                               config_json=genesis_entry(network)["config_json"], note="e2e: tampered bytes")

    home = tmp_path / "home"
    result = gradchain(network, "model", "pull", "--version", str(version), "--home", str(home), "--timeout", "20")

    assert_one_error_line(result, "sha256 mismatch", cid)
    assert cache_files(home) == []


def test_cid_nobody_has_fails_after_bounded_wait(network: Network, tmp_path: Path) -> None:
    data = os.urandom(300_000)  # never added anywhere
    cid = cid_of_bytes(data)
    version = register_version(network, tmp_path, cid=cid, sha256=file_sha256_of(data), size=len(data),
                               config_json=genesis_entry(network)["config_json"], note="e2e: nobody has it")

    home = tmp_path / "home"
    started = time.monotonic()
    result = gradchain(network, "model", "pull", "--version", str(version), "--home", str(home), "--timeout", "3")
    elapsed = time.monotonic() - started

    assert_one_error_line(result, f"CID {cid} not found within 3s")
    assert elapsed < 30, f"took {elapsed:.1f}s"  # 3 s of search plus process start-up, on shared cores
    assert cache_files(home) == []


def test_checkpoint_of_another_config_is_refused(network: Network, tmp_path: Path) -> None:
    """A valid checkpoint whose own config is not the one its registry entry claims."""
    from abci_app.ml.family import TinyGPT
    from abci_app.ml.model import GPTConfig

    genesis = genesis_entry(network)
    registered = json.loads(genesis["config_json"])
    other = GPTConfig(**{**registered, "n_layer": registered["n_layer"] + 1})
    fam = TinyGPT()
    ckpt = tmp_path / "other-config.safetensors"
    sha = fam.save(fam.build(other, seed=3), ckpt, parent="0")
    cid = add_on_node0(network, ckpt.read_bytes())
    version = register_version(network, tmp_path, cid=cid, sha256=sha, size=ckpt.stat().st_size,
                               config_json=genesis["config_json"], note="e2e: wrong config")

    home = tmp_path / "home"
    result = gradchain(network, "model", "pull", "--version", str(version), "--home", str(home), "--timeout", "20")

    assert_one_error_line(result, "config mismatch", f"version {version}")
    assert cache_files(home) == []


# --- datasets ------------------------------------------------------------------------------


def test_dataset_add_list_show(network: Network, tmp_path: Path) -> None:
    corpus = tmp_path / "psalm.txt"
    corpus.write_text("The heavens declare the glory of God.\n" * 100 + os.urandom(8).hex() + "\n")

    added = json_out(gradchain(network, "tx", "dataset", "add", str(corpus), "--from", "dev0", "--name", "x",
                               "--licence", "CC0-1.0", "-y", "-o", "json", node=0))

    assert added["cid"] == cid_of_file(corpus) and added["sha256"] == file_sha256(corpus)
    assert added["bytes"] == corpus.stat().st_size
    wait_all(network, added["height"])
    listed = json_out(gradchain(network, "dataset", "list", "-o", "json", node=1))
    mine = [d for d in listed if d["sha256"] == added["sha256"]]
    assert len(mine) == 1 and mine[0]["name"] == "x" and mine[0]["licence"] == "CC0-1.0" and mine[0]["cid"] == added["cid"]
    text = gradchain(network, "dataset", "list", node=3)
    assert text.returncode == 0 and any(" x " in line and added["cid"] in line for line in text.stdout.splitlines()), text.stdout
    shown = json_out(gradchain(network, "dataset", "show", str(mine[0]["id"]), "-o", "json", node=3))
    assert shown == mine[0]
    assert_one_error_line(gradchain(network, "dataset", "show", "999"), "dataset 999 does not exist")

    # The file was added on node 0 only; a verified pull through node 2 fetches it over the swarm.
    with ChainClient(network.rpc_url(PULL_NODE)) as chain, IpfsClient(network.nodes[PULL_NODE].ipfs_url) as ipfs:
        pulled = Cache(tmp_path / "home").pull_dataset(chain, ipfs, mine[0]["id"], timeout=20)
    assert pulled.path.read_bytes() == corpus.read_bytes()


# --- other bad input -------------------------------------------------------------------------


def test_kubo_not_running_is_one_line(network: Network, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{localnet.free_ports(1)[0]}"
    home = tmp_path / "home"

    pulled = gradchain(network, "model", "pull", "--version", "0", "--home", str(home), "--ipfs", dead)
    assert_one_error_line(pulled, "not running", dead)
    assert cache_files(home) == []

    corpus = tmp_path / "c.txt"
    corpus.write_text("x\n")
    for command in (["tx", "dataset", "add"], ["dataset", "add"]):  # the new name, and the old one kept as an alias
        added = gradchain(network, *command, str(corpus), "--from", "dev0", "--name", "y", "--licence", "CC0-1.0", "-y", "--ipfs", dead)
        assert_one_error_line(added, "not running")


def test_missing_version_is_one_line(network: Network, tmp_path: Path) -> None:
    assert_one_error_line(gradchain(network, "model", "show", "--version", "99"), "model version 99 does not exist")
    result = gradchain(network, "model", "pull", "--version", "99", "--home", str(tmp_path / "home"))
    assert_one_error_line(result, "model version 99 does not exist")
    assert cache_files(tmp_path / "home") == []
