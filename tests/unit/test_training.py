"""Training rounds on chain: windows, submissions, sampled audits (commit, reveal, dispute), decisions, pay, slashing, merges."""

import hashlib
import json

import pytest

from abci_app import crypto, tx
from abci_app.modules import audit, bank, staking, training
from abci_app.context import Context
from tests.unit.conftest import Chain, fixed_key
from tests.unit.test_staking import check_invariants, cons_key

PARAMS = {"enabled": True, "submission_blocks": 4, "verification_blocks": 6, "reveal_blocks": 4, "dispute_blocks": 4, "merge_blocks": 4,
          "steps": 8, "audit_steps": 2, "reward": 500, "slash_bps": 2_000, "attester_share_bps": 5_000, "verifier_penalty_bps": 100,
          "check_fee": 90, "verifier_reward_bps": 1_000, "unrevealed_penalty_bps": 200, "fraud_proof_slash_bps": 1_000,
          "false_claim_penalty_bps": 300, "min_trainer_bond": 1_000, "max_submissions": 3, "max_state_bytes": 1_000}
CID = "bafkrei" + "a" * 52


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def cid(tag: str) -> str:
    return "bafkrei" + hashlib.sha256(tag.encode()).hexdigest()[:52].translate(str.maketrans("0189", "2345"))


def check_trainer_invariants(chain: Chain) -> None:
    """The trainer pool holds exactly the bonded and unbonding collateral; the bonded-trainer count and the
    unbonding totals match the records; locks never exceed bonds and match the undecided submissions. The count is
    the trainers flagged counted: those bonded at least min_trainer_bond, unless gov changed that minimum (a test
    that does sets `min_bond_changed`), after which a trainer is re-judged when its bond changes."""
    state = chain.app.store.begin_block()
    params = training.get_params(state)
    bonds = {crypto.bech32_encode("gc", k[len(training.TRAINER_PREFIX):]): training.TrainerBond(**json.loads(v))
             for k, v in state.iter_prefix(training.TRAINER_PREFIX)}
    assert bank.balance(state, training.TRAINER_POOL) == sum(b.bonded + b.unbonding for b in bonds.values())
    counted = {crypto.bech32_encode("gc", k[len(training.COUNTED_PREFIX):]) for k, _ in state.iter_prefix(training.COUNTED_PREFIX)}
    assert training.bonded_trainers(state) == len(counted) and counted <= set(bonds)
    if not getattr(chain, "min_bond_changed", False):
        assert counted == {t for t, b in bonds.items() if b.bonded >= params.min_trainer_bond}
    unbonding: dict[str, int] = {}
    for entry in training.trainer_unbondings(state):
        unbonding[entry["trainer"]] = unbonding.get(entry["trainer"], 0) + entry["amount"]
    assert unbonding == {t: b.unbonding for t, b in bonds.items() if b.unbonding}
    rnd = training.current_round(state)
    pending = [s for s in training.submissions(state, rnd.id) if s.status == "pending"] if rnd else []
    assert {t: b.locked for t, b in bonds.items() if b.locked} == {s.trainer: s.bond for s in pending}
    assert all(0 <= b.locked <= b.bonded for b in bonds.values())
    # The check-fee pool holds exactly the fees of the round's undecided submissions.
    assert bank.balance(state, training.CHECK_FEE_POOL) == sum(s.check_fee for s in pending)


class TrainingChain(Chain):
    def block(self, txs, **kwargs):
        response = super().block(txs, **kwargs)
        check_invariants(self)
        check_trainer_invariants(self)
        return response

    def bond(self, trainer) -> dict:
        return json.loads(self.query("/training/trainer_bond", trainer.address).value or b'{"bonded": 0, "locked": 0, "unbonding": 0}')

    def round(self, round_id=None) -> dict:
        if round_id is None:
            return json.loads(self.query("/training/current").value)
        return json.loads(self.query("/training/round_detail", str(round_id)).value)


@pytest.fixture
def net(tmp_path):
    chain = make_net(tmp_path)
    yield chain
    chain.app.close()


def make_net(tmp_path, self_bonds=(1_000, 1_000, 2_000), trainers: int = 3, staking_params: dict | None = None, **params):
    """Validators with these self-bonds (power = bond / 100; by default 10, 10, 20), `trainers` funded
    trainer accounts, and training PARAMS | params."""
    vals = [fixed_key(i) for i in range(1, 1 + len(self_bonds))]
    trainers = [fixed_key(i) for i in range(10, 10 + trainers)]
    chain = TrainingChain(
        tmp_path / "app", {k.address: 100_000 for k in vals + trainers},
        staking={"params": {"min_self_bond": 100, "power_unit": 100, "downtime_max_missed": 1000} | (staking_params or {}),
                 "validators": [{"operator": v.address, "pubkey": cons_key(i).hex(), "self_bond": b} for i, (v, b) in enumerate(zip(vals, self_bonds))]},
        datasets={"datasets": [{"name": "kjv", "cid": CID, "sha256": sha("corpus"), "licence": "public-domain", "bytes": 100, "tokens": 100, "tokenizer": "bytes"}]},
        registry={"versions": [{"cid": cid("v0"), "sha256": sha("v0"), "bytes": 10, "family": "tiny-gpt", "config": {"n_layer": 1}, "dataset_ids": [0], "licence": "Apache-2.0"}]},
        training={"params": PARAMS | params},
    )
    chain.vals, chain.trainers = vals, trainers
    return chain


