"""Issue 11, adversarial review of the fixes: what an account with some stake and an RPC endpoint could still do.

Each test is the cheapest attack (or the honest flow that broke), played through real txs and blocks.
"""

from __future__ import annotations

from abci_app import tx
from tests.unit.test_safety_staking import BOND, Net, cons_addr, cons_key, create, undelegate
from tests.unit.test_safety_training import make_chain
from tests.unit.test_training import codes, commit, reveal, submit, until_phase, verdict

# --- state fee: rewriting a record is not storing new bytes -----------------------------------------------


def test_training_txs_do_not_pay_for_rewriting_the_round_snapshot(tmp_path):
    """issue 11 defect 12 (review): the round record carries the power snapshot (about 50 bytes per validator, and
    now the auditor list too) and submit_delta, every commit and every reveal rewrite it. The state fee charged every
    byte rewritten, so with 60 validators a submission needed ~18,000ugrad, and a vote signed with the fee
    fee_for quoted before the others' votes landed failed with StateFeeTooLow: the submission then expired and
    the honest validators whose votes failed were penalized. Only bytes the message adds are charged."""
    net = make_chain(tmp_path, [1_000] * 60)
    net.block([net.tx(net.trainers[0], tx.MsgBondTrainer(amount=2_000))])
    assert net.round()["phase"] == "submit"
    r = net.block([submit(net, net.trainers[0])])
    assert codes(r) == [("", 0)], r.tx_results[0].log
    until_phase(net, "commit")
    assert len(net.round()["auditors"]) == 60
    # Every validator signs its commit and its reveal with min_fee, in one block each: all of them must pass.
    sealed = {v: [verdict(net, v, 0)] for v in net.vals}
    r = net.block([commit(net, v, vs) for v, vs in sealed.items()])
    assert codes(r) == [("", 0)] * 60, [x.log for x in r.tx_results if x.code][:1]
    assert net.round()["phase"] == "reveal"
    r = net.block([reveal(net, v, vs) for v, vs in sealed.items()])
    assert codes(r) == [("", 0)] * 60, [x.log for x in r.tx_results if x.code][:1]
    assert net.round(0)["submission_list"][0]["status"] == "accepted"


# --- downtime: rotating the consensus key does not reset the missed-signature count -----------------------


def test_an_offline_validator_cannot_dodge_the_downtime_jail_by_rotating_its_key(tmp_path):
    """issue 11 defect 1/9 (review): misses were counted per consensus key and a replaced key stops counting, so an
    offline operator that exits and re-creates itself with a new key (one block, its delegators' stake kept) before
    the downtime_max_missed-th miss started from zero each time: its power stayed in the set, never signing, never
    jailed. The count follows the operator's validator to its new key."""
    net = Net(tmp_path / "app")
    val = net.ops[1]
    net.block([], votes=[(cons_addr(1), False)])
    net.block([], votes=[(cons_addr(1), False)])  # 2 of the 3 misses that jail (window 5)
    r = net.block([net.tx(val, undelegate(val, BOND)), net.tx(val, create(val, 2, BOND))])
    assert [(x.codespace, x.code) for x in r.tx_results] == [("", 0), ("", 0)]
    net.block([])
    net.block([], votes=[(cons_addr(2), False)])  # the new key, as offline as the old one
    assert net.validator(val)["jailed_until"] > 0
    assert cons_key(2) not in net.cometbft
    net.app.close()
