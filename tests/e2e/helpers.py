"""Helpers for e2e tests against a running localnet: signed transfers, balances, app hashes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from abci_app import tx as txlib
from abci_app.keyring import Keyring
from abci_app.localnet import Network
from abci_app.rpc import RpcClient, RpcError, TxResult

FEE = 1
MAX_IN_FLIGHT = 8  # per sender: well inside the app's CheckTx nonce window (auth.NONCE_WINDOW = 16)


@dataclass(frozen=True)
class Transfer:
    sender: str  # key name in the network's keyring
    recipient: str  # address
    amount: int


def query_int(client: RpcClient, path: str, address: str) -> int:
    result = client.abci_query(path, address.encode())
    assert result.code == 0, f"query {path} {address} failed: {result.log}"
    return int(result.value.decode() or "0")


def balance(client: RpcClient, address: str) -> int:
    return query_int(client, "/bank/balance", address)


def nonce(client: RpcClient, address: str) -> int:
    return query_int(client, "/auth/nonce", address)


def send_transfers(
    net: Network,
    transfers: list[Transfer],
    nodes: list[int] | None = None,
    timeout: float = 180.0,
    stop: threading.Event | None = None,
) -> list[TxResult]:
    """Sign and broadcast `transfers` (broadcast_tx_sync), wait until all are committed; results in order.

    Each sender runs in its own thread and sends its txs, in nonce order, always
    to the same node of `nodes` (so gossip cannot reorder them), with at most
    MAX_IN_FLIGHT uncommitted. CheckTx rejections raise at once. `stop` ends
    sending early (the txs already sent are still awaited and returned).
    """
    nodes = list(range(len(net.nodes))) if nodes is None else nodes
    keyring = Keyring(net.keyring_home)
    by_sender: dict[str, list[int]] = defaultdict(list)
    for index, transfer in enumerate(transfers):
        by_sender[transfer.sender].append(index)
    results: dict[int, TxResult] = {}
    deadline = time.monotonic() + timeout

    def run(slot: int, sender: str) -> None:
        key = keyring.get(sender)
        with net.client(nodes[slot % len(nodes)]) as client:
            next_nonce = nonce(client, key.address)
            in_flight: list[tuple[int, str]] = []
            for index in by_sender[sender]:
                if stop is not None and stop.is_set():
                    break
                while len(in_flight) >= MAX_IN_FLIGHT:
                    _await_oldest(client, in_flight, results, deadline)
                t = transfers[index]
                raw = txlib.build(key, net.chain_id, next_nonce, FEE, txlib.MsgSend(recipient=t.recipient, amount=t.amount))
                sent = client.broadcast_tx_sync(raw)
                if sent.code != 0:
                    raise AssertionError(f"CheckTx rejected {sender} nonce {next_nonce}: code {sent.code} {sent.codespace} {sent.log}")
                in_flight.append((index, sent.hash))
                next_nonce += 1
            while in_flight:
                _await_oldest(client, in_flight, results, deadline)

    with ThreadPoolExecutor(max_workers=len(by_sender)) as pool:
        futures = [pool.submit(run, slot, sender) for slot, sender in enumerate(by_sender)]
        for future in futures:
            future.result()
    return [results[i] for i in sorted(results)]


def _await_oldest(client: RpcClient, in_flight: list[tuple[int, str]], results: dict[int, TxResult], deadline: float) -> None:
    index, tx_hash = in_flight.pop(0)
    results[index] = client.wait_for_tx(tx_hash, timeout=max(1.0, deadline - time.monotonic()), poll=0.1)


def poke(net: Network, node: int = 0) -> TxResult:
    """One transfer (faucet -> dev0), to make a block: with create_empty_blocks = false nothing else does."""
    return send_transfers(net, [Transfer("faucet", net.account("dev0").address, 1)], nodes=[node])[0]


def header_app_hashes(net: Network, height: int, nodes: list[int] | None = None) -> dict[int, str]:
    """app_hash of the header at `height` as each node stores it (the state after height-1)."""
    hashes = {}
    for i in range(len(net.nodes)) if nodes is None else nodes:
        with net.client(i) as client:
            hashes[i] = client.header(height)["app_hash"]
    return hashes


def latest_heights(net: Network, nodes: list[int] | None = None) -> dict[int, int]:
    heights = {}
    for i in range(len(net.nodes)) if nodes is None else nodes:
        with net.client(i) as client:
            heights[i] = client.latest_height()
    return heights


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except RpcError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


# --- CLI results ---------------------------------------------------------------


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def json_out(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
