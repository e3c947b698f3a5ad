"""Training params under governance: a round runs to its end under the params it opened with.

A proposal that changes training params can pass at any height, also in the middle of a round. The round keeps
the copy it took when it opened (Round.params): submissions trained to the old `steps` still land, auditors'
samples drawn with the old `audit_steps` still open, windows and the reward stay as announced, and the next
round opens with the new values. Proposals are real: submitted, voted by the validators, executed by gov.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from abci_app import tx
from abci_app.modules import gov, training
from tests.unit.conftest import fixed_key
from tests.unit.test_gov import GOV_PARAMS, SUBMIT_FEE, body, end_events
from tests.unit.test_staking import cons_key
from tests.unit.test_training import (CID, PARAMS, TrainingChain, audit_round, cid, codes, merge_round, reveal_merge, sha, submit,
                                      tokens, until_phase)

# Windows long enough for a proposal to pass inside one phase (deposit in full at submission, 2 blocks of voting).
ROUND = PARAMS | {"submission_blocks": 8, "verification_blocks": 8, "reveal_blocks": 8, "merge_blocks": 8}
GOVERNED = GOV_PARAMS | {"voting_blocks": 2, "expedited_voting_blocks": 1}
NEW = {"steps": 4, "audit_steps": 3, "reward": 800, "submission_blocks": 5, "verification_blocks": 5, "check_fee": 40}


def make_chain(tmp_path, **params):
    vals = [fixed_key(i) for i in range(1, 4)]
    trainers = [fixed_key(i) for i in range(10, 13)]
    proposer = fixed_key(20)
    chain = TrainingChain(
        tmp_path / "app", {k.address: 100_000 for k in vals + trainers} | {proposer.address: 10**9},
        staking={"params": {"min_self_bond": 100, "power_unit": 100, "downtime_max_missed": 1000},
                 "validators": [{"operator": v.address, "pubkey": cons_key(i).hex(), "self_bond": b} for i, (v, b) in enumerate(zip(vals, (1_000, 1_000, 2_000)))]},
        datasets={"datasets": [{"name": "kjv", "cid": CID, "sha256": sha("corpus"), "licence": "public-domain", "bytes": 100, "tokens": 100, "tokenizer": "bytes"}]},
        registry={"versions": [{"cid": cid("v0"), "sha256": sha("v0"), "bytes": 10, "family": "tiny-gpt", "config": {"n_layer": 1}, "dataset_ids": [0], "licence": "Apache-2.0"}]},
        training={"params": ROUND | params}, gov={"params": GOVERNED},
    )
    chain.vals, chain.trainers, chain.proposer = vals, trainers, proposer
    return chain


def pass_training_params(net, **changes):
    """Submit a proposal replacing the training params (the live set with `changes`), have every validator vote yes
    and run to the end of its voting window; the response of the block that executed it."""
    live = training.get_params(net.app.store.begin_block())
    update = tx.MsgUpdateParams(module="training", params_json=json.dumps(asdict(live) | changes), params_sha256=gov.params_digest(live))
    msg = tx.MsgSubmitProposal(messages=[body(update)], initial_deposit=GOVERNED["min_deposit"], title="Change training", summary="Test.")
    response = net.block([net.tx(net.proposer, msg, fee=SUBMIT_FEE)])
    assert codes(response) == [("", 0)], [r.log for r in response.tx_results]
    pid = int(next(a.value for r in response.tx_results for e in r.events if e.type == "proposal_submitted" for a in e.attributes if a.key == "proposal"))
    assert codes(net.block([net.tx(v, tx.MsgVote(proposal=pid, option=gov.YES)) for v in net.vals])) == [("", 0)] * 3
    end = json.loads(net.query("/gov/proposal", str(pid)).value)["voting_end"]
    while net.height < end:
        executed = net.block([])
    assert json.loads(net.query("/gov/proposal", str(pid)).value)["status"] == gov.PASSED
    assert [e["module"] for e in end_events(executed, "params_updated")] == ["training"]
    return executed


def penalties(responses):
    return [e for r in responses for e in end_events(r, "verifier_penalized")]


def test_a_params_change_passed_mid_round_applies_from_the_next_round(tmp_path):
    net = make_chain(tmp_path)
    first, second, third = net.trainers
    net.block([net.tx(t, tx.MsgBondTrainer(amount=2_000)) for t in net.trainers])
    opened = net.round()
    assert opened["params"] == asdict(training.Params(**ROUND))
    assert codes(net.block([submit(net, first)])) == [("", 0)]

    # The change passes while the round still takes submissions.
    pass_training_params(net, **NEW)
    assert training.get_params(net.app.store.begin_block()).steps == NEW["steps"]
    rnd = net.round()
    assert rnd["phase"] == "submit" and net.height < rnd["submit_until"] == opened["submit_until"]  # the window as announced
    # A submission trained to the round's steps still lands; one trained to the new steps does not (yet).
    r = net.block([submit(net, second), submit(net, third, steps=NEW["steps"])])
    assert codes(r) == [("", 0), ("training", 5)] and f"exactly {ROUND['steps']} steps" in r.tx_results[1].log
    assert [s["check_fee"] for s in net.round()["submission_list"]] == [ROUND["check_fee"]] * 2

    # Auditors draw their samples with the round's audit_steps; the chain checks their proofs against the same.
    rnd = until_phase(net, "commit")
    assert rnd["commit_until"] == rnd["submit_until"] + ROUND["verification_blocks"]
    staked = {v.address: tokens(net, v) for v in net.vals}
    audit_round(net, {v: {0: "accept", 1: "accept"} for v in net.vals})
    rnd = net.round()
    assert rnd["phase"] == "merge" and rnd["accepted"] == [0, 1]
    for sub in rnd["submission_list"]:
        assert [(len(e["steps_checked"]), e["proven"], e["proof_ok"]) for e in sub["verdicts"]] == [(ROUND["audit_steps"], True, True)] * 3
    paid = json.loads(net.query("/datasets/earnings", "0").value or b"{}")
    assert paid.get("submissions") == 2

    merged = tx.MsgAttestMerge(round=0, cid=cid("merged"), sha256=sha("merged"), bytes=10, held_out_loss_micro=1_500_000)
    merge_round(net, {v: merged for v in net.vals})
    closing = net.block([reveal_merge(net, v, merged) for v in net.vals])
    assert codes(closing) == [("", 0)] * 3 and net.round(0)["phase"] == "closed" and net.round(0)["version"] == 1
    assert {v.address: tokens(net, v) for v in net.vals} == staked  # honest auditors and voters: nothing burned
    assert penalties([closing]) == []

    # The next round opens with the new params.
    net.block([])
    nxt = net.round()
    assert nxt["id"] == 1 and nxt["params"] == asdict(training.Params(**ROUND | NEW))
    assert nxt["submit_until"] == nxt["open_height"] + NEW["submission_blocks"]
    r = net.block([submit(net, first, round_id=1), submit(net, second, round_id=1, steps=NEW["steps"])])
    assert codes(r) == [("training", 5), ("", 0)] and f"exactly {NEW['steps']} steps" in r.tx_results[0].log
    assert net.round()["submission_list"][0]["check_fee"] == NEW["check_fee"]


def test_the_round_pays_the_reward_it_opened_with(tmp_path):
    """A reward change passed during the audit: the round's accepted work is paid the reward announced at opening."""
    net = make_chain(tmp_path)
    trainer = net.trainers[0]
    net.block([net.tx(t, tx.MsgBondTrainer(amount=2_000)) for t in net.trainers])
    net.block([submit(net, trainer)])
    until_phase(net, "commit")
    pass_training_params(net, reward=ROUND["reward"] * 3)
    before = net.balance(trainer.address)
    audit_round(net, {v: {0: "accept"} for v in net.vals})
    assert net.round()["accepted"] == [0]
    # The trainer's part of the round's reward (the genesis dataset has no royalty) and its check fee gone to the auditors.
    assert net.balance(trainer.address) == before + ROUND["reward"]