def codes(response):
    return [(r.codespace, r.code) for r in response.tx_results]


def bond_all(net):
    return net.block([net.tx(t, tx.MsgBondTrainer(amount=2_000)) for t in net.trainers])


def proof(trainer_address: str, step: int) -> bytes:
    """The gradient proof an honest recomputation of `step` gives for this trainer's submission (stands in for torch)."""
    return hashlib.sha256(f"grad/{trainer_address}/{step}".encode()).digest()


def submit(net, trainer, round_id=0, tag=None, steps=None, **fields):
    tag = tag or trainer.address
    steps = PARAMS["steps"] if steps is None else steps
    msg = dict(round=round_id, cid=cid(tag), sha256=sha(tag), bytes=100, loss_before_micro=2_000_000, loss_after_micro=1_900_000, steps=steps,
               kernel_path="torch-2.15 AVX2", trajectory_cid=cid("t" + tag), trajectory_sha256=sha("t" + tag), state_bytes=500,
               grad_commitments=b"".join(audit.grad_commitment(proof(trainer.address, i)) for i in range(steps)))
    return net.tx(trainer, tx.MsgSubmitDelta(**(msg | fields)))


def verdict(net, val, index, kind="accept", proofs="right", fraud_step=0, round_id=0):
    """A committee member's AuditVerdict on submission `index`: a real signature, its real sample and, for a
    valid verdict, the proofs an honest recomputation gives ("right"), none ("none", another kernel path) or made up ("wrong")."""
    rnd = net.round(round_id)
    sub = next(s for s in rnd["submission_list"] if s["index"] == index)
    signature = val.sign(audit.audit_message(round_id, index, sub["trajectory_sha256"], rnd["beacon"]))
    sample = audit.audit_sample(signature, sub["steps"], rnd["params"]["audit_steps"])  # the round's, as an honest auditor draws it
    v = tx.AuditVerdict(submission=index, verdict=training.VERDICTS.index(kind), audit_signature=signature, fraud_step=fraud_step)
    if kind != "fraud" and proofs != "none":
        v.step_proofs.extend(proof(sub["trainer"], i) if proofs == "right" else hashlib.sha256(b"guess%d" % i).digest() for i in sample)
    return v


def salt_of(val) -> bytes:
    return hashlib.sha256(b"salt" + val.pubkey).digest()


def commit(net, val, verdicts, round_id=0, salt=None):
    sealed = training.verdicts_commitment(round_id, salt or salt_of(val), val.pubkey, verdicts)
    return net.tx(val, tx.MsgCommitVerdicts(round=round_id, commitment=sealed))


def reveal(net, val, verdicts, round_id=0, salt=None, pubkey=None):
    return net.tx(val, tx.MsgRevealVerdicts(round=round_id, salt=salt or salt_of(val), operator_pubkey=pubkey or val.pubkey, verdicts=verdicts))


def judge(net, val, judgements, round_id=0):
    """judgements: [(submission, step, valid)]."""
    return net.tx(val, tx.MsgJudgeClaims(round=round_id, judgements=[tx.ClaimJudgement(submission=i, step=s, valid=v) for i, s, v in judgements]))


def until_phase(net, phase, round_id=0, limit=60):
    for _ in range(limit):
        if net.round(round_id)["phase"] == phase:
            return net.round(round_id)
        net.block([])
    raise AssertionError(f"round {round_id} never reached {phase} (now {net.round(round_id)['phase']})")


def audit_round(net, plan, round_id=0):
    """Run the commit and reveal phases: plan = {validator key: {submission index: kind or (kind, proofs) or ("fraud", step)}}.
    Returns the verdict lists each validator committed."""
    until_phase(net, "commit", round_id)
    sealed = {}
    for val, entries in plan.items():
        vs = []
        for index, kind in sorted(entries.items()):
            if isinstance(kind, tuple) and kind[0] == "fraud":
                vs.append(verdict(net, val, index, "fraud", fraud_step=kind[1], round_id=round_id))
            elif isinstance(kind, tuple):
                vs.append(verdict(net, val, index, kind[0], proofs=kind[1], round_id=round_id))
            else:
                vs.append(verdict(net, val, index, kind, round_id=round_id))
        sealed[val] = vs
    assert codes(net.block([commit(net, val, vs, round_id) for val, vs in sealed.items()])) == [("", 0)] * len(sealed)
    until_phase(net, "reveal", round_id)
    assert codes(net.block([reveal(net, val, vs, round_id) for val, vs in sealed.items()])) == [("", 0)] * len(sealed)
    return sealed


def sealed_vote(val, vote):
    """`vote` with the salt `val` opens its merge commitment with."""
    out = tx.MsgAttestMerge()
    out.CopyFrom(vote)
    out.salt = hashlib.sha256(b"merge salt" + val.pubkey).digest()
    return out


def commit_merge(net, val, vote, round_id=0):
    return net.tx(val, tx.MsgCommitMerge(round=round_id, commitment=training.merge_commitment(round_id, val.address, sealed_vote(val, vote))))


def reveal_merge(net, val, vote):
    return net.tx(val, sealed_vote(val, vote))


def merge_round(net, votes, round_id=0):
    """Commit every validator's merge vote ({key: MsgAttestMerge}), then wait for the reveal phase."""
    until_phase(net, "merge", round_id)
    assert codes(net.block([commit_merge(net, v, vote, round_id) for v, vote in votes.items()])) == [("", 0)] * len(votes)
    until_phase(net, "merge_reveal", round_id)


