"""Issue 11, training, under issue 12's sampled audits: votes count the stake snapshotted when the round opened
(defect 3); trainer bonds are locked while a submission is undecided and slots go to the larger bond (defect 6);
bounded state and hooks (12).

Each test plays the cheapest attack an account with some stake and an RPC endpoint has, through real txs
and blocks (tests.unit.conftest.Chain), with the supply, pool and lock invariants checked after every block.
Verdicts are committed, then revealed (test_training's `commit`, `reveal`, `audit_round`); fraud claims are
judged by every snapshotted validator (`judge`).
"""

import json

import pytest

from abci_app import crypto, tx
from abci_app.modules import bank, staking, training
from tests.unit.test_staking import create_msg
from tests.unit.test_training import (PARAMS, TrainingChain, audit_round, cid, codes, commit, judge, make_net, merge_round, reveal,
                                      reveal_merge, sha, submit, until_phase, verdict)

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
    """The block's events of one kind: its txs' (in their results), then its hooks' (the block's own)."""
    return [e for r in response.tx_results for e in r.events if e.type == kind] + [e for e in response.events if e.type == kind]


def attrs(event) -> dict:
    return {a.key: a.value for a in event.attributes}


def fraud_everywhere(net, step=5):
    """Every validator claims step `step` of submission 0 is faked, and every one of them judges the claim upheld."""
    audit_round(net, {v: {0: ("fraud", step)} for v in net.vals})
    return net.block([judge(net, v, [(0, step, False)]) for v in net.vals])


# --- defect 3: votes count the snapshot, and voters stay slashable ------------------------------------


def test_minority_cannot_accept_a_delta_by_leaving_after_voting(minority):
    """issue 11 defect 3: 42% voted accept, the big attacker validator undelegated down to its minimum in the same
    block, and its stored power still counted against the shrunken total: a garbage delta was accepted (reward minted).
    Now the 42% reveal accept (with the proofs the colluding trainer gave them) while the big one leaves: the
    committee's power stays the snapshot's 100, so 42 decides nothing; nor does it refute the honest fraud claim."""
    net = minority
    honest, big, small = net.vals[:2], net.vals[2], net.vals[3]
    net.block([submit(net, net.trainers[0], tag="garbage")])
    balance = net.balance(net.trainers[0].address)
    until_phase(net, "commit")
    sealed = {big: [verdict(net, big, 0)], small: [verdict(net, small, 0)]} | {v: [verdict(net, v, 0, "fraud", fraud_step=3)] for v in honest}
    net.block([commit(net, v, vs) for v, vs in sealed.items()])
    until_phase(net, "reveal")
    r = net.block([reveal(net, big, sealed[big]), undelegate(net, big, 4_000 - 100), reveal(net, small, sealed[small])]
                  + [reveal(net, v, sealed[v]) for v in honest])
    assert codes(r) == [("", 0)] * 5
    rnd = net.round()
    sub = rnd["submission_list"][0]
    assert rnd["phase"] == "dispute"
    assert (sub["status"], sub["accept_power"], sub["reject_power"], sub["committee_power"]) == ("pending", 42, 58, 100)
    # The dispute counts the same snapshot: 42 say the step reproduces, 58 that it does not; neither is 67.
    r = net.block([judge(net, big, [(0, 3, True)]), judge(net, small, [(0, 3, True)])] + [judge(net, v, [(0, 3, False)]) for v in honest])
    assert codes(r) == [("", 0)] * 4
    rnd = net.round(0)
    sub = rnd["submission_list"][0]
    claim = sub["claims"][0]
    assert (claim["valid_power"], claim["invalid_power"], claim["outcome"]) == (42, 58, "undecided")
    assert sub["status"] == "expired" and rnd["total_power"] == 100
    assert net.balance(net.trainers[0].address) == balance + PARAMS["check_fee"]  # its fee back; no reward minted


