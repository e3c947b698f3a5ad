"""Issue 12, "Tests": adversarial auditors against the chain's sampled audits, each outcome asserted.

Through real txs and blocks (test_training's TrainingChain: supply, pools and locks checked after every block):
an always-accept auditor without proofs, a copying auditor, a minority of a committee, validators off the
committees, fraud claims on a step, the endpoints (step k) and unavailable content (k + 1), upheld and refuted,
and where samples come from (the beacon and each validator's own signature). No worker recomputes anything:
test_training's `proof` stands in for an honest gradient proof.
"""

import hashlib

import pytest

from abci_app import tx
from abci_app.modules import audit, training
from tests.unit.test_training import (PARAMS, audit_round, bond_all, codes, commit, judge, make_net, reveal, submit, tokens, until_phase,
                                      verdict)

K = PARAMS["steps"]


@pytest.fixture
def net(tmp_path):
    chain = make_net(tmp_path)  # powers 10, 10, 20: every committee is all three (quorum 27 of 40)
    yield chain
    chain.app.close()


@pytest.fixture
def pairs(tmp_path):
    """Four validators of equal power and committees of two: each submission is audited by half of them."""
    chain = make_net(tmp_path, self_bonds=(1_000, 1_000, 1_000, 1_000), committee_size=2)
    yield chain
    chain.app.close()


def after(stake: int, *bps: int) -> int:
    for b in bps:
        stake -= stake * b // 10_000
    return stake