def tokens(net, val) -> int:
    return staking.get_validator(net.app.store.begin_block(), val.address).tokens


def test_no_round_without_a_bonded_trainer(net):
    for _ in range(3):
        net.block([])
    assert net.round() is None


def test_round_opens_with_a_seed_from_the_block(net):
    bond_all(net)
    rnd = net.round()
    assert (rnd["id"], rnd["phase"], rnd["base_version"], rnd["open_height"]) == (0, "submit", 0, net.height + 1)
    assert rnd["seed"] == training.round_seed(hashlib.sha256(b"block %d" % net.height).digest(), 0)
    assert rnd["submit_until"] == net.height + 1 + PARAMS["submission_blocks"]


def test_submission_rules(net):
    bond_all(net)
    outsider = fixed_key(20)
    net.block([net.send_tx(net.vals[0], outsider.address, 1_000)])
    r = net.block([
        submit(net, net.trainers[0]),
        submit(net, net.trainers[0], tag="again"),
        submit(net, outsider),
        submit(net, net.trainers[1], round_id=5),
        submit(net, net.trainers[1], steps=3),
        net.tx(net.trainers[2], tx.MsgSubmitDelta(round=0, cid="Qmbad", sha256=sha("x"), bytes=1, steps=PARAMS["steps"])),
        submit(net, net.trainers[1], trajectory_cid="Qmbad"),
        submit(net, net.trainers[1], state_bytes=PARAMS["max_state_bytes"] + 1),
        submit(net, net.trainers[1], state_bytes=0),
        submit(net, net.trainers[1], grad_commitments=b"\0" * 31),
        submit(net, net.trainers[1], kernel_path="torch\n"),
    ])
    assert codes(r) == [("", 0), ("training", 4), ("training", 3), ("training", 1)] + [("training", 5)] * 7
    assert all(res.log for res in r.tx_results[1:])
    assert "max_state_bytes" in r.tx_results[7].log
    rnd = net.round()
    assert rnd["submissions"] == 1 and rnd["submission_list"][0]["trainer"] == net.trainers[0].address
    assert rnd["submission_list"][0]["check_fee"] == PARAMS["check_fee"]


def test_submission_after_the_window_is_refused(net):
    bond_all(net)
    submit_until = net.round()["submit_until"]
    while net.height < submit_until:
        net.block([])
    r = net.block([submit(net, net.trainers[0])])
    assert codes(r) == [("training", 1)]  # round 0 closed empty; round 1 is open now
    assert net.round(0)["phase"] == "closed" and net.round()["id"] == 1


def test_the_window_closing_block_fixes_the_beacon_and_the_committees(tmp_path):
    """Committees are drawn after every submission is final, from the block that closed the window, by stake."""
    net = make_net(tmp_path, self_bonds=(1_000, 1_000, 2_000, 3_000), committee_size=2)
    bond_all(net)
    net.block([submit(net, t) for t in net.trainers])
    rnd = until_phase(net, "commit")
    closing = rnd["submit_until"] - 1
    assert rnd["beacon"] == hashlib.sha256(b"gradchain/beacon/v1" + hashlib.sha256(b"block %d" % closing).digest() + (0).to_bytes(8, "big")).hexdigest()
    for sub in rnd["submission_list"]:
        assert sub["committee"] == training.committee(rnd["powers"], rnd["beacon"], 0, sub["index"], 2)
        assert len(sub["committee"]) == 2 and sub["committee_power"] == sum(p for _, p in sub["committee"])
    assert rnd["auditors"] == sorted({op for s in rnd["submission_list"] for op, _ in s["committee"]}, key=crypto.address_raw)
    # By stake: over many beacons the largest validator sits on more committees than the smallest.
    counts = {op: 0 for op, _ in rnd["powers"]}
    for i in range(300):
        for op, _ in training.committee(rnd["powers"], hashlib.sha256(b"%d" % i).hexdigest(), 0, 0, 2):
            counts[op] += 1
    by_power = [counts[op] for op, _ in sorted(rnd["powers"], key=lambda p: p[1])]
    assert by_power[0] < by_power[-1] and sum(by_power) == 600
    net.app.close()


