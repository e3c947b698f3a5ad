"""Issue 11, training: quorums count the stake snapshotted when the round opened (defect 3); trainer bonds are
locked while a submission is undecided and slots go to the larger bond (defect 6); bounded state and hooks (12).

Each test plays the cheapest attack an account with some stake and an RPC endpoint has, through real txs
and blocks (tests.unit.conftest.Chain), with the supply and pool invariants checked after every block.
"""

import json

import pytest

from abci_app import crypto, tx
from abci_app.modules import bank, staking, training
from tests.unit.test_staking import cons_key
from tests.unit.test_training import PARAMS, TrainingChain, attest, cid, codes, make_net, sha, submit

UNIT = 100  # power_unit


def make_chain(tmp_path, self_bonds: list[int], trainers: int = 3, **params) -> TrainingChain:
    """test_training's network with these self-bonds (power = bond / UNIT), a short unbonding period."""
    return make_net(tmp_path, self_bonds, trainers, staking_params={"power_unit": UNIT, "unbonding_blocks": 3}, **params)


@pytest.fixture
def minority(tmp_path):
    """Honest validators with 58% of the power (29 + 29); an attacker with 42% split 40 + 2. One trainer bonded: round 0 open."""
    chain = make_chain(tmp_path, [2_900, 2_900, 4_000, 200])
    chain.block([chain.tx(chain.trainers[0], tx.MsgBondTrainer(amount=2_000))])
    assert chain.round()["phase"] == "submit"
    yield chain
    chain.app.close()


def undelegate(chain, val, amount):
    return chain.tx(val, tx.MsgUndelegate(validator=val.address, amount=amount))


def events(response, kind):
    """The block's events of one kind: its txs' (merged into the block's) and its hooks'."""
    return [e for e in response.events if e.type == kind]


def attrs(event) -> dict:
    return {a.key: a.value for a in event.attributes}


# --- defect 3: votes count the snapshot, and voters stay slashable ------------------------------------


def test_minority_cannot_accept_a_delta_by_leaving_after_voting(minority):
    """issue 11 defect 3: 42% votes accept, the big attacker validator undelegates down to its minimum in the same
    block, and its stored power still counted against the shrunken total: a garbage delta was accepted (reward minted)."""
    net = minority
    big, small = net.vals[2], net.vals[3]
    net.block([submit(net, net.trainers[0], tag="garbage")])
    balance = net.balance(net.trainers[0].address)
    r = net.block([attest(net, big, 0, True), undelegate(net, big, 4_000 - 100), attest(net, small, 0, True)])
    assert codes(r) == [("", 0), ("", 0), ("", 0)]
    sub = net.round()["submission_list"][0]
    assert sub["status"] == "pending" and sub["accept_power"] == 42  # 42 of a snapshot total of 100: no quorum
    assert net.balance(net.trainers[0].address) == balance
    # The honest majority still decides it, against the same snapshot.
    net.block([attest(net, net.vals[0], 0, False), attest(net, net.vals[1], 0, False)])
    assert net.round()["submission_list"][0]["status"] == "pending"  # 58 of 100 reject: still short of 67
    assert net.round()["total_power"] == 100


def test_minority_cannot_register_a_merge_by_leaving_after_voting(minority):
    """issue 11 defect 3 (merge): the same 42% registered an arbitrary checkpoint as the latest version."""
    net = minority
    big, small = net.vals[2], net.vals[3]
    net.block([submit(net, net.trainers[0])])
    net.block([attest(net, v, 0, True) for v in net.vals])
    while net.round()["phase"] != "merge":
        net.block([])
    evil = tx.MsgAttestMerge(round=0, cid=cid("evil"), sha256=sha("evil"), bytes=10, held_out_loss_micro=1)
    r = net.block([net.tx(big, evil), undelegate(net, big, 4_000 - 100), net.tx(small, evil)])
    assert codes(r) == [("", 0), ("", 0), ("", 0)]
    assert json.loads(net.query("/registry/latest").value)["id"] == 0
    assert net.round()["phase"] == "merge"


def test_a_validator_that_joins_after_the_round_opened_does_not_vote(minority):
    """issue 11 defect 3: fresh stake bonded mid-round has no say in it (it could be the stake that just left)."""
    net = minority
    newcomer = net.trainers[1]
    r = net.block([net.tx(newcomer, tx.MsgCreateValidator(pubkey=cons_key(9), amount=9_000, moniker="late")),
                   submit(net, net.trainers[0])])
    assert codes(r)[1] == ("", 0)
    r = net.block([attest(net, newcomer, 0, True)])
    assert codes(r) == [("training", 7)]
    assert "was not an active validator when round 0 opened" in r.tx_results[0].log


