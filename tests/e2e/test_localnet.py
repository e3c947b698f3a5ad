"""A 4-validator localnet of real CometBFT nodes and our app: load, agreement, node loss, app crash.

The tests share one module-scoped network and run in file order; each leaves
all 4 validators running for the next.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest

from abci_app import crypto
from abci_app.localnet import Network
from tests.e2e.helpers import FEE, Transfer, balance, header_app_hashes, latest_heights, send_transfers, wait_until

pytestmark = pytest.mark.e2e

DEV = [f"dev{i}" for i in range(4)]


def supply(net: Network, node: int = 0) -> int:
    with net.client(node) as client:
        return int(client.abci_query("/bank/supply").value.decode())


def assert_same_app_hash(net: Network, nodes: list[int] | None = None, timeout: float = 60.0) -> int:
    """Wait until `nodes` (default all) stand at one height, then check that they agree on the app hash."""
    nodes = list(range(len(net.nodes))) if nodes is None else nodes
    sweep: dict[int, tuple[int | None, str | None]] = {}

    def one_height() -> bool:
        nonlocal sweep
        # height and hash from the same /status answer: a block landing mid-sweep cannot mix them up
        sweep = {i: (s.height, s.app_hash) for i, s in ((i, net.node_status(i)) for i in nodes)}
        return len({h for h, _ in sweep.values()}) == 1 and None not in {h for h, _ in sweep.values()}

    wait_until(one_height, timeout, f"nodes {nodes} to reach one height")
    height = sweep[nodes[0]][0]
    assert len({a for _, a in sweep.values()}) == 1, f"app hash after height {height} differs: {sweep}"
    headers = header_app_hashes(net, height, nodes)  # state after height-1, as each node's block store has it
    assert len(set(headers.values())) == 1, f"header app_hash at height {height} differs: {headers}"
    return height  # type: ignore[return-value]


def test_100_transfers_commit_and_balances_add_up(network: Network) -> None:
    strangers = [crypto.PrivateKey.generate().address for _ in range(5)]
    devs = [network.account(name).address for name in DEV]
    transfers = []
    for k in range(100):
        recipient = strangers[k % 5] if k % 3 else devs[(k + 1) % 4]  # both fresh accounts and other senders
        transfers.append(Transfer(DEV[k % 4], recipient, 1_000 + k))
    with network.client(1) as client:
        before = {a: balance(client, a) for a in devs + strangers}
    supply_before = supply(network)

    results = send_transfers(network, transfers)

    assert len(results) == 100
    assert [(r.code, r.log) for r in results if r.code != 0] == []
    expected = Counter(before)
    for t in transfers:
        expected[network.account(t.sender).address] -= t.amount + FEE
        expected[t.recipient] += t.amount
    with network.client(2) as client:  # another node than the one that took the balances before
        after = {a: balance(client, a) for a in devs + strangers}
    assert after == dict(expected)
    assert supply(network) == supply_before, "a transfer must move tokens, not create or burn them (fees go to the collector)"
    assert len({r.height for r in results}) > 1, "100 txs at ≤8 in flight per sender should span several blocks"


def test_all_nodes_agree_on_app_hash(network: Network) -> None:
    height = assert_same_app_hash(network)
    # every earlier header too: a divergence that healed later would still be a bug
    for h in range(2, height + 1):
        hashes = header_app_hashes(network, h)
        assert len(set(hashes.values())) == 1, f"header app_hash at height {h} differs: {hashes}"


def test_chain_continues_with_one_node_down_and_it_catches_up(network: Network) -> None:
    network.stop_node(3)
    try:
        start = latest_heights(network, [0, 1, 2])[0]
        recipient = crypto.PrivateKey.generate().address
        # create_empty_blocks = false: only txs make blocks, so send some through the 3 live nodes
        results = send_transfers(network, [Transfer(DEV[k % 3], recipient, 10) for k in range(15)], nodes=[0, 1, 2])
        assert all(r.code == 0 for r in results)
        assert max(r.height for r in results) > start, "3 of 4 validators (> 2/3 power) must keep committing"
        with network.client(0) as client:
            assert balance(client, recipient) == 150
    finally:
        network.start_node(3)
    live_height = latest_heights(network, [0])[0]
    network.wait_for_blocks(live_height, nodes=[3], timeout=60)
    assert_same_app_hash(network)
    with network.client(3) as client:
        assert balance(client, recipient) == 150


def test_app_sigkill_during_load_then_handshake_recovers(network: Network) -> None:
    recipient = crypto.PrivateKey.generate().address
    transfers = [Transfer(DEV[k % 2], recipient, 7) for k in range(60)]
    outcome: dict[str, object] = {}
    stop = threading.Event()

    def load() -> None:
        try:
            outcome["results"] = send_transfers(network, transfers, nodes=[0, 1], stop=stop)  # nodes that stay up
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    start = latest_heights(network, [0])[0]
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        network.wait_for_blocks(start + 2, nodes=[0], timeout=60)  # mid-load: blocks with our txs are committing
        network.kill_app(2, signal.SIGKILL)
        # What CometBFT v0.39.4 does when its app dies: the consensus connection's
        # read fails with EOF, it logs "consensus connection terminated. Did the
        # application crash? Please restart CometBFT", sends itself SIGTERM and
        # shuts down cleanly ("captured terminated, exiting..."), within a few
        # milliseconds. It never reconnects: app and node must both be restarted.
        wait_until(lambda: network.pid(2, "cometbft") is None, 15, "node2's CometBFT to exit after its app died")
        log = network.nodes[2].log_path("cometbft").read_text(errors="replace")
        assert "Did the application crash?" in log
        # The other 3 validators keep the chain going meanwhile.
        before = latest_heights(network, [0])[0]
        network.wait_for_blocks(before + 1, nodes=[0, 1, 3], timeout=60)
        # Restart: the app reports its last committed height and hash in Info, and
        # CometBFT's handshake replays whatever block the app missed; then blocksync.
        network.start_node(2)
    finally:
        loader.join(timeout=180)
        stop.set()
    assert "error" not in outcome, f"load failed: {outcome.get('error')}"
    results = outcome["results"]
    assert len(results) == 60 and all(r.code == 0 for r in results)  # type: ignore[union-attr]

    network.wait_for_blocks(latest_heights(network, [0])[0], nodes=[2], timeout=60)
    assert_same_app_hash(network)
    with network.client(2) as client:
        assert balance(client, recipient) == 60 * 7
    log = network.nodes[2].log_path("cometbft").read_text(errors="replace")
    assert log.count("ABCI Handshake App Info") >= 2, "the restarted node must have handshaken with the restarted app"


def test_network_still_takes_transactions(network: Network) -> None:
    """After all of the above, every node still accepts txs and commits them."""
    recipient = crypto.PrivateKey.generate().address
    t0 = time.monotonic()
    results = send_transfers(network, [Transfer(DEV[k], recipient, 1) for k in range(4)])
    assert all(r.code == 0 for r in results), results
    assert time.monotonic() - t0 < 60
    assert_same_app_hash(network)
