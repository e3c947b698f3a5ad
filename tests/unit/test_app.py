"""Application lifecycle: determinism across nodes, restarts, proofs, genesis rules."""

import json
import random

import pytest
import rlp

from abci_app.app import Application
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.state import verify_proof
from tests.unit.conftest import CHAIN_ID, Chain


def random_blocks(chain: Chain, keys, seed: int, blocks: int = 5, per_block: int = 8):
    rng = random.Random(seed)
    out = []
    for _ in range(blocks):
        txs = []
        for _ in range(per_block):
            sender, recipient = rng.sample(keys, 2)
            txs.append(chain.send_tx(sender, recipient.address, rng.randrange(1, 300)))
        out.append(txs)
    return out


def test_two_nodes_same_blocks_same_app_hash(tmp_path, keys):
    balances = {k.address: 1_000 for k in keys}
    one, two = Chain(tmp_path / "one", balances), Chain(tmp_path / "two", balances)
    assert one.genesis_hash == two.genesis_hash
    for txs in random_blocks(one, keys, seed=1):
        h1 = one.block(txs).app_hash
        h2 = two.block(txs).app_hash
        assert h1 == h2
    assert one.app.store.app_hash == two.app.store.app_hash
    assert [one.balance(k.address) for k in keys] == [two.balance(k.address) for k in keys]


def test_different_txs_give_a_different_app_hash(tmp_path, keys):
    balances = {k.address: 1_000 for k in keys}
    one, two = Chain(tmp_path / "one", balances), Chain(tmp_path / "two", balances)
    assert one.block([one.send_tx(keys[0], keys[1].address, 5)]).app_hash != two.block([two.send_tx(keys[0], keys[1].address, 6)]).app_hash


def test_empty_block_keeps_app_hash(chain):
    before = chain.app.store.app_hash
    assert chain.block([]).app_hash == before  # so create_empty_blocks = false works


def test_info_after_restart_reports_last_commit(tmp_path, keys):
    chain = Chain(tmp_path / "app", {keys[0].address: 1_000})
    chain.block([chain.send_tx(keys[0], keys[1].address, 10)])
    height, app_hash = chain.height, chain.app.store.app_hash
    chain.app.close()
    reopened = Application(tmp_path / "app")
    info = reopened.info(abci.RequestInfo())
    assert (info.last_block_height, info.last_block_app_hash) == (height, app_hash)
    chain.app = reopened
    assert chain.balance(keys[1].address) == 10
    reopened.close()


def test_crash_before_commit_replays_to_the_same_hash(tmp_path, keys):
    chain = Chain(tmp_path / "app", {keys[0].address: 1_000})
    txs = [chain.send_tx(keys[0], keys[1].address, 10)]
    expected = chain.app.finalize_block(abci.RequestFinalizeBlock(txs=txs, height=2)).app_hash
    chain.app.close()  # crash: FinalizeBlock ran, Commit did not
    restarted = Application(tmp_path / "app")
    assert restarted.info(abci.RequestInfo()).last_block_height == 1
    replayed = restarted.finalize_block(abci.RequestFinalizeBlock(txs=txs, height=2)).app_hash
    restarted.commit(abci.RequestCommit())
    assert replayed == expected
    restarted.close()


def test_fresh_app_reports_height_zero_and_empty_hash(tmp_path):
    app = Application(tmp_path / "new")
    info = app.info(abci.RequestInfo())
    assert (info.last_block_height, info.last_block_app_hash) == (0, b"")
    app.close()


def test_query_proof_verifies_and_tampering_is_refused(chain, keys):
    chain.block([chain.send_tx(keys[0], keys[1].address, 25)])
    response = chain.query("/bank/balance", keys[1].address, prove=True)
    assert response.value == b"525"
    (op,) = response.proof_ops.ops
    nodes = rlp.decode(op.data)
    app_hash = chain.app.store.app_hash
    assert verify_proof(app_hash, response.key, response.value, nodes)
    assert not verify_proof(app_hash, response.key, b"526", nodes)
    absent = chain.query("/bank/balance", keys[3].address, prove=True)
    assert absent.value == b""
    assert verify_proof(app_hash, absent.key, None, rlp.decode(absent.proof_ops.ops[0].data))
    assert not verify_proof(app_hash, absent.key, b"1", rlp.decode(absent.proof_ops.ops[0].data))


def test_historical_query(chain, keys):
    chain.block([chain.send_tx(keys[0], keys[1].address, 25)])
    old_height = chain.height
    chain.block([chain.send_tx(keys[0], keys[1].address, 25)])
    assert chain.query("/bank/balance", keys[1].address, height=old_height).value == b"525"
    assert chain.query("/bank/balance", keys[1].address).value == b"550"
    assert chain.query("/bank/balance", keys[1].address, height=999).code != 0


@pytest.mark.parametrize(
    "app_state, match",
    [
        ({"nonsense": {}}, "unknown modules"),
        ({"bank": {"balances": [{"address": "gc1bad", "amount": 1}]}}, "checksum|separator"),
        ({"bank": {"balances": [{"address": "ADDR", "amount": -5}]}}, "positive integer"),
        ({"bank": {"balances": [{"address": "ADDR", "amount": 1.5}]}}, "positive integer"),
        ({"bank": {"balances": [{"address": "ADDR", "amount": 1}, {"address": "ADDR", "amount": 2}]}}, "twice"),
    ],
)
def test_bad_genesis_is_refused(tmp_path, keys, app_state, match):
    text = json.dumps(app_state).replace("ADDR", keys[0].address)
    app = Application(tmp_path / "app")
    with pytest.raises(ValueError, match=match):
        app.init_chain(abci.RequestInitChain(chain_id=CHAIN_ID, app_state_bytes=text.encode()))
    app.close()