def test_honest_round_accepts_and_pays_the_proven_auditors(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    trainer_before = net.balance(net.trainers[0].address)
    before = {v: net.balance(v.address) for v in net.vals}
    # vals[0] proves its steps; vals[1] ran on another kernel path (no proofs: counts, not paid); vals[2] proves.
    audit_round(net, {net.vals[0]: {0: "accept"}, net.vals[1]: {0: ("accept", "none")}, net.vals[2]: {0: "accept"}})
    rnd = net.round(0)
    sub = rnd["submission_list"][0]
    assert sub["status"] == "accepted" and rnd["phase"] == "merge" and rnd["accepted"] == [0]
    assert net.balance(net.trainers[0].address) == trainer_before + PARAMS["reward"]
    pay = (PARAMS["check_fee"] + PARAMS["reward"] * PARAMS["verifier_reward_bps"] // 10_000) // 2  # two proven auditors
    fees = 2  # a commit and a reveal tx, 1 each
    assert [net.balance(v.address) - before[v] for v in net.vals] == [pay - fees, -fees, pay - fees]
    assert {e["validator"]: (e["proven"], e["proof_ok"]) for e in sub["verdicts"]} == {
        net.vals[0].address: (True, True), net.vals[1].address: (False, False), net.vals[2].address: (True, True)}


def test_valid_work_that_does_not_help_is_not_merged_and_keeps_its_bond(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {v: {0: "no_gain"} for v in net.vals})
    assert net.round(0)["submission_list"][0]["status"] == "not_merged"
    assert net.bond(net.trainers[0]) == {"bonded": 2_000, "locked": 0, "unbonding": 0}
    assert net.round(0)["phase"] == "closed"


def test_accept_short_of_the_committee_quorum_with_no_gain_is_not_merged(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {net.vals[0]: {0: "accept"}, net.vals[1]: {0: "no_gain"}, net.vals[2]: {0: "no_gain"}})
    assert net.round(0)["submission_list"][0]["status"] == "not_merged"


def test_an_upheld_fraud_claim_rejects_slashes_and_charges_the_auditors_who_called_it_valid(net):
    cheater = net.trainers[1]
    bond_all(net)
    net.block([submit(net, cheater)])
    # vals[0] sampled the faked step 5 and claims it; vals[1] and vals[2] (lazy, or unlucky) said accept.
    audit_round(net, {net.vals[0]: {0: ("fraud", 5)}, net.vals[1]: {0: "accept"}, net.vals[2]: {0: "accept"}})
    rnd = net.round(0)
    assert rnd["phase"] == "dispute" and rnd["claims"] == 1
    staked = {v: tokens(net, v) for v in net.vals}
    before = {v: net.balance(v.address) for v in net.vals}
    # Everyone recomputes step 5: it does not reproduce.
    net.block([judge(net, v, [(0, 5, False)]) for v in net.vals])
    rnd = net.round(0)
    sub = rnd["submission_list"][0]
    assert sub["status"] == "rejected" and sub["claims"][0]["outcome"] == "upheld" and rnd["phase"] == "closed"
    assert net.bond(cheater) == {"bonded": 2_000 - 400, "locked": 0, "unbonding": 0}
    # The claimant gets the check fee and half of the 400 slashed; the rest is burned.
    assert net.balance(net.vals[0].address) - before[net.vals[0]] == PARAMS["check_fee"] + 200 - 1
    # An accept whose own sample held step 5 had to see it: charged hard. One whose sample missed it made an honest miss.
    checked = {e["validator"]: e["steps_checked"] for e in sub["verdicts"]}
    for v in net.vals[1:]:
        charge = staked[v] * PARAMS["fraud_proof_slash_bps"] // 10_000 if 5 in checked[v.address] else 0
        assert tokens(net, v) == staked[v] - charge, (checked[v.address], charge)
    assert tokens(net, net.vals[0]) == staked[net.vals[0]]


def test_an_upheld_endpoint_claim_charges_every_accept_and_every_silent_committer(net):
    """Every auditor checks the endpoints (state 0 is the base, the delta is w_k - w_0), so an accept on a bad
    endpoint is never an honest miss; a member that committed and then kept quiet pays the same."""
    bond_all(net)
    net.block([submit(net, net.trainers[1])])
    until_phase(net, "commit")
    sealed = {v: [verdict(net, v, 0, "fraud", fraud_step=PARAMS["steps"]) if v is net.vals[0] else verdict(net, v, 0)] for v in net.vals}
    net.block([commit(net, v, vs) for v, vs in sealed.items()])
    until_phase(net, "reveal")
    net.block([reveal(net, v, sealed[v]) for v in net.vals[:2]])  # vals[2] committed and stays silent
    until_phase(net, "dispute")
    staked = {v: tokens(net, v) for v in net.vals}
    net.block([judge(net, v, [(0, PARAMS["steps"], False)]) for v in net.vals])
    assert net.round(0)["submission_list"][0]["status"] == "rejected"
    hard = PARAMS["fraud_proof_slash_bps"]
    assert tokens(net, net.vals[0]) == staked[net.vals[0]]
    assert tokens(net, net.vals[1]) == staked[net.vals[1]] - staked[net.vals[1]] * hard // 10_000
    assert tokens(net, net.vals[2]) == staked[net.vals[2]] - staked[net.vals[2]] * hard // 10_000  # on top of its unrevealed charge


def test_a_refuted_fraud_claim_costs_its_sender_and_the_work_is_decided_on_its_merits(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {net.vals[0]: {0: ("fraud", 3)}, net.vals[1]: {0: "accept"}, net.vals[2]: {0: "accept"}})
    staked = {v: tokens(net, v) for v in net.vals}
    net.block([judge(net, v, [(0, 3, True)]) for v in net.vals[1:]])  # 30 of 40: the step reproduces
    until_phase(net, "merge")
    sub = net.round(0)["submission_list"][0]
    assert sub["status"] == "accepted" and sub["claims"][0]["outcome"] == "refuted"
    assert tokens(net, net.vals[0]) == staked[net.vals[0]] - staked[net.vals[0]] * PARAMS["false_claim_penalty_bps"] // 10_000
    assert [tokens(net, v) for v in net.vals[1:]] == [staked[v] for v in net.vals[1:]]


def test_an_undecided_claim_expires_the_submission_and_absent_judges_pay(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {net.vals[0]: {0: ("fraud", 8)}, net.vals[1]: {0: "accept"}, net.vals[2]: {0: "accept"}})  # 8 = k: the endpoints
    staked = {v: tokens(net, v) for v in net.vals}
    net.block([judge(net, net.vals[0], [(0, 8, False)])])
    until_phase(net, "closed")
    sub = net.round(0)["submission_list"][0]
    assert sub["status"] == "expired" and sub["claims"][0]["outcome"] == "undecided"
    assert net.bond(net.trainers[0])["locked"] == 0
    for v in net.vals[1:]:
        assert tokens(net, v) == staked[v] - staked[v] * PARAMS["verifier_penalty_bps"] // 10_000
    assert tokens(net, net.vals[0]) == staked[net.vals[0]]


def test_an_auditor_that_commits_and_never_reveals_pays_per_entry(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0]), submit(net, net.trainers[1])])
    until_phase(net, "commit")
    sealed = {v: [verdict(net, v, 0), verdict(net, v, 1)] for v in net.vals}
    net.block([commit(net, v, vs) for v, vs in sealed.items()])
    until_phase(net, "reveal")
    staked = tokens(net, net.vals[0])
    net.block([reveal(net, v, sealed[v]) for v in net.vals[1:]])
    until_phase(net, "merge")
    assert tokens(net, net.vals[0]) == staked - staked * 2 * PARAMS["unrevealed_penalty_bps"] // 10_000
    assert [s["status"] for s in net.round(0)["submission_list"]] == ["accepted", "accepted"]