def test_a_wrong_voter_that_exits_is_still_penalized(tmp_path):
    """issue 11 defect 3: a validator that attests against the decision and undelegates everything in the same
    block used to vanish from the active set before the round ended, and paid nothing."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000])
    wrong = net.vals[0]
    net.block([net.tx(net.trainers[0], tx.MsgBondTrainer(amount=2_000))])
    net.block([submit(net, net.trainers[0])])
    net.block([attest(net, wrong, 0, False), undelegate(net, wrong, 1_000)])
    net.block([attest(net, net.vals[1], 0, True), attest(net, net.vals[2], 0, True)])  # 30 of 40: accepted
    assert net.round(0)["submission_list"][0]["status"] == "accepted"
    balance = net.balance(wrong.address)
    penalized = []
    for _ in range(60):
        r = net.block([])
        penalized += [attrs(e) for e in events(r, "verifier_penalized")]
        if net.balance(wrong.address) != balance:
            break
    penalty = 1_000 * PARAMS["verifier_penalty_bps"] // 10_000
    assert [(p["validator"], p["reason"], p["amount"]) for p in penalized] == [(wrong.address, "wrong", str(penalty))]
    assert net.balance(wrong.address) - balance == 1_000 - penalty  # the unbonding paid the penalty


# --- defect 6: trainer bonds are locked; slots are not first-come-free ---------------------------------


def test_a_submitted_bond_cannot_be_unbonded_before_the_decision(tmp_path):
    """issue 11 defect 6: submit_delta then unbond_trainer in one block made the later rejection slash 0."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000])
    cheater = net.trainers[0]
    net.block([net.tx(cheater, tx.MsgBondTrainer(amount=2_000))])
    r = net.block([submit(net, cheater), net.tx(cheater, tx.MsgUnbondTrainer(amount=2_000)), net.tx(cheater, tx.MsgUnbondTrainer(amount=1))])
    assert codes(r) == [("", 0), ("training", 12), ("training", 12)]
    assert "0ugrad unlocked trainer bond (2000ugrad more is locked" in r.tx_results[1].log
    assert net.bond(cheater) == {"bonded": 2_000, "locked": 2_000, "unbonding": 0}
    r = net.block([attest(net, v, 0, False) for v in net.vals])
    assert attrs(events(r, "delta_rejected")[0])["slashed"] == "400"
    assert net.bond(cheater) == {"bonded": 1_600, "locked": 0, "unbonding": 0}
    r = net.block([net.tx(cheater, tx.MsgUnbondTrainer(amount=1_600))])  # decided: free again
    assert codes(r) == [("", 0)] and net.bond(cheater) == {"bonded": 0, "locked": 0, "unbonding": 1_600}


def test_a_full_round_takes_a_larger_bond_by_evicting_the_smallest(tmp_path):
    """issue 11 defect 6: minimum-bond accounts filled max_submissions at every round for fees only and locked
    honest trainers out. Now a strictly larger bond evicts the pending, unattested submission with the smallest
    bond (ties: the latest), whose lock is released; attested submissions keep their slot."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000], trainers=6, submission_blocks=10)
    squat, honest, late = net.trainers[:3], net.trainers[3], net.trainers[4:]
    net.block([net.tx(t, tx.MsgBondTrainer(amount=1_000)) for t in squat] + [net.tx(honest, tx.MsgBondTrainer(amount=5_000))]
              + [net.tx(t, tx.MsgBondTrainer(amount=1_000)) for t in late])
    net.block([submit(net, t) for t in squat])  # indices 0, 1, 2: the round is full
    net.block([attest(net, net.vals[0], 0, True)])  # submission 0 has a vote: not evictable
    equal = net.block([submit(net, late[0])])  # an equal bond evicts nothing
    assert codes(equal) == [("training", 10)]

    r = net.block([submit(net, honest)])
    assert codes(r) == [("", 0)]
    (evicted,) = events(r, "submission_evicted")
    assert attrs(evicted) == {"round": "0", "submission": "2", "trainer": squat[2].address, "bond": "1000", "by": honest.address}
    rnd = net.round()
    assert [(s["index"], s["trainer"], s["bond"]) for s in rnd["submission_list"]] == [
        (0, squat[0].address, 1_000), (1, squat[1].address, 1_000), (3, honest.address, 5_000)]
    assert (rnd["submissions"], rnd["next_index"]) == (3, 4)
    assert net.bond(squat[2]) == {"bonded": 1_000, "locked": 0, "unbonding": 0}
    assert net.bond(honest)["locked"] == 5_000
    assert "the smallest evictable bond is 1000ugrad; a larger trainer bond (1000ugrad now) takes a slot" in equal.tx_results[0].log
    # A vote for the evicted index cannot land on another delta; the evicted trainer may come back with more.
    r = net.block([attest(net, net.vals[1], 2, True), net.tx(squat[2], tx.MsgBondTrainer(amount=1_000)), submit(net, squat[2], tag="again")])
    assert codes(r) == [("training", 6), ("", 0), ("", 0)]
    assert [(s["index"], s["trainer"]) for s in net.round()["submission_list"]] == [(0, squat[0].address), (3, honest.address), (4, squat[2].address)]
    r = net.block([attest(net, v, i, True) for v in net.vals for i in (0, 3, 4)])
    r = net.block([submit(net, late[1])])  # everything attested now: nothing to evict
    assert codes(r) == [("training", 10)] and "every submission already has attestations" in r.tx_results[0].log


def test_expired_and_accepted_submissions_release_their_lock(tmp_path):
    """issue 11 defect 6: a lock lasts until the submission is decided, or expires when the round stops verifying."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000])
    a, b = net.trainers[:2]
    net.block([net.tx(t, tx.MsgBondTrainer(amount=3_000)) for t in (a, b)])
    net.block([submit(net, a), submit(net, b)])
    assert net.bond(a)["locked"] == net.bond(b)["locked"] == 3_000
    net.block([attest(net, v, 0, True) for v in net.vals])
    assert net.bond(a) == {"bonded": 3_000, "locked": 0, "unbonding": 0}
    while net.round(0)["phase"] in ("submit", "verify"):
        net.block([])
    assert net.round(0)["submission_list"][1]["status"] == "expired"
    assert net.bond(b) == {"bonded": 3_000, "locked": 0, "unbonding": 0}


