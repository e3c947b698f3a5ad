"""abci_app.client: ChainClient's send and queries, and the pipelined sender, against the real Application.

The node is test_cli_staking's AppNode (CometBFT's RPC over loopback HTTP in
front of the in-process app), here with a mempool: CheckTx admits a tx, and
the block that holds every admitted tx is made when a client first asks for
one of them (/tx). Block-level failures come from test_cli's FakeNode, whose
CheckTx admits what its block then refuses.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from abci_app import tx as txlib
from abci_app.client import FALLBACK_MIN_FEE, ChainClient, ChainError, TxRejected
from tests.unit.conftest import fixed_key
from tests.unit.test_cli import FakeNode, free_port
from tests.unit.test_cli_staking import MIN_FEE, AppNode, on_app_thread, tx_hash_of

FUNDS = 10_000
ALICE, BOB = fixed_key(1), fixed_key(2)


class MempoolNode(AppNode):
    """AppNode with a mempool: broadcast only runs CheckTx; asking /tx for a waiting tx commits them all in one block."""

    def __init__(self, app_home: Path, balances: dict[str, int]):
        self.mempool: list[bytes] = []
        self.most_waiting = 0  # the largest the mempool grew
        self.nonce_queries = 0
        super().__init__(app_home, balances, {})

    def rpc_abci_query(self, params: dict) -> dict:
        self.nonce_queries += json.loads(params["path"]) == "/auth/nonce"
        return super().rpc_abci_query(params)

    @on_app_thread
    def rpc_broadcast_tx_sync(self, params: dict) -> dict:
        raw = bytes.fromhex(params["tx"][2:])
        checked = self.chain.check(raw)
        if checked.code == 0:
            self.mempool.append(raw)
            self.most_waiting = max(self.most_waiting, len(self.mempool))
        return {"result": {"code": checked.code, "codespace": checked.codespace, "log": checked.log, "hash": tx_hash_of(raw), "data": ""}}

    @on_app_thread
    def rpc_tx(self, params: dict) -> dict:
        tx_hash = params["hash"][2:].upper()
        if any(tx_hash_of(raw) == tx_hash for raw in self.mempool):
            waiting, self.mempool = self.mempool, []
            self._commit_block(waiting)
        if tx_hash not in self.committed:
            return {"error": {"code": -32603, "message": "Internal error", "data": f"tx ({tx_hash}) not found"}}
        return {"result": self.committed[tx_hash]}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[MempoolNode]:
    app_node = MempoolNode(tmp_path / "app", {ALICE.address: FUNDS, BOB.address: FUNDS})
    yield app_node
    app_node.close()


@pytest.fixture
def chain(node: MempoolNode) -> Iterator[ChainClient]:
    with ChainClient(node.url) as client:
        yield client


def balance(chain: ChainClient, key) -> int:
    return chain.query_int("/bank/balance", key.address)


def transfer(amount: int) -> txlib.MsgSend:
    return txlib.MsgSend(recipient=BOB.address, amount=amount)


# --- ChainClient.send -------------------------------------------------------------


def test_send_signs_with_the_next_nonce_and_the_fee_the_chain_needs(chain: ChainClient, node: MempoolNode) -> None:
    result = chain.send(ALICE, transfer(100))
    assert result.code == 0 and result.height is not None and result.hash == result.hash.upper()
    assert balance(chain, ALICE) == FUNDS - 100 - MIN_FEE and chain.nonce(ALICE.address) == 1

    given = chain.send(ALICE, transfer(1), fee=7, nonce=1, memo="hi")
    assert given.height > result.height and balance(chain, ALICE) == FUNDS - 100 - MIN_FEE - 1 - 7
    body = txlib.decode(base64.b64decode(node.committed[given.hash]["tx"])).body
    assert (body.nonce, body.fee, body.memo, body.chain_id) == (1, 7, "hi", chain.chain_id)


def test_send_without_waiting_returns_at_the_mempool(chain: ChainClient, node: MempoolNode) -> None:
    sent = chain.send(ALICE, transfer(5), wait=False)
    assert sent.height is None and sent.code == 0 and len(node.mempool) == 1
    committed = chain.wait_for_tx(sent.hash)
    assert committed.code == 0 and committed.hash == sent.hash and not node.mempool


# --- one-line errors ------------------------------------------------------------------


def test_a_tx_the_mempool_refuses_is_one_line_and_uses_no_nonce(chain: ChainClient) -> None:
    with pytest.raises(TxRejected) as refused:
        chain.send(ALICE, transfer(FUNDS + 1))
    exc = refused.value
    assert (exc.codespace, exc.code, exc.height) == ("bank", 1, None)
    assert str(exc).startswith("tx rejected (bank code 1): insufficient balance") and "\n" not in str(exc)
    assert chain.nonce(ALICE.address) == 0 and balance(chain, ALICE) == FUNDS  # CheckTx charges nothing


def test_a_tx_that_fails_in_its_block_names_the_block(tmp_path: Path) -> None:
    node = FakeNode({ALICE.address: 1_000})
    try:
        with ChainClient(node.url) as chain:
            with pytest.raises(TxRejected) as failed:
                chain.send(ALICE, transfer(5_000))
            exc = failed.value
            assert exc.height == node.height and exc.hash in node.results and exc.code == 1
            assert str(exc) == (f"tx rejected (bank code 1): insufficient balance: {ALICE.address} has 998ugrad, needs 5000ugrad"
                                f" (tx {exc.hash} in block {exc.height}; the fee was charged)")
            node.check_reject = (7, "runtime", "cannot pay fee:\nfee is 2ugrad")
            with pytest.raises(TxRejected, match=r"^tx rejected \(runtime code 7\): cannot pay fee: fee is 2ugrad$"):
                chain.send(ALICE, transfer(1))
    finally:
        node.server.shutdown()
        node.server.server_close()


def test_failed_queries_and_a_dead_node_are_chain_errors(chain: ChainClient) -> None:
    with pytest.raises(ChainError, match=r"^query /no/such failed \(runtime code \d+\): unknown query path"):
        chain.query("/no/such")
    with pytest.raises(ChainError, match=r"returned b'\{.*not a decimal number"):
        chain.query_int("/app/params")

    dead = f"http://127.0.0.1:{free_port()}"
    with ChainClient(dead) as nobody:
        for call in (lambda: nobody.chain_id, lambda: nobody.nonce(ALICE.address), lambda: nobody.send(ALICE, transfer(1), fee=1, nonce=0)):
            with pytest.raises(ChainError, match=f"^node not running at {dead} "):
                call()
        assert nobody.min_fee() == FALLBACK_MIN_FEE


# --- the pipeline -----------------------------------------------------------------------


def test_pipeline_counts_nonces_itself_and_keeps_its_window(chain: ChainClient, node: MempoolNode) -> None:
    pipeline = chain.pipeline(ALICE, fee=MIN_FEE, window=3)
    hashes = [pipeline.send(transfer(10 + i)) for i in range(7)]
    assert node.most_waiting == 3  # three at a time, none awaited before the window filled
    results = pipeline.wait_all()
    assert list(results) == hashes and all(r.code == 0 for r in results.values())
    heights = [r.height for r in results.values()]
    assert heights == sorted(heights) and len(set(heights)) == 3  # blocks of 3, 3 and 1
    assert node.nonce_queries == 1 and chain.nonce(ALICE.address) == 7
    assert balance(chain, BOB) == FUNDS + sum(10 + i for i in range(7))


def test_pipeline_after_a_refusal_reads_the_nonce_again(chain: ChainClient, node: MempoolNode) -> None:
    pipeline = chain.pipeline(ALICE, fee=MIN_FEE)
    first = [pipeline.send(transfer(1)), pipeline.send(transfer(2))]
    with pytest.raises(TxRejected, match="insufficient balance"):
        pipeline.send(transfer(FUNDS))
    assert pipeline.nonce is None and len(pipeline.in_flight) == 2
    after = pipeline.send(transfer(3))  # waits for the two in flight, then reads nonce 2 from the chain
    assert list(pipeline.wait_all()) == first + [after] and chain.nonce(ALICE.address) == 3

    chain.send(ALICE, transfer(4))  # the key signs elsewhere: the pipeline's count (3) is now stale
    with pytest.raises(TxRejected) as stale:
        pipeline.send(transfer(5))
    assert stale.value.codespace == "runtime" and "nonce" in stale.value.log
    resent = pipeline.send(transfer(5))
    assert pipeline.wait_all()[resent].code == 0 and chain.nonce(ALICE.address) == 5


def test_pipeline_of_prebuilt_txs_gives_results_by_hash(chain: ChainClient, node: MempoolNode) -> None:
    raws = [txlib.build(BOB, chain.chain_id, nonce, MIN_FEE, txlib.MsgSend(recipient=ALICE.address, amount=1)) for nonce in range(5)]
    raws.append(txlib.build(BOB, chain.chain_id, 5, MIN_FEE, txlib.MsgSend(recipient=ALICE.address, amount=FUNDS)))
    pipeline = chain.pipeline(window=4)
    for raw in raws[:5]:
        pipeline.broadcast(raw)
    with pytest.raises(TxRejected, match="insufficient balance"):
        pipeline.broadcast(raws[5])
    results = pipeline.wait_all()
    assert list(results) == [tx_hash_of(raw) for raw in raws[:5]] and all(r.code == 0 for r in results.values())
    assert node.most_waiting == 4 and chain.nonce(BOB.address) == 5
    with pytest.raises(ValueError, match="no key"):
        pipeline.send(transfer(1))
