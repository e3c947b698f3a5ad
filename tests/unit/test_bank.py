"""Every bank and runtime rule, through the Application as CometBFT drives it."""

import os

import pytest

from abci_app import tx
from abci_app.modules import bank
from abci_app.pb.tendermint.abci import types_pb2 as abci
from tests.unit.conftest import CHAIN_ID, Chain


def supply_holds(chain: Chain, addresses) -> None:
    """Invariant: the total supply equals the sum of all balances."""
    total = sum(chain.balance(a) for a in list(addresses) + [bank.FEE_COLLECTOR])
    assert total == int(chain.query("/bank/supply").value)


def test_genesis_balances_and_supply(chain, keys):
    assert chain.balance(keys[0].address) == 1_000
    assert chain.balance(keys[2].address) == 0
    assert int(chain.query("/bank/supply").value) == 1_500


def test_transfer_moves_tokens_and_pays_fee(chain, keys):
    a, b = keys[0], keys[1]
    result = chain.block([chain.send_tx(a, b.address, 100, fee=3)])
    assert result.tx_results[0].code == 0
    assert chain.balance(a.address) == 1_000 - 100 - 3
    assert chain.balance(b.address) == 600
    assert chain.balance(bank.FEE_COLLECTOR) == 3
    assert chain.nonce(a.address) == 1
    events = {e.type: {x.key: x.value for x in e.attributes} for e in result.tx_results[0].events}
    assert events["transfer"] == {"sender": a.address, "recipient": b.address, "amount": "100"}
    supply_holds(chain, [k.address for k in keys])


def test_failed_transfer_pays_fee_and_changes_nothing_else(chain, keys):
    a, b = keys[0], keys[1]
    result = chain.block([chain.send_tx(a, b.address, 5_000, fee=2)])
    r = result.tx_results[0]
    assert (r.codespace, r.code) == ("bank", bank.InsufficientBalance.code)
    assert "insufficient balance" in r.log
    assert chain.balance(a.address) == 998
    assert chain.balance(b.address) == 500
    assert chain.nonce(a.address) == 1  # the nonce is used: the same tx cannot be replayed
    assert [e.type for e in r.events] == ["fee_paid", "message"]
    supply_holds(chain, [k.address for k in keys])


def test_transfer_to_new_account_and_emptying_an_account(chain, keys):
    a, c = keys[1], keys[2]
    chain.block([chain.send_tx(a, c.address, 499, fee=1)])
    assert chain.balance(a.address) == 0
    assert chain.balance(c.address) == 499
    assert chain.query("/bank/balance", a.address).value == b""  # zero balances are deleted


def test_invalid_recipient_and_amount(chain, keys):
    a = keys[0]
    bad_addr = chain.block([chain.send_tx(a, "gc1notanaddress", 1)]).tx_results[0]
    assert (bad_addr.codespace, bad_addr.code) == ("bank", bank.InvalidAddress.code)
    zero = chain.block([chain.send_tx(a, keys[1].address, 0)]).tx_results[0]
    assert (zero.codespace, zero.code) == ("bank", bank.InvalidAmount.code)


def test_ante_failures_charge_nothing(chain, keys):
    a, b = keys[0], keys[1]
    before = chain.app.store.app_hash
    cases = {
        "bad nonce": (tx.build(a, CHAIN_ID, 5, 1, tx.MsgSend(recipient=b.address, amount=1)), 5),
        "wrong chain": (tx.build(a, "other-chain", 0, 1, tx.MsgSend(recipient=b.address, amount=1)), 4),
        "fee too low": (tx.build(a, CHAIN_ID, 0, 0, tx.MsgSend(recipient=b.address, amount=1)), 6),
        "cannot pay fee": (tx.build(keys[3], CHAIN_ID, 0, 1, tx.MsgSend(recipient=b.address, amount=1)), 7),
        "malformed": (b"\x0a\x05abc", 1),
        "too large": (b"\x00" * (tx.MAX_TX_BYTES + 1), 2),
    }
    good = tx.build(a, CHAIN_ID, 0, 1, tx.MsgSend(recipient=b.address, amount=1))
    envelope = tx.Tx.FromString(good)
    envelope.signature = bytes(64)
    cases["bad signature"] = (envelope.SerializeToString(), 3)
    result = chain.block([raw for raw, _ in cases.values()])
    for (name, (_, code)), r in zip(cases.items(), result.tx_results):
        assert (r.codespace, r.code) == ("runtime", code), name
        assert r.log, name
    assert chain.app.store.app_hash == before  # nothing changed, not even a fee
    assert chain.balance(a.address) == 1_000


def test_check_tx_codes_and_never_raises(chain, keys):
    a, b = keys[0], keys[1]
    assert chain.check(tx.build(a, CHAIN_ID, 0, 1, tx.MsgSend(recipient=b.address, amount=1))).code == 0
    r = chain.check(tx.build(a, CHAIN_ID, 1, 1, tx.MsgSend(recipient=b.address, amount=10**6)))
    assert (r.codespace, r.code) == ("bank", 1) and "insufficient balance" in r.log
    assert chain.check(tx.build(a, "x", 1, 1, tx.MsgSend(recipient=b.address, amount=1))).code == 4
    assert chain.check(tx.build(a, CHAIN_ID, 0, 1, tx.MsgSend(recipient=b.address, amount=1))).code == 5  # nonce 0 used in the mempool view
    rng = __import__("random").Random(7)
    for _ in range(200):
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        assert chain.check(garbage).code != 0