def test_minority_cannot_register_a_merge_by_leaving_after_voting(minority):
    """issue 11 defect 3 (merge): the same 42% registered an arbitrary checkpoint as the latest version."""
    net = minority
    big, small = net.vals[2], net.vals[3]
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {v: {0: "accept"} for v in net.vals})
    assert net.round()["phase"] == "merge"
    evil = tx.MsgAttestMerge(round=0, cid=cid("evil"), sha256=sha("evil"), bytes=10, held_out_loss_micro=1)
    merge_round(net, {big: evil, small: evil})  # the honest 58% stay silent: the commit window runs out
    r = net.block([reveal_merge(net, big, evil), undelegate(net, big, 4_000 - 100), reveal_merge(net, small, evil)])
    assert codes(r) == [("", 0), ("", 0), ("", 0)]
    assert json.loads(net.query("/registry/latest").value)["id"] == 0
    assert (net.round(0)["phase"], net.round(0)["version"]) == ("closed", None)  # every committer revealed: 42 of 100 registers nothing


def test_a_validator_that_joins_after_the_round_opened_does_not_vote(minority):
    """issue 11 defect 3: fresh stake bonded mid-round has no say in it (it could be the stake that just left):
    it sits on no committee, so it cannot commit verdicts, and it cannot judge the round's fraud claims."""
    net = minority
    newcomer = net.trainers[1]
    r = net.block([net.tx(newcomer, create_msg(newcomer, 9, 9_000, "late")),
                   submit(net, net.trainers[0])])
    assert codes(r) == [("", 0), ("", 0)]
    assert staking.get_validator(net.app.store.begin_block(), newcomer.address).tokens == 9_000  # the largest stake now
    until_phase(net, "commit")
    assert newcomer.address not in net.round()["auditors"]
    r = net.block([commit(net, newcomer, [])])
    assert codes(r) == [("training", 7)] and "sits on no committee of round 0" in r.tx_results[0].log
    audit_round(net, {net.vals[0]: {0: ("fraud", 2)}} | {v: {0: "accept"} for v in net.vals[1:]})
    assert net.round()["phase"] == "dispute"
    r = net.block([judge(net, newcomer, [(0, 2, False)])])
    assert codes(r) == [("training", 7)]
    assert "was not an active validator when round 0 opened" in r.tx_results[0].log