def test_full_slash_with_a_full_attester_share_pays_everything_and_never_transfers_zero(tmp_path):
    """issue 11 defect 6 / 14: slash_bps = attester_share_bps = 10000 neither divides by zero nor moves 0."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000], slash_bps=10_000, attester_share_bps=10_000)
    cheater = net.trainers[0]
    net.block([net.tx(cheater, tx.MsgBondTrainer(amount=1_001))])
    net.block([submit(net, cheater)])
    before = [net.balance(v.address) for v in net.vals]
    supply = bank.supply(net.app.store.begin_block())
    r = net.block([attest(net, net.vals[2], 0, False), attest(net, net.vals[1], 0, False)])  # 30 of 40 reject
    assert codes(r) == [("", 0), ("", 0)]
    assert all(int(attrs(e)["amount"]) > 0 for e in events(r, "transfer") + events(r, "burned"))
    assert net.balance(net.vals[2].address) - before[2] == 1_001 * 20 // 30 - 1  # by power 20 : 10, less the fee
    assert net.balance(net.vals[1].address) - before[1] == 1_001 * 10 // 30 - 1
    assert bank.supply(net.app.store.begin_block()) == supply - 1  # the rounding remainder is burned
    assert net.bond(cheater) == {"bonded": 0, "locked": 0, "unbonding": 0}
    assert training.bonded_trainers(net.app.store.begin_block()) == 0


def test_no_slash_moves_nothing(tmp_path):
    """slash_bps = 0: a rejection releases the lock and moves no tokens (bank.transfer refuses 0)."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000], slash_bps=0)
    cheater = net.trainers[0]
    net.block([net.tx(cheater, tx.MsgBondTrainer(amount=1_000))])
    net.block([submit(net, cheater)])
    r = net.block([attest(net, v, 0, False) for v in net.vals])
    assert attrs(events(r, "delta_rejected")[0])["slashed"] == "0"
    assert not [e for e in events(r, "transfer") if attrs(e)["sender"] == training.TRAINER_POOL]
    assert net.bond(cheater) == {"bonded": 1_000, "locked": 0, "unbonding": 0}


# --- trainer bonds in the training module: count, queue, query ----------------------------------------------