def test_a_lowered_min_trainer_bond_keeps_the_bonded_trainer_count_exact(tmp_path):
    """min_trainer_bond 1000 -> 500 by gov: a trainer bonded 800 under the old minimum was never counted. The count
    follows each trainer's own flag, so its unbonding does not take a count it never added (which went below zero:
    a failing tx, or a halt when the bond drops in end_block, e.g. a slash), and its next bond counts it."""
    net = make_chain(tmp_path)
    small, big = net.trainers[:2]
    assert codes(net.block([net.tx(small, tx.MsgBondTrainer(amount=800)), net.tx(big, tx.MsgBondTrainer(amount=2_000))])) == [("", 0)] * 2
    state = net.app.store.begin_block()
    assert training.bonded_trainers(state) == 1
    net.min_bond_changed = True  # from the block that executes the proposal on
    pass_training_params(net, min_trainer_bond=500)
    assert codes(net.block([net.tx(big, tx.MsgUnbondTrainer(amount=2_000))])) == [("", 0)]
    assert training.bonded_trainers(net.app.store.begin_block()) == 0
    r = net.block([net.tx(small, tx.MsgUnbondTrainer(amount=800))])
    assert codes(r) == [("", 0)], r.tx_results[0].log
    assert training.bonded_trainers(net.app.store.begin_block()) == 0
    assert codes(net.block([net.tx(small, tx.MsgBondTrainer(amount=600))])) == [("", 0)]
    state = net.app.store.begin_block()
    assert training.bonded_trainers(state) == 1 == len(list(state.iter_prefix(training.COUNTED_PREFIX)))