def test_a_wrong_voter_that_exits_is_still_penalized(tmp_path):
    """issue 11 defect 3: a validator that voted against the decision and undelegated everything in the same
    block used to vanish from the active set before the round ended, and paid nothing. Now: it reveals a fraud
    claim on honest work and leaves in the same block; the others refute the claim, and the penalty for a false
    claim comes out of the stake it is unbonding."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000])
    wrong = net.vals[0]
    net.block([net.tx(net.trainers[0], tx.MsgBondTrainer(amount=2_000))])
    net.block([submit(net, net.trainers[0])])
    until_phase(net, "commit")
    sealed = {wrong: [verdict(net, wrong, 0, "fraud", fraud_step=3)]} | {v: [verdict(net, v, 0, "no_gain")] for v in net.vals[1:]}
    net.block([commit(net, v, vs) for v, vs in sealed.items()])
    until_phase(net, "reveal")
    r = net.block([reveal(net, wrong, sealed[wrong]), undelegate(net, wrong, 1_000)] + [reveal(net, v, sealed[v]) for v in net.vals[1:]])
    assert codes(r) == [("", 0)] * 4
    assert net.round()["phase"] == "dispute"
    net.block([judge(net, v, [(0, 3, True)]) for v in net.vals[1:]])  # 30 of 40: the step reproduces
    balance = net.balance(wrong.address)
    penalized = []
    for _ in range(60):
        r = net.block([])
        penalized += [attrs(e) for e in events(r, "verifier_penalized")]
        if net.balance(wrong.address) != balance:
            break
    assert net.round(0)["submission_list"][0]["claims"][0]["outcome"] == "refuted"
    penalty = 1_000 * PARAMS["false_claim_penalty_bps"] // 10_000
    assert [(p["validator"], p["reason"], p["amount"]) for p in penalized] == [(wrong.address, "false_claim", str(penalty))]
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
    until_phase(net, "commit")
    assert net.bond(cheater)["locked"] == 2_000  # still locked while the committee audits it
    r = fraud_everywhere(net)
    assert attrs(events(r, "delta_rejected")[0])["slashed"] == "400"
    assert net.bond(cheater) == {"bonded": 1_600, "locked": 0, "unbonding": 0}
    r = net.block([net.tx(cheater, tx.MsgUnbondTrainer(amount=1_600))])  # decided: free again
    assert codes(r) == [("", 0)] and net.bond(cheater) == {"bonded": 0, "locked": 0, "unbonding": 1_600}


def test_a_full_round_takes_a_larger_bond_by_evicting_the_smallest(tmp_path):
    """issue 11 defect 6: minimum-bond accounts filled max_submissions at every round for fees only and locked
    honest trainers out. A strictly larger bond evicts the submission with the smallest bond (ties: the latest),
    whose lock and check fee are returned. While the round takes submissions nobody has audited any, so every
    submission is evictable, the first one included; once the window closes and committees are drawn, none is."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000], trainers=6, submission_blocks=10)
    squat, honest, late = net.trainers[:3], net.trainers[3], net.trainers[4:]
    net.block([net.tx(t, tx.MsgBondTrainer(amount=1_000)) for t in squat] + [net.tx(honest, tx.MsgBondTrainer(amount=5_000))]
              + [net.tx(t, tx.MsgBondTrainer(amount=1_000)) for t in late])
    net.block([submit(net, t) for t in squat])  # indices 0, 1, 2: the round is full
    equal = net.block([submit(net, late[0])])  # an equal bond evicts nothing
    assert codes(equal) == [("training", 10)]
    assert "the smallest bond in it is 1000ugrad; a larger trainer bond (1000ugrad now) takes a slot" in equal.tx_results[0].log

    paid = net.balance(squat[2].address)
    r = net.block([submit(net, honest)])
    assert codes(r) == [("", 0)]
    (evicted,) = events(r, "submission_evicted")
    assert attrs(evicted) == {"round": "0", "submission": "2", "trainer": squat[2].address, "bond": "1000", "by": honest.address}
    rnd = net.round()
    assert [(s["index"], s["trainer"], s["bond"]) for s in rnd["submission_list"]] == [
        (0, squat[0].address, 1_000), (1, squat[1].address, 1_000), (3, honest.address, 5_000)]
    assert (rnd["submissions"], rnd["next_index"]) == (3, 4)
    assert net.bond(squat[2]) == {"bonded": 1_000, "locked": 0, "unbonding": 0}
    assert net.balance(squat[2].address) == paid + PARAMS["check_fee"]  # the eviction refunds the check fee
    assert net.bond(honest)["locked"] == 5_000
    # First come is no protection, and an evicted trainer may come back with more.
    r = net.block([net.tx(late[1], tx.MsgBondTrainer(amount=1_000)), submit(net, late[1])])
    assert codes(r) == [("", 0), ("", 0)] and attrs(events(r, "submission_evicted")[0])["submission"] == "1"
    r = net.block([net.tx(squat[2], tx.MsgBondTrainer(amount=2_000)), submit(net, squat[2], tag="again")])
    assert codes(r) == [("", 0), ("", 0)] and attrs(events(r, "submission_evicted")[0])["submission"] == "0"
    assert [(s["index"], s["trainer"], s["bond"]) for s in net.round()["submission_list"]] == [
        (3, honest.address, 5_000), (4, late[1].address, 2_000), (5, squat[2].address, 3_000)]
    assert [net.bond(t)["locked"] for t in squat] == [0, 0, 3_000]

    rnd = until_phase(net, "commit")
    r = net.block([net.tx(late[0], tx.MsgBondTrainer(amount=9_000)), submit(net, late[0])])
    assert codes(r) == [("", 0), ("training", 2)]  # committees are drawn: nothing is evicted any more
    assert [s["index"] for s in rnd["submission_list"]] == [3, 4, 5] and all(s["committee"] for s in rnd["submission_list"])
    # An evicted index is never reused: a verdict naming one opens nothing.
    v0 = net.vals[0]
    ghost = [tx.AuditVerdict(submission=2, audit_signature=v0.sign(b"submission 2 is gone"))]
    net.block([commit(net, v0, ghost)])
    until_phase(net, "reveal")
    r = net.block([reveal(net, v0, ghost)])
    assert codes(r) == [("training", 13)] and "not on the committee of submission 2" in r.tx_results[0].log


