"""A private Kubo swarm on loopback (real `bin/ipfs`): content moves between nodes, and only inside the swarm."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from abci_app.ipfs import node
from abci_app.ipfs.cid import CidVerifier, cid_of_bytes
from abci_app.ipfs.client import IpfsClient, IpfsError
from tests.e2e.conftest import running_swarm

pytestmark = pytest.mark.e2e

NODES = 3
WAIT = 3.0  # seconds we allow a lookup of a CID nobody has


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[node.Swarm]:
    with running_swarm(tmp_path_factory.mktemp("ipfs"), NODES) as started:
        yield started


def test_all_peered_privately(swarm: node.Swarm) -> None:
    for n in swarm.nodes:
        with swarm.client(n.index) as client:
            assert client.version() == "0.43.0"
            peers = {p["Peer"] for p in client.swarm_peers()}
            assert peers == {o.peer_id for o in swarm.nodes if o is not n}  # the swarm and nothing else
            assert all("/ip4/127.0.0.1/" in addr for addr in client.id()["Addresses"])


def test_add_on_one_node_cat_from_another(swarm: node.Swarm, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 12345)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    with swarm.client(0) as c0, swarm.client(1) as c1, swarm.client(2) as c2:
        cid = c0.add(path)
        assert cid == cid_of_bytes(data)  # Kubo imported with exactly the options our CID code assumes
        assert c0.add(data, only_hash=True) == cid
        assert c1.stat(cid)["Size"] == len(data)
        verifier = CidVerifier()
        for chunk in c1.cat_stream(cid, chunk_size=256 * 1024):
            verifier.update(chunk)
        verifier.verify(cid)
        c2.pin_add(cid, timeout=30)
        assert c2.cat(cid) == data


def test_small_and_empty_content(swarm: node.Swarm) -> None:
    """The empty file needs the client's shortcut: Kubo's bitswap never sends a zero-length block to a peer."""
    with swarm.client(0) as c0, swarm.client(1) as c1:
        for data in (b"", b"x", b"In the beginning"):
            cid = c0.add(data)
            assert cid == cid_of_bytes(data)
            assert c1.cat(cid, timeout=WAIT) == data
            assert c1.stat(cid, timeout=WAIT)["Size"] == len(data)
            c1.pin_add(cid, timeout=WAIT)


def test_missing_cid_fails_within_the_wait(swarm: node.Swarm) -> None:
    cid = cid_of_bytes(os.urandom(64))  # valid, but nobody has it
    with swarm.client(1) as client:
        start = time.monotonic()
        with pytest.raises(IpfsError, match=f"CID {cid} not found within 3s"):
            client.cat(cid, timeout=WAIT)
        assert time.monotonic() - start < WAIT + 3


def test_invalid_cid(swarm: node.Swarm) -> None:
    with swarm.client(0) as client, pytest.raises(IpfsError, match="invalid CID 'notacid'"):
        client.cat("notacid")


def test_client_against_dead_port() -> None:
    (port,) = node.free_ports(1)
    with IpfsClient(f"http://127.0.0.1:{port}", timeout=2) as client, pytest.raises(IpfsError, match="not running at") as e:
        client.version()
    assert "\n" not in str(e.value)


def test_node_without_swarm_key_refuses_to_start(tmp_path: Path) -> None:
    repo = tmp_path / "nokey"
    node.init_node(repo, *node.free_ports(3), swarm_key=node.generate_swarm_key())
    (repo / "swarm.key").unlink()
    with pytest.raises(IpfsError, match="private network was not configured but is enforced"):
        daemon = node.start_node(repo, tmp_path / "daemon.log", timeout=15)
        node.stop_node(daemon)  # only reached if Kubo started after all


def test_node_with_another_key_cannot_join(swarm: node.Swarm, tmp_path: Path) -> None:
    repo = tmp_path / "outsider"
    api, gateway, swarm_port = node.free_ports(3)
    node.init_node(repo, api, gateway, swarm_port, node.generate_swarm_key())
    daemon = node.start_node(repo, tmp_path / "daemon.log")
    try:
        target = swarm.nodes[0]
        with IpfsClient(f"http://127.0.0.1:{api}", timeout=15) as outsider, pytest.raises(IpfsError, match="swarm/connect failed"):
            outsider.swarm_connect(f"{target.swarm_addr}/p2p/{target.peer_id}")
    finally:
        node.stop_node(daemon)