def test_an_auditor_that_never_commits_pays_too(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    staked = tokens(net, net.vals[1])
    audit_round(net, {net.vals[0]: {0: "accept"}, net.vals[2]: {0: "accept"}})
    assert net.round(0)["submission_list"][0]["status"] == "accepted"
    assert tokens(net, net.vals[1]) == staked - staked * PARAMS["unrevealed_penalty_bps"] // 10_000


def test_an_always_accept_auditor_with_made_up_proofs_is_charged_and_unpaid(net):
    """A lazy auditor that says accept without recomputing cannot know the gradient proofs: its guesses fail."""
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    staked = tokens(net, net.vals[1])
    before = net.balance(net.vals[1].address)
    audit_round(net, {net.vals[0]: {0: "accept"}, net.vals[1]: {0: ("accept", "wrong")}, net.vals[2]: {0: "accept"}})
    sub = net.round(0)["submission_list"][0]
    assert sub["status"] == "accepted"
    lazy = next(e for e in sub["verdicts"] if e["validator"] == net.vals[1].address)
    assert (lazy["proven"], lazy["proof_ok"]) == (True, False)
    assert tokens(net, net.vals[1]) == staked - staked * PARAMS["unrevealed_penalty_bps"] // 10_000
    assert net.balance(net.vals[1].address) == before - 2  # its two tx fees; no pay


def test_bad_proofs_do_not_count_towards_the_decision(net):
    """Two of three auditors reveal guessed proofs: their accepts are worth nothing and the submission expires."""
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {net.vals[0]: {0: ("accept", "wrong")}, net.vals[1]: {0: "accept"}, net.vals[2]: {0: ("accept", "wrong")}})
    assert net.round(0)["submission_list"][0]["status"] == "expired"