def test_expired_and_accepted_submissions_release_their_lock(tmp_path):
    """issue 11 defect 6: a lock lasts until the submission is decided at the end of the reveal, or expires."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000])
    a, b = net.trainers[:2]
    net.block([net.tx(t, tx.MsgBondTrainer(amount=3_000)) for t in (a, b)])
    net.block([submit(net, a), submit(net, b)])
    assert net.bond(a)["locked"] == net.bond(b)["locked"] == 3_000
    until_phase(net, "commit")
    sealed = {v: [verdict(net, v, 0)] for v in net.vals}  # every auditor leaves b out
    net.block([commit(net, v, vs) for v, vs in sealed.items()])
    assert net.round()["phase"] == "reveal" and net.bond(a)["locked"] == net.bond(b)["locked"] == 3_000
    net.block([reveal(net, v, vs) for v, vs in sealed.items()])
    assert [s["status"] for s in net.round(0)["submission_list"]] == ["accepted", "expired"]
    assert net.bond(a) == net.bond(b) == {"bonded": 3_000, "locked": 0, "unbonding": 0}


def test_full_slash_with_a_full_attester_share_pays_everything_and_never_transfers_zero(tmp_path):
    """issue 11 defect 6 / 14: slash_bps = attester_share_bps = 10000 neither divides by zero nor moves 0."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000], slash_bps=10_000, attester_share_bps=10_000)
    cheater = net.trainers[0]
    net.block([net.tx(cheater, tx.MsgBondTrainer(amount=1_001))])
    net.block([submit(net, cheater)])
    audit_round(net, {v: {0: ("fraud", 5)} for v in net.vals})
    before = [net.balance(v.address) for v in net.vals]
    supply = bank.supply(net.app.store.begin_block())
    r = net.block([judge(net, v, [(0, 5, False)]) for v in net.vals])
    assert codes(r) == [("", 0)] * 3
    assert all(int(attrs(e)["amount"]) > 0 for e in events(r, "transfer") + events(r, "burned"))
    share = (PARAMS["check_fee"] + 1_001) // 3  # the three upheld claimants share the fee and the whole slash
    assert [net.balance(v.address) - b for v, b in zip(net.vals, before)] == [share - 1] * 3  # less the judge tx fee
    assert bank.supply(net.app.store.begin_block()) == supply - (PARAMS["check_fee"] + 1_001 - 3 * share)  # the remainder is burned
    assert net.bond(cheater) == {"bonded": 0, "locked": 0, "unbonding": 0}
    assert training.bonded_trainers(net.app.store.begin_block()) == 0