def test_an_always_accept_auditor_without_proofs_is_never_paid_and_pays_for_an_upheld_fraud(net):
    """Accept without recomputing, no proofs (claiming another kernel path): its accepts count, but it is never paid,
    and when another member's fraud claim on the endpoints (which every auditor checks) is upheld it pays
    fraud_proof_slash_bps. The honest auditors earn the check fees, the verifier reward and the claimants' share."""
    bond_all(net)
    net.block([submit(net, net.trainers[0]), submit(net, net.trainers[1])])  # 0 honest, 1 with a made-up final delta
    v0, lazy, v2 = net.vals
    start = {v: net.balance(v.address) for v in net.vals}
    staked = {v: tokens(net, v) for v in net.vals}
    audit_round(net, {v0: {0: "accept", 1: ("fraud", K)}, lazy: {0: ("accept", "none"), 1: ("accept", "none")}, v2: {0: "accept", 1: ("fraud", K)}})
    assert net.round()["phase"] == "dispute" and net.round()["submission_list"][0]["status"] == "accepted"
    net.block([judge(net, v, [(1, K, False)]) for v in (v0, v2)])  # 30 of 40: the endpoints do not check out
    rnd = until_phase(net, "merge")
    assert [s["status"] for s in rnd["submission_list"]] == ["accepted", "rejected"]
    assert net.balance(lazy.address) == start[lazy] - 2  # its commit and reveal fees; never paid
    assert tokens(net, lazy) == after(staked[lazy], PARAMS["fraud_proof_slash_bps"])
    honest_pay = (PARAMS["check_fee"] + PARAMS["reward"] * PARAMS["verifier_reward_bps"] // 10_000) // 2
    claim_pay = (PARAMS["check_fee"] + 400 * PARAMS["attester_share_bps"] // 10_000) // 2
    for v in (v0, v2):
        assert net.balance(v.address) - start[v] == honest_pay + claim_pay - 3  # less the commit, reveal and judge fees
        assert tokens(net, v) == staked[v]


def test_a_copying_auditor_cannot_open_its_commitment_with_verdicts_it_saw_later(net):
    """A copier commits to nothing it knows (verdicts are sealed until every member committed), then, once an honest
    auditor revealed, tries to reveal a copy of those verdicts, and then its own verdicts made late: neither opens
    the commitment it sealed before. It ends unrevealed: no pay, unrevealed_penalty_bps."""
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    until_phase(net, "commit")
    honest, copier, other = net.vals
    sealed = {honest: [verdict(net, honest, 0)], other: [verdict(net, other, 0)]}
    net.block([commit(net, v, vs) for v, vs in sealed.items()]
              + [net.tx(copier, tx.MsgCommitVerdicts(round=0, commitment=hashlib.sha256(b"whatever the others say").digest()))])
    until_phase(net, "reveal")
    net.block([reveal(net, honest, sealed[honest])])
    seen = training.audit_entries(net.app.store.begin_block(), 0, 0)
    assert [e.validator for e in seen] == [honest.address]  # public now: what a copier would copy
    balance, staked = net.balance(copier.address), tokens(net, copier)
    r = net.block([reveal(net, copier, sealed[honest]), reveal(net, copier, [verdict(net, copier, 0)])])
    assert codes(r) == [("training", 13), ("training", 13)] and all("do not open" in x.log for x in r.tx_results)
    net.block([reveal(net, other, sealed[other])])
    until_phase(net, "merge")
    assert copier.address not in net.round(0)["revealed"]
    assert net.balance(copier.address) == balance - 2  # its two refused reveals' fees; no share of the pay
    assert tokens(net, copier) == after(staked, PARAMS["unrevealed_penalty_bps"])


def test_a_minority_of_the_committee_cannot_accept_and_outsiders_cannot_commit(pairs):
    """Committees of two among four equal validators: one member is half its committee's power, short of the 2/3
    quorum, so its accept alone decides nothing (the submission expires, the fee goes back); the two validators off
    the committee may not commit verdicts at all, so they cannot make up the quorum."""
    net = pairs
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    balance = net.balance(net.trainers[0].address)
    rnd = until_phase(net, "commit")
    members = [op for op, _ in rnd["submission_list"][0]["committee"]]
    inside = [v for v in net.vals if v.address in members]
    outside = [v for v in net.vals if v.address not in members]
    assert len(inside) == len(outside) == 2 and rnd["auditors"] == members
    r = net.block([commit(net, v, [verdict(net, v, 0)]) for v in outside])
    assert codes(r) == [("training", 7)] * 2 and "sits on no committee of round 0" in r.tx_results[0].log
    mine = [verdict(net, inside[0], 0)]
    net.block([commit(net, inside[0], mine)])
    until_phase(net, "reveal")
    net.block([reveal(net, inside[0], mine)])
    until_phase(net, "closed")
    sub = net.round(0)["submission_list"][0]
    assert (sub["status"], sub["accept_power"], sub["committee_power"]) == ("expired", 10, 20)
    assert net.balance(net.trainers[0].address) == balance + PARAMS["check_fee"]


def test_an_auditor_reveals_only_on_its_own_committees(pairs):
    """An auditor of one submission cannot slip a verdict on another submission, whose committee it is not on,
    into its reveal: the whole reveal is refused."""
    net = pairs
    bond_all(net)
    net.block([submit(net, t) for t in net.trainers])
    rnd = until_phase(net, "commit")
    committees = {s["index"]: [op for op, _ in s["committee"]] for s in rnd["submission_list"]}
    auditor, mine, foreign = next((v, i, j) for v in net.vals for i in committees for j in committees
                                  if v.address in committees[i] and v.address not in committees[j])
    verdicts = sorted([verdict(net, auditor, mine), verdict(net, auditor, foreign)], key=lambda v: v.submission)
    net.block([commit(net, auditor, verdicts)])
    until_phase(net, "reveal")
    r = net.block([reveal(net, auditor, verdicts)])
    assert codes(r) == [("training", 13)] and f"not on the committee of submission {foreign}" in r.tx_results[0].log
    assert all(s["verdicts"] == [] for s in net.round(0)["submission_list"])


SAMPLED, MISSED = -1, -2  # the first step of the first accepter's own sample; a middle step neither accepter sampled


@pytest.mark.parametrize("step", [0, MISSED, K - 1, SAMPLED, K, K + 1], ids=["first-step", "missed-middle-step", "last-step", "sampled-step", "endpoints", "unavailable"])
@pytest.mark.parametrize("upheld", [True, False], ids=["upheld", "refuted"])
def test_fraud_claims_on_steps_endpoints_and_availability_are_judged_alike(net, step, upheld):
    """One member claims `step` is bad (k: the endpoints or manifest; k + 1: content it could not fetch in time);
    the others said accept. Upheld by the snapshot's quorum: rejected, slash_bps of the bond slashed, the claimant
    paid, and each accepter charged fraud_proof_slash_bps if the bad step was in its own sample or on the endpoints
    (an honest miss is not charged). Refuted: a claim against honest work costs its sender false_claim_penalty_bps
    (an availability claim excepted), and the work is accepted on its merits with the bond whole."""
    bond_all(net)
    claimant, a, b = net.vals
    net.block([submit(net, net.trainers[0])])
    if step in (SAMPLED, MISSED):
        until_phase(net, "commit")
        drawn = {v: audit.audit_sample(verdict(net, v, 0).audit_signature, K, PARAMS["audit_steps"]) for v in (a, b)}
        step = drawn[a][0] if step == SAMPLED else next(i for i in range(1, K - 1) if i not in drawn[a] + drawn[b])
    audit_round(net, {claimant: {0: ("fraud", step)}, a: {0: "accept"}, b: {0: "accept"}})
    assert net.round()["phase"] == "dispute" and net.round()["claims"] == 1
    samples = {e["validator"]: e["steps_checked"] for e in net.round()["submission_list"][0]["verdicts"]}
    staked = {v: tokens(net, v) for v in net.vals}
    balance = net.balance(claimant.address)
    net.block([judge(net, v, [(0, step, not upheld)]) for v in net.vals[1:]])  # a and b: 30 of 40
    until_phase(net, "closed" if upheld else "merge")
    sub = net.round(0)["submission_list"][0]
    assert sub["claims"][0]["outcome"] == ("upheld" if upheld else "refuted")
    if upheld:
        assert sub["status"] == "rejected" and net.bond(net.trainers[0]) == {"bonded": 1_600, "locked": 0, "unbonding": 0}
        assert net.balance(claimant.address) == balance + PARAMS["check_fee"] + 200  # sole claimant: the fee and half the slash
        for v in (a, b):
            missed = step != K and step not in samples[v.address]
            assert tokens(net, v) == (staked[v] if missed else after(staked[v], PARAMS["fraud_proof_slash_bps"])), (step, samples)
            # ... and it judged the claim upheld: agreeing with the quorum costs nothing more
        assert tokens(net, claimant) == staked[claimant]
    else:
        assert sub["status"] == "accepted" and net.bond(net.trainers[0]) == {"bonded": 2_000, "locked": 0, "unbonding": 0}
        # A refuted availability claim is free (content withheld at the audit may be served to the judges: review R2).
        charge = 0 if step == K + 1 else PARAMS["false_claim_penalty_bps"]
        assert tokens(net, claimant) == after(staked[claimant], charge)
        assert net.balance(claimant.address) == balance  # nothing paid to a refuted claimant
        assert [tokens(net, v) for v in (a, b)] == [staked[a], staked[b]]


def test_a_fraud_claim_beyond_unavailable_is_refused(net):
    """k + 3 names nothing; k + 2 (a drawn dataset unavailable) is refused in a round whose every step draws from the
    round's own dataset: no owner could have withheld anything the sample needs."""
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    until_phase(net, "commit")
    v0, v1 = net.vals[:2]
    beyond, dataset = [verdict(net, v0, 0, "fraud", fraud_step=K + 3)], [verdict(net, v1, 0, "fraud", fraud_step=K + 2)]
    net.block([commit(net, v0, beyond), commit(net, v1, dataset)])
    until_phase(net, "reveal")
    r = net.block([reveal(net, v0, beyond), reveal(net, v1, dataset)])
    assert codes(r) == [("training", 13)] * 2 and f"names a step 0..{K + 2}" in r.tx_results[0].log
    assert "draws from a dataset other than the round's own" in r.tx_results[1].log


def test_samples_come_from_the_beacon_and_each_validators_own_signature(pairs):
    """Which steps a validator checks is drawn from its deterministic ed25519 signature over the submission and the
    beacon (the hash of the block that closed the window): the same validator always gets the same sample of the
    same submission (the chain recomputes it from the revealed signature), two validators get different samples,
    and another beacon (a proposer grinding the closing block) moves both the committees and the samples."""
    net = pairs
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    rnd = until_phase(net, "commit")
    sub = rnd["submission_list"][0]
    s = training.get_params(net.app.store.begin_block()).audit_steps

    def sample(val, beacon):
        message = audit.audit_message(0, 0, sub["trajectory_sha256"], beacon)
        signature = val.sign(message)
        assert val.sign(message) == signature  # deterministic: nobody, the validator included, can steer it
        return audit.audit_sample(signature, sub["steps"], s)

    samples = {v.address: sample(v, rnd["beacon"]) for v in net.vals}
    assert all(len(set(x)) == s and all(0 <= i < K for i in x) for x in samples.values())
    assert len({tuple(x) for x in samples.values()}) > 1  # not one sample for everyone: a trainer cannot fake around it
    beacons = [hashlib.sha256(b"grind %d" % i).hexdigest() for i in range(30)]
    assert len({tuple(sample(net.vals[0], b)) for b in beacons}) > 1
    assert len({tuple(op for op, _ in training.committee(rnd["powers"], b, 0, 0, 2)) for b in beacons}) > 1
    # The chain records, for each revealed verdict, the sample its signature draws.
    members = [v for v in net.vals if v.address in dict(sub["committee"])]
    audit_round(net, {v: {0: "accept"} for v in members})
    recorded = {e["validator"]: e["steps_checked"] for e in net.round(0)["submission_list"][0]["verdicts"]}
    assert recorded == {v.address: samples[v.address] for v in members}