def test_bond_count_opens_rounds_and_follows_unbonds_and_slashes(tmp_path):
    """Opening a round reads a count of trainers bonded at least min_trainer_bond, not every bond."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000], verifier_penalty_bps=0)
    t = net.trainers[0]
    r = net.block([net.tx(t, tx.MsgBondTrainer(amount=999)), net.tx(t, tx.MsgBondTrainer(amount=0)), net.tx(t, tx.MsgUnbondTrainer(amount=1_000))])
    assert codes(r) == [("", 0), ("training", 11), ("training", 12)]
    net.block([])
    assert net.round() is None and training.bonded_trainers(net.app.store.begin_block()) == 0
    net.block([net.tx(t, tx.MsgBondTrainer(amount=1))])
    assert net.round()["id"] == 0 and training.bonded_trainers(net.app.store.begin_block()) == 1
    net.block([submit(net, t)])
    net.block([attest(net, v, 0, False) for v in net.vals])  # slashed 200: below the minimum
    assert net.bond(t)["bonded"] == 800 and training.bonded_trainers(net.app.store.begin_block()) == 0
    while net.round(0)["phase"] != "closed":
        net.block([])
    net.block([])
    assert net.round()["id"] == 0  # no bonded trainer: no next round


def test_trainer_unbondings_complete_at_their_due_height(tmp_path):
    """The queue is ordered by due height; end_block pays what is due and stops at the first later entry."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000], trainer_unbonding_blocks=3)
    a, b = net.trainers[:2]
    net.block([net.tx(a, tx.MsgBondTrainer(amount=1_000)), net.tx(b, tx.MsgBondTrainer(amount=1_000))])
    net.block([net.tx(a, tx.MsgUnbondTrainer(amount=300))])
    due_a = net.height + 3
    net.block([net.tx(b, tx.MsgUnbondTrainer(amount=400)), net.tx(a, tx.MsgUnbondTrainer(amount=200))])
    due_b = net.height + 3
    assert [(u["trainer"], u["amount"], u["completion_height"]) for u in training.trainer_unbondings(net.app.store.begin_block())] == [
        (a.address, 300, due_a), (b.address, 400, due_b), (a.address, 200, due_b)]
    assert net.bond(a) == {"bonded": 500, "locked": 0, "unbonding": 500}
    balances = {t.address: net.balance(t.address) for t in (a, b)}
    while net.height < due_a - 1:
        net.block([])
    assert net.bond(a)["unbonding"] == 500
    r = net.block([])
    assert [attrs(e) for e in events(r, "trainer_unbonding_completed")] == [{"trainer": a.address, "amount": "300"}]
    assert net.balance(a.address) == balances[a.address] + 300 and net.bond(a)["unbonding"] == 200
    net.block([])
    assert net.balance(b.address) == balances[b.address] + 400 and net.balance(a.address) == balances[a.address] + 500
    assert net.bond(b) == {"bonded": 600, "locked": 0, "unbonding": 0}
    assert training.trainer_unbondings(net.app.store.begin_block()) == []


def test_trainer_bond_query_is_provable_and_refuses_bad_arguments(tmp_path):
    net = make_chain(tmp_path, [1_000, 1_000, 2_000])
    t = net.trainers[0]
    assert net.query("/training/trainer_bond", t.address).value == b""
    net.block([net.tx(t, tx.MsgBondTrainer(amount=1_500))])
    net.block([])
    proven = net.query("/training/trainer_bond", t.address, prove=True)
    assert proven.code == 0 and json.loads(proven.value) == {"bonded": 1_500, "locked": 0, "unbonding": 0} and proven.proof_ops.ops
    assert net.query("/staking/trainer_bond", t.address).code != 0  # moved: staking no longer holds trainer bonds
    for path, data in (("/training/trainer_bond", "gc1nope"), ("/training/round", "-1"), ("/training/round", "99999999999999999999999"),
                       ("/training/round_detail", "-1"), ("/training/submission", "0/-1"), ("/training/submission", "1")):
        assert net.query(path, data).code != 0, (path, data)


# --- 12: bounded state and hooks ----------------------------------------------------------------------


def test_stored_round_and_submission_fields_are_bounded(minority):
    """issue 11 defect 12: every stored field is bounded by a param, a fixed format or a truncation."""
    net = minority
    huge = "\u00e9" * 5_000
    r = net.block([net.tx(net.trainers[0], tx.MsgSubmitDelta(round=0, cid=cid("d"), sha256=sha("d"), bytes=2**64 - 1, loss_before_micro=2**64 - 1,
                                                              loss_after_micro=0, steps=PARAMS["steps"], kernel_path=huge))])
    assert codes(r) == [("", 0)]
    r = net.block([net.tx(net.vals[0], tx.MsgAttest(round=0, submission=0, accept=False, measured_error_ppm=2**64 - 1, reason=huge))])
    assert codes(r) == [("", 0)]
    state = net.app.store.begin_block()
    assert len(state.get(training.SUBMISSION_PREFIX + (0).to_bytes(8, "big") * 2)) < 1_500
    assert max(len(v) for _, v in state.iter_prefix(training.ATTESTATION_PREFIX)) < 1_000
    rnd = training.current_round(state)
    assert len(rnd.powers) <= staking.get_params(state).max_validators


def test_params_refuse_a_free_slot():
    with pytest.raises(ValueError, match="min_trainer_bond"):
        training.Params(min_trainer_bond=0).validate()
    training.Params(slash_bps=10_000, attester_share_bps=10_000).validate()


def test_staking_holds_no_trainer_bonds():
    """issue 11 defect 6: the module that slashes trainer bonds owns them (no module reads another's storage)."""
    for name in ("bond_trainer", "unbond_trainer", "trainer_bond", "slash_trainer", "TRAINER_POOL", "TRAINER_PREFIX"):
        assert not hasattr(staking, name), name
    assert training.TRAINER_POOL == bank.module_address("trainer_pool")
    assert crypto.parse_address(training.TRAINER_POOL) == training.TRAINER_POOL