def test_reveal_rules(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    until_phase(net, "commit")
    v0, v1, v2 = net.vals
    mine = [verdict(net, v0, 0)]
    r = net.block([
        reveal(net, v0, mine),  # too early: still committing
        commit(net, net.trainers[2], mine),  # on no committee
        net.tx(v0, tx.MsgCommitVerdicts(round=0, commitment=b"short")),
        commit(net, v0, mine),
        commit(net, v0, mine),  # twice
        commit(net, v1, [verdict(net, v1, 0)]),
    ])
    assert codes(r) == [("training", 2), ("training", 7), ("training", 13), ("", 0), ("training", 8), ("", 0)]
    until_phase(net, "reveal")
    theirs = [verdict(net, v1, 0)]
    r = net.block([
        reveal(net, v2, [verdict(net, v2, 0)]),  # committed nothing
        reveal(net, v0, theirs),  # a copy of another's verdicts does not open its own commitment
        reveal(net, v0, mine, salt=b"\1" * 32),  # wrong salt
        reveal(net, v0, mine, pubkey=v1.pubkey),  # someone else's key
        net.tx(v0, tx.MsgRevealVerdicts(round=0, salt=salt_of(v0), operator_pubkey=v0.pubkey, verdicts=[tx.AuditVerdict(submission=0, verdict=3)])),
        reveal(net, v0, mine),
        reveal(net, v0, mine),  # twice
    ])
    assert codes(r) == [("training", 14), ("training", 13), ("training", 13), ("training", 13), ("training", 13), ("", 0), ("training", 8)]
    assert "do not open" in r.tx_results[1].log


def test_reveals_are_checked_entry_by_entry(net):
    """Signatures must be the signer's over the submission's audit message; proofs cover the whole sample; no
    submission twice, out of order or off the committee; fraud names a step in range. A reveal with any such
    entry is refused whole and writes nothing (so the auditor ends up unrevealed and pays)."""
    bond_all(net)
    net.block([submit(net, net.trainers[0]), submit(net, net.trainers[1])])
    until_phase(net, "commit")
    v0, v1, v2 = net.vals
    good = verdict(net, v0, 0)

    def edited(**changes):
        v = tx.AuditVerdict()
        v.CopyFrom(good)
        for name, value in changes.items():
            if name == "step_proofs":
                del v.step_proofs[:]
                v.step_proofs.extend(value)
            else:
                setattr(v, name, value)
        return v

    state = net.app.store.begin_block()
    rnd, sub = training.current_round(state), training.get_submission(state, 0, 0)
    ctx = Context(state=state, chain_id="test", height=net.height + 1, time_unix_ns=0)
    malformed = {
        "someone else's signature": edited(audit_signature=v1.sign(audit.audit_message(0, 0, sub.trajectory_sha256, rnd.beacon))),
        "a signature over another message": edited(audit_signature=v0.sign(b"another message")),
        "one proof short": edited(step_proofs=list(good.step_proofs)[:-1]),
        "a proof of 31 bytes": edited(step_proofs=[p[:31] for p in good.step_proofs]),
        "verdict 3": edited(verdict=3),
        "fraud beyond k + 1": verdict(net, v0, 0, "fraud", fraud_step=PARAMS["steps"] + 2),
        "fraud with proofs": edited(verdict=2),
        "a reason with a newline": edited(reason="bad\n"),
    }
    for what, v in malformed.items():
        with pytest.raises(training.InvalidReveal):
            training._audit_entry(ctx, rnd, sub, v0.address, v0.pubkey, v)
    training._audit_entry(ctx, rnd, sub, v0.address, v0.pubkey, good)  # the unedited one passes
    # Through real txs: twice the same submission, out of order, a submission that does not exist.
    cases = {v0: [good, good], v1: [verdict(net, v1, 1), verdict(net, v1, 0)], v2: [verdict(net, v2, 0), tx.AuditVerdict(submission=7)]}
    net.block([commit(net, v, vs) for v, vs in cases.items()])
    until_phase(net, "reveal")
    r = net.block([reveal(net, v, vs) for v, vs in cases.items()])
    assert codes(r) == [("training", 13)] * 3
    rnd = net.round(0)
    assert rnd["reveals"] == 0 and rnd["revealed"] == [] and all(s["verdicts"] == [] for s in rnd["submission_list"])


def test_judging_rules(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {net.vals[0]: {0: ("fraud", 5)}, net.vals[1]: {0: "accept"}, net.vals[2]: {0: "accept"}})
    r = net.block([
        judge(net, net.trainers[0], [(0, 5, True)]),  # not a validator of the round
        judge(net, net.vals[0], [(0, 4, True)]),  # no claim on step 4
        judge(net, net.vals[0], [(0, 5, True), (0, 5, False)]),  # twice
        judge(net, net.vals[0], [(0, 5, False)]),
        judge(net, net.vals[0], [(0, 5, False)]),  # once a round
    ])
    assert codes(r) == [("training", 7), ("training", 6), ("training", 5), ("", 0), ("training", 8)]


def test_nobody_reveals_everything_expires_and_the_fee_goes_back(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    balance = net.balance(net.trainers[0].address)
    until_phase(net, "closed")
    assert net.round(0)["submission_list"][0]["status"] == "expired"
    assert net.balance(net.trainers[0].address) == balance + PARAMS["check_fee"]
    assert net.bond(net.trainers[0])["locked"] == 0


def test_phases_end_early_once_everyone_acted(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    rnd = until_phase(net, "commit")
    start = net.height
    sealed = {v: [verdict(net, v, 0)] for v in net.vals}
    net.block([commit(net, v, vs) for v, vs in sealed.items()])
    assert net.round(0)["phase"] == "reveal" and net.height == start + 1 < rnd["commit_until"]
    net.block([reveal(net, v, vs) for v, vs in sealed.items()])
    assert net.round(0)["phase"] == "merge"


def test_merge_quorum_registers_the_next_version_and_charges_the_odd_vote(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0]), submit(net, net.trainers[1])])
    audit_round(net, {v: {0: "accept", 1: "no_gain"} for v in net.vals})
    rnd = net.round()
    assert rnd["phase"] == "merge" and rnd["accepted"] == [0]
    assert rnd["aggregator"] in [v.address for v in net.vals]
    merged = tx.MsgAttestMerge(round=0, cid=cid("merged"), sha256=sha("merged"), bytes=10, held_out_loss_micro=1_500_000)
    odd = tx.MsgAttestMerge(round=0, cid=cid("odd"), sha256=sha("odd"), bytes=10, held_out_loss_micro=1_400_000)
    early = net.block([reveal_merge(net, net.vals[0], merged)])
    assert codes(early) == [("training", 2)]  # nothing is revealed before everyone could commit
    merge_round(net, {net.vals[0]: merged, net.vals[1]: odd, net.vals[2]: merged})
    r = net.block([reveal_merge(net, net.vals[0], merged), reveal_merge(net, net.vals[1], odd), reveal_merge(net, net.vals[1], merged)])
    assert codes(r) == [("", 0), ("", 0), ("training", 8)]
    assert json.loads(net.query("/registry/latest").value)["id"] == 0
    staked = tokens(net, net.vals[1])
    r = net.block([reveal_merge(net, net.vals[2], merged), net.tx(net.trainers[2], sealed_vote(net.trainers[2], merged))])
    assert codes(r)[0] == ("", 0)
    v1 = json.loads(net.query("/registry/latest").value)
    assert (v1["id"], v1["parent"], v1["round"], v1["sha256"], v1["metrics"]["held_out_loss_micro"]) == (1, 0, 0, sha("merged"), 1_500_000)
    assert net.round(0)["phase"] == "closed" and net.round(0)["version"] == 1
    assert tokens(net, net.vals[1]) == staked - staked * PARAMS["verifier_penalty_bps"] // 10_000  # voted for another file
    net.block([])
    assert net.round()["id"] == 1 and net.round()["base_version"] == 1  # the next round trains version 1