def test_no_slash_moves_nothing(tmp_path):
    """slash_bps = 0: a rejection releases the lock and moves no tokens out of the trainer pool (bank.transfer refuses 0)."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000], slash_bps=0)
    cheater = net.trainers[0]
    net.block([net.tx(cheater, tx.MsgBondTrainer(amount=1_000))])
    net.block([submit(net, cheater)])
    r = fraud_everywhere(net)
    assert attrs(events(r, "delta_rejected")[0])["slashed"] == "0"
    assert not [e for e in events(r, "transfer") if attrs(e)["sender"] == training.TRAINER_POOL]
    assert net.bond(cheater) == {"bonded": 1_000, "locked": 0, "unbonding": 0}


def test_a_zero_check_fee_takes_submissions(tmp_path):
    """check_fee = 0 is a valid param: a submission pays nothing into the pool (bank.transfer refuses 0; it used to
    make every submission fail with bank code 3), and deciding or evicting it moves nothing either."""
    net = make_chain(tmp_path, [1_000, 1_000, 2_000], check_fee=0, max_submissions=1)
    a, b = net.trainers[:2]
    net.block([net.tx(a, tx.MsgBondTrainer(amount=1_000)), net.tx(b, tx.MsgBondTrainer(amount=2_000))])
    r = net.block([submit(net, a)])
    assert codes(r) == [("", 0)]
    r = net.block([submit(net, b)])  # evicts a: no fee to refund
    assert codes(r) == [("", 0)] and events(r, "submission_evicted")
    audit_round(net, {v: {1: "accept"} for v in net.vals})
    assert net.round(0)["submission_list"][0]["status"] == "accepted"
    assert bank.balance(net.app.store.begin_block(), training.CHECK_FEE_POOL) == 0


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
    fraud_everywhere(net)  # slashed 200: below the minimum
    assert net.bond(t)["bonded"] == 800 and training.bonded_trainers(net.app.store.begin_block()) == 0
    until_phase(net, "closed")
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
    """issue 11 defect 12: every stored field is bounded by a param, a fixed format or a truncation: the grad
    commitments by steps <= MAX_STEPS, committees by the snapshot (<= max_validators), a verdict's reason and a
    kernel path by a length, a sample by audit_steps."""
    net = minority
    huge = "\u00e9" * 5_000
    r = net.block([
        submit(net, net.trainers[0], tag="d", bytes=2**64 - 1, loss_before_micro=2**64 - 1, loss_after_micro=0, state_bytes=PARAMS["max_state_bytes"],
               kernel_path="k" * 64),
        net.tx(net.trainers[1], tx.MsgBondTrainer(amount=2_000)),
        submit(net, net.trainers[1], kernel_path=huge),
        submit(net, net.trainers[1], kernel_path="k" * 65),
    ])
    assert codes(r) == [("", 0), ("", 0), ("training", 5), ("training", 5)]
    until_phase(net, "commit")
    v0, v1 = net.vals[:2]
    loud = verdict(net, v0, 0)
    loud.measured_error_ppm, loud.reason = 2**64 - 1, "r" * 120
    louder = verdict(net, v1, 0)
    louder.reason = "r" * 121
    net.block([commit(net, v0, [loud]), commit(net, v1, [louder])])
    until_phase(net, "reveal")
    r = net.block([reveal(net, v0, [loud]), reveal(net, v1, [louder])])
    assert codes(r) == [("", 0), ("training", 13)]
    state = net.app.store.begin_block()
    params, rnd = training.get_params(state), training.current_round(state)
    sub = training.get_submission(state, 0, 0)
    assert len(training.grad_commitments(state, 0, 0)) == training.audit.DIGEST_BYTES * params.steps and params.steps <= training.MAX_STEPS
    assert len(sub.committee) <= len(rnd.powers) <= staking.get_params(state).max_validators
    assert len(rnd.auditors) <= len(rnd.powers)
    # The commitments live apart, so a reveal rewrites a record whose size does not grow with k.
    assert len(state.get(training.SUBMISSION_PREFIX + (0).to_bytes(8, "big") * 2)) < 1_500 + 100 * len(sub.committee)
    (entry,) = training.audit_entries(state, 0, 0)
    assert len(entry.steps_checked) == params.audit_steps
    assert max(len(v) for _, v in state.iter_prefix(training.VERDICT_PREFIX)) < 1_000
    assert max(len(v) for _, v in state.iter_prefix(training.COMMITMENT_PREFIX)) < 200


def test_params_refuse_a_free_slot():
    with pytest.raises(ValueError, match="min_trainer_bond"):
        training.Params(min_trainer_bond=0).validate()
    training.Params(slash_bps=10_000, attester_share_bps=10_000).validate()


def test_params_bound_the_trajectory_the_sample_and_the_committee():
    """k is at most MAX_STEPS (its commitments sit in state), 0 < s <= k (s = k recomputes everything), a committee
    at most MAX_COMMITTEE, every window and cap positive, every new share at most 100%."""
    training.Params(steps=training.MAX_STEPS, audit_steps=training.MAX_STEPS, committee_size=training.MAX_COMMITTEE).validate()
    training.Params(steps=1, audit_steps=1, check_fee=0, verifier_reward_bps=10_000, unrevealed_penalty_bps=10_000,
                    fraud_proof_slash_bps=10_000, false_claim_penalty_bps=10_000).validate()
    bad = [{"steps": training.MAX_STEPS + 1}, {"audit_steps": 0}, {"steps": 8, "audit_steps": 9}, {"steps": 0},
           {"committee_size": training.MAX_COMMITTEE + 1}, {"max_state_bytes": 0}, {"fetch_seconds": 0}, {"verification_blocks": 0},
           {"reveal_blocks": 0}, {"dispute_blocks": 0}, {"verifier_reward_bps": 10_001}, {"unrevealed_penalty_bps": 10_001},
           {"fraud_proof_slash_bps": 10_001}, {"false_claim_penalty_bps": 10_001}, {"check_fee": -1}, {"step_tolerance_ppm": -1}]
    for params in bad:
        with pytest.raises(ValueError):
            training.Params(**params).validate()


def test_staking_holds_no_trainer_bonds():
    """issue 11 defect 6: the module that slashes trainer bonds owns them (no module reads another's storage)."""
    for name in ("bond_trainer", "unbond_trainer", "trainer_bond", "slash_trainer", "TRAINER_POOL", "TRAINER_PREFIX"):
        assert not hasattr(staking, name), name
    assert training.TRAINER_POOL == bank.module_address("trainer_pool")
    assert crypto.parse_address(training.TRAINER_POOL) == training.TRAINER_POOL