def test_a_tx_the_mempool_refuses_leaves_its_view_untouched(chain, keys):
    """CheckTx runs the message on the mempool view itself and keeps nothing of a refused tx: not its fee,
    not its nonce, so the same nonce is admitted next and the view's spending is what was admitted."""
    a, b = keys[0], keys[1]  # a has 1,000
    before = dict(chain.app._check_state._writes)
    refused = chain.check(tx.build(a, CHAIN_ID, 0, 7, tx.MsgSend(recipient=b.address, amount=5_000)))
    assert (refused.codespace, refused.code) == ("bank", bank.InsufficientBalance.code)
    assert chain.app._check_state._writes == before
    assert chain.check(tx.build(a, CHAIN_ID, 0, 1, tx.MsgSend(recipient=b.address, amount=999))).code == 0  # all 1,000, fee included


def test_check_tx_builds_no_events_but_a_block_does(chain, keys):
    from abci_app import runtime
    from abci_app.context import Context

    a, b = keys[0], keys[1]
    raw = tx.build(a, CHAIN_ID, 0, 1, tx.MsgSend(recipient=b.address, amount=1))
    results = {}
    for mode in (runtime.CHECK, runtime.PREPARE):
        state = chain.app._base()
        results[mode] = runtime.admit(Context(state, CHAIN_ID, chain.height + 1, 0), raw, mode)
    assert results[runtime.CHECK].admitted and results[runtime.CHECK].events == []
    assert [e.type for e in results[runtime.PREPARE].events] == ["fee_paid", "message", "transfer"]
    quiet = Context(chain.app._base(), CHAIN_ID, 1, 0, record_events=False)
    with pytest.raises(TypeError):  # not recording is no licence to emit what no module declared
        quiet.emit(("transfer", {}))
    assert quiet.child().record_events is False


def test_check_tx_accumulates_spending_in_the_mempool_view(chain, keys):
    b, c = keys[1], keys[2]  # b has 500
    assert chain.check(chain.send_tx(b, c.address, 300)).code == 0
    second = chain.check(chain.send_tx(b, c.address, 300))
    assert (second.codespace, second.code) == ("bank", 1)


def test_check_tx_admits_only_contiguous_nonces(chain, keys):
    """No look-ahead window (issue 11 defect 7): a nonce is admitted once the one before it is."""
    a, b = keys[0], keys[1]
    ahead = chain.check(tx.build(a, CHAIN_ID, 3, 1, tx.MsgSend(recipient=b.address, amount=1)))
    assert ahead.code == 5 and "expects 0" in ahead.log
    for nonce in range(3):
        assert chain.check(tx.build(a, CHAIN_ID, nonce, 1, tx.MsgSend(recipient=b.address, amount=1))).code == 0
    assert chain.check(tx.build(a, CHAIN_ID, 3, 1, tx.MsgSend(recipient=b.address, amount=1))).code == 0


def test_recheck_after_commit_drops_used_nonces(chain, keys):
    a, b = keys[0], keys[1]
    raw = chain.send_tx(a, b.address, 1)
    assert chain.check(raw).code == 0
    chain.block([raw])
    assert chain.check(raw, recheck=True).code == 5


def test_prepare_proposal_orders_each_senders_nonces(chain, keys):
    a, b = keys[0], keys[1]
    a0, a1, a2 = (tx.build(a, CHAIN_ID, n, 1, tx.MsgSend(recipient=b.address, amount=1)) for n in range(3))
    b0 = tx.build(b, CHAIN_ID, 0, 1, tx.MsgSend(recipient=a.address, amount=1))
    junk = b"\x01\x02"
    response = chain.app.prepare_proposal(abci.RequestPrepareProposal(txs=[a2, b0, a0, junk, a1], max_tx_bytes=10**6, height=2))
    assert list(response.txs) == [a0, b0, a1, a2]
    small = chain.app.prepare_proposal(abci.RequestPrepareProposal(txs=[a0, a1], max_tx_bytes=len(a0), height=2))
    assert list(small.txs) == [a0]


def test_process_proposal_rejects_invalid_txs(chain, keys):
    ok = chain.send_tx(keys[0], keys[1].address, 1)
    accept = chain.app.process_proposal(abci.RequestProcessProposal(txs=[ok], height=1))
    assert accept.status == abci.ResponseProcessProposal.ACCEPT
    reject = chain.app.process_proposal(abci.RequestProcessProposal(txs=[ok, os.urandom(40)], height=1))
    assert reject.status == abci.ResponseProcessProposal.REJECT


def test_queries_report_bad_input(chain):
    assert chain.query("/bank/nothing").code != 0
    bad = chain.query("/bank/balance", "gc1xyz")
    assert bad.code != 0 and "bad query argument" in bad.log
    assert b"min_fee" in chain.query("/app/params").value