def test_merge_records_stake_weighted_medians(tmp_path):
    """The version records the stake-weighted median of the agreeing votes: a minority cannot drag it."""
    net = make_net(tmp_path, self_bonds=(1_000, 1_000, 2_000, 3_000), eval_prompts=25)
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {v: {0: "accept"} for v in net.vals})
    until_phase(net, "merge")

    def vote(correct: int, loss: int, total: int = 25) -> tx.MsgAttestMerge:
        return tx.MsgAttestMerge(round=0, cid=cid("m"), sha256=sha("m"), bytes=10, held_out_loss_micro=loss,
                                 prompts_correct=correct, prompts_total=total)

    # powers 10, 10, 20, 30 (of 70; quorum 47): the two smallest lie low, the 20 says 18/1.2, the 30 says 17/1.1.
    votes = {net.vals[0]: vote(0, 1), net.vals[1]: vote(0, 1), net.vals[2]: vote(18, 1_200_000), net.vals[3]: vote(17, 1_100_000)}
    merge_round(net, votes)
    r = net.block([net.tx(net.vals[0], sealed_vote(net.vals[0], vote(26, 1, 26))), net.tx(net.vals[0], sealed_vote(net.vals[0], vote(20, 1, 19)))])
    assert [c for c, _ in codes(r)] == ["training", "training"]  # more prompts than eval_prompts; correct > total
    assert "invalid prompt score 26/26" in r.tx_results[0].log
    net.block([reveal_merge(net, v, votes[v]) for v in net.vals[:3]])
    net.block([reveal_merge(net, net.vals[3], votes[net.vals[3]])])
    v1 = json.loads(net.query("/registry/latest").value)
    assert v1["id"] == 1 and (v1["metrics"]["prompts_correct"], v1["metrics"]["prompts_total"]) == (17, 25)
    assert v1["metrics"]["held_out_loss_micro"] == 1_100_000  # a count median of four would take 1 or 1.1e6 by order
    net.app.close()


def test_lora_params_are_validated(tmp_path):
    training.Params(lora_targets="q_proj,v_proj,o_proj").validate()
    for bad in ({"lora_targets": ""}, {"lora_targets": "q_proj,q_proj"}, {"lora_targets": "q_proj, v_proj"},
                {"lora_targets": "attn"}, {"lora_rank": 0}, {"lora_alpha": 0}, {"eval_prompts": -1}):
        with pytest.raises(ValueError, match="lora|eval_prompts"):
            training.Params(**bad).validate()


def test_merge_without_quorum_closes_without_a_version_and_the_silent_pay(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {v: {0: "accept"} for v in net.vals})
    vote = tx.MsgAttestMerge(round=0, cid=cid("m"), sha256=sha("m"), bytes=10, held_out_loss_micro=1)
    until_phase(net, "merge")
    net.block([commit_merge(net, net.vals[0], vote)])
    until_phase(net, "merge_reveal")
    staked = {v: tokens(net, v) for v in net.vals}
    net.block([reveal_merge(net, net.vals[0], vote)])  # the only committer revealed: the merge ends in this block
    assert net.round(0)["phase"] == "closed"
    assert net.round(0)["version"] is None
    assert json.loads(net.query("/registry/latest").value)["id"] == 0
    assert [staked[v] - tokens(net, v) for v in net.vals] == [0] + [staked[v] * PARAMS["verifier_penalty_bps"] // 10_000 for v in net.vals[1:]]


def test_a_merge_the_registry_refuses_closes_the_round_without_a_version(net):
    """A quorum agreeing on a file already registered (here the base's own sha256) makes registry.register refuse:
    end_block records the refusal and closes the round, the chain goes on, and the next round trains the base."""
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {v: {0: "accept"} for v in net.vals})
    dup = tx.MsgAttestMerge(round=0, cid=cid("v0"), sha256=sha("v0"), bytes=10, held_out_loss_micro=1)
    merge_round(net, {v: dup for v in net.vals})
    r = net.block([reveal_merge(net, v, dup) for v in net.vals])
    (refused,) = [e for e in r.events if e.type == "merge_not_registered"]
    fields = {a.key: a.value for a in refused.attributes}
    assert (fields["round"], fields["sha256"]) == ("0", sha("v0")) and "already version 0" in fields["reason"]
    assert net.round(0)["phase"] == "closed" and net.round(0)["version"] is None
    assert json.loads(net.query("/registry/latest").value)["id"] == 0
    net.block([])
    assert net.round()["id"] == 1 and net.round()["base_version"] == 0


def test_aggregator_pick_is_stake_weighted_and_deterministic(net):
    bond_all(net)
    rnd = net.round()
    assert sorted(p for _, p in rnd["powers"]) == [10, 10, 20] and rnd["total_power"] == 40

    def pick(i: int) -> str:
        return training._aggregator(rnd["powers"], rnd["total_power"], hashlib.sha256(i.to_bytes(2, "big")).hexdigest())

    picks = [pick(i) for i in range(400)]
    assert picks == [pick(i) for i in range(400)]
    share = picks.count(net.vals[2].address) / len(picks)
    assert 0.4 < share < 0.6  # power 20 of 40


def test_bad_training_genesis(tmp_path):
    with pytest.raises(ValueError):
        Chain(tmp_path / "app", {}, training={"params": {"quorum_bps": 0}})


def test_an_auditor_on_many_committees_reveals_in_chunks(net):
    """Verdicts on many submissions do not fit one tx: an auditor commits one digest per chunk and opens each in
    its own tx; it counts as revealed once every chunk is open, and no submission may appear in two chunks."""
    bond_all(net)
    net.block([submit(net, t) for t in net.trainers])
    until_phase(net, "commit")
    v0 = net.vals[0]
    mine = [verdict(net, v0, i) for i in range(3)]
    chunks = [mine[:2], mine[2:]]
    salt = salt_of(v0)
    digests = b"".join(training.verdicts_commitment(0, salt, v0.pubkey, c, chunk=i) for i, c in enumerate(chunks))
    too_many = net.tx(v0, tx.MsgCommitVerdicts(round=0, commitment=b"\1" * 32 * (training.MAX_REVEAL_CHUNKS + 1)))
    r = net.block([too_many, net.tx(v0, tx.MsgCommitVerdicts(round=0, commitment=digests))])
    assert codes(r) == [("training", 13), ("", 0)]
    others = {v: [verdict(net, v, i) for i in range(3)] for v in net.vals[1:]}
    net.block([commit(net, v, vs) for v, vs in others.items()])
    until_phase(net, "reveal")

    def open_chunk(i, verdicts):
        return net.tx(v0, tx.MsgRevealVerdicts(round=0, salt=salt, operator_pubkey=v0.pubkey, verdicts=verdicts, chunk=i))

    r = net.block([open_chunk(2, chunks[1]), open_chunk(1, chunks[0]), open_chunk(0, chunks[0])])
    assert codes(r) == [("training", 13), ("training", 13), ("", 0)]  # no chunk 2; chunk 1 is not those verdicts
    rnd = net.round(0)
    assert v0.address not in rnd["revealed"] and rnd["reveals"] == 0
    net.block([reveal(net, v, vs) for v, vs in others.items()])
    assert net.round(0)["phase"] == "reveal"  # v0 has a chunk left to open
    r = net.block([open_chunk(0, chunks[0]), open_chunk(1, chunks[1])])
    assert codes(r) == [("training", 8), ("", 0)]
    rnd = net.round(0)
    assert rnd["phase"] == "merge" and [s["status"] for s in rnd["submission_list"]] == ["accepted"] * 3
    assert all(v0.address in {e["validator"] for e in s["verdicts"]} for s in rnd["submission_list"])


def test_each_seat_is_sealed_in_exactly_one_chunk(net):
    """An auditor may not seal a verdict twice (in two chunks, to open whichever wins): no more chunks than seats,
    and which chunk holds which seat is fixed (training.reveal_chunk) by the chunk count it committed to."""
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    until_phase(net, "commit")
    v0 = net.vals[0]
    twice = [[verdict(net, v0, 0)], [verdict(net, v0, 0, "no_gain")]]
    salt = salt_of(v0)
    r = net.block([net.tx(v0, tx.MsgCommitVerdicts(round=0, commitment=b"".join(
        training.verdicts_commitment(0, salt, v0.pubkey, c, chunk=i) for i, c in enumerate(twice))))])
    assert codes(r) == [("training", 13)] and "committee seats = 1" in r.tx_results[0].log
    assert [training.reveal_chunk(t, 3, 2) for t in range(3)] == [0, 0, 1]

def test_merge_votes_are_sealed_before_any_is_revealed(net):
    """A validator cannot copy another's merge vote: it reveals only what it committed, and only after everyone
    could commit; one that never committed cannot vote."""
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    audit_round(net, {v: {0: "accept"} for v in net.vals})
    mine = tx.MsgAttestMerge(round=0, cid=cid("m"), sha256=sha("m"), bytes=10, held_out_loss_micro=1_000)
    guess = tx.MsgAttestMerge(round=0, cid=cid("guess"), sha256=sha("guess"), bytes=10, held_out_loss_micro=1)
    until_phase(net, "merge")
    r = net.block([commit_merge(net, net.vals[0], mine), commit_merge(net, net.vals[1], guess), commit_merge(net, net.vals[1], mine),
                   net.tx(net.vals[2], tx.MsgCommitMerge(round=0, commitment=b"short"))])
    assert codes(r) == [("", 0), ("", 0), ("training", 8), ("training", 13)]
    until_phase(net, "merge_reveal")  # vals[2] never committed: the window ran out
    r = net.block([reveal_merge(net, net.vals[0], mine), reveal_merge(net, net.vals[1], mine), reveal_merge(net, net.vals[2], mine)])
    assert codes(r) == [("", 0), ("training", 13), ("training", 14)]  # a copy opens nothing; no commitment, no vote
    assert json.loads(net.query("/registry/latest").value)["id"] == 0  # 10 of 40 so far


def test_an_unproven_accept_on_another_kernel_path_is_not_charged_for_a_step_it_held(net):
    """Issue 12: honest disagreement across kernel paths is not slashable. An auditor on another kernel path compares
    within step_tolerance_ppm and proves nothing; when a claim on a step in its sample is upheld (bitwise, by the
    trainer's path), its accept is not charged fraud_proof_slash_bps. The same accept with proofs would be."""
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    until_phase(net, "commit")
    v0, v1, v2 = net.vals
    step = audit.audit_sample(verdict(net, v1, 0).audit_signature, PARAMS["steps"], PARAMS["audit_steps"])[0]
    audit_round(net, {v0: {0: ("fraud", step)}, v1: {0: ("accept", "none")}, v2: {0: ("fraud", step)}})
    staked = tokens(net, v1)
    net.block([judge(net, v, [(0, step, False)]) for v in (v0, v2)])  # v1 does not judge: 30 of 40 uphold it
    until_phase(net, "closed")
    assert net.round(0)["submission_list"][0]["status"] == "rejected"
    assert tokens(net, v1) == staked
