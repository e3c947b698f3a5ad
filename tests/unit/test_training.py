"""Training rounds on chain: windows, submissions, attestations, 2/3 decisions, rewards, slashing, merges."""

import hashlib
import json

import pytest

from abci_app import crypto, tx
from abci_app.modules import bank, staking, training
from tests.unit.conftest import Chain, fixed_key
from tests.unit.test_staking import check_invariants, cons_key

PARAMS = {"enabled": True, "submission_blocks": 4, "verification_blocks": 6, "merge_blocks": 4, "steps": 2,
          "reward": 500, "slash_bps": 2_000, "attester_share_bps": 5_000, "verifier_penalty_bps": 100,
          "min_trainer_bond": 1_000, "max_submissions": 3}
CID = "bafkrei" + "a" * 52


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def cid(tag: str) -> str:
    return "bafkrei" + hashlib.sha256(tag.encode()).hexdigest()[:52].translate(str.maketrans("0189", "2345"))


def check_trainer_invariants(chain: Chain) -> None:
    """The trainer pool holds exactly the bonded and unbonding collateral; the bonded-trainer count and the
    unbonding totals match the records; locks never exceed bonds and match the undecided submissions."""
    state = chain.app.store.begin_block()
    params = training.get_params(state)
    bonds = {crypto.bech32_encode("gc", k[len(training.TRAINER_PREFIX):]): training.TrainerBond(**json.loads(v))
             for k, v in state.iter_prefix(training.TRAINER_PREFIX)}
    assert bank.balance(state, training.TRAINER_POOL) == sum(b.bonded + b.unbonding for b in bonds.values())
    assert training.bonded_trainers(state) == sum(b.bonded >= params.min_trainer_bond for b in bonds.values())
    unbonding: dict[str, int] = {}
    for entry in training.trainer_unbondings(state):
        unbonding[entry["trainer"]] = unbonding.get(entry["trainer"], 0) + entry["amount"]
    assert unbonding == {t: b.unbonding for t, b in bonds.items() if b.unbonding}
    rnd = training.current_round(state)
    pending = [s for s in training.submissions(state, rnd.id) if s.status == "pending"] if rnd else []
    assert {t: b.locked for t, b in bonds.items() if b.locked} == {s.trainer: s.bond for s in pending}
    assert all(0 <= b.locked <= b.bonded for b in bonds.values())
    assert bank.balance(state, training.FORFEIT_POOL) == 0


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


def submit(net, trainer, round_id=0, tag=None, steps=2):
    tag = tag or trainer.address
    return net.tx(trainer, tx.MsgSubmitDelta(round=round_id, cid=cid(tag), sha256=sha(tag), bytes=100, loss_before_micro=2_000_000, loss_after_micro=1_900_000, steps=steps, kernel_path="torch-2.15 AVX2"))


def attest(net, val, index, accept, round_id=0):
    return net.tx(val, tx.MsgAttest(round=round_id, submission=index, accept=accept, measured_error_ppm=0 if accept else 900_000))


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
        net.tx(net.trainers[2], tx.MsgSubmitDelta(round=0, cid="Qmbad", sha256=sha("x"), bytes=1, steps=2)),
    ])
    assert codes(r) == [("", 0), ("training", 4), ("training", 3), ("training", 1), ("training", 5), ("training", 5)]
    assert all(res.log for res in r.tx_results[1:])
    rnd = net.round()
    assert rnd["submissions"] == 1 and rnd["submission_list"][0]["trainer"] == net.trainers[0].address


def test_submission_after_the_window_is_refused(net):
    bond_all(net)
    submit_until = net.round()["submit_until"]
    while net.height < submit_until:
        net.block([])
    r = net.block([submit(net, net.trainers[0])])
    assert codes(r) == [("training", 1)]  # round 0 closed empty; round 1 is open now
    assert net.round(0)["phase"] == "closed" and net.round()["id"] == 1


def test_accept_at_two_thirds_mints_the_reward(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    balance = net.balance(net.trainers[0].address)
    r = net.block([attest(net, net.vals[0], 0, True)])
    assert net.round()["submission_list"][0]["status"] == "pending"  # 10 of 40 power
    r = net.block([attest(net, net.vals[2], 0, True)])  # 30 of 40 >= 2/3
    assert net.round()["submission_list"][0]["status"] == "accepted"
    assert net.balance(net.trainers[0].address) == balance + PARAMS["reward"]
    assert "delta_accepted" in [e.type for res in r.tx_results for e in res.events]
    late = net.block([attest(net, net.vals[1], 0, True)])
    assert codes(late) == [("training", 9)]


def test_reject_slashes_the_trainer_and_pays_the_rejecters(net):
    bond_all(net)
    cheater = net.trainers[1]
    net.block([submit(net, cheater)])
    before = [net.balance(v.address) for v in net.vals]
    net.block([attest(net, net.vals[2], 0, False), attest(net, net.vals[1], 0, False)])
    sub = net.round()["submission_list"][0]
    assert sub["status"] == "rejected"
    assert net.bond(cheater) == {"bonded": 2_000 - 400, "locked": 0, "unbonding": 0}
    # 400 slashed, 200 to the rejecters by power (20 : 10), 200 burned; each paid a fee of 1.
    assert net.balance(net.vals[2].address) - before[2] == 133 - 1
    assert net.balance(net.vals[1].address) - before[1] == 66 - 1


def test_attestation_rules(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    r = net.block([
        attest(net, net.trainers[1], 0, True),
        attest(net, net.vals[0], 7, True),
        attest(net, net.vals[0], 0, True),
        attest(net, net.vals[0], 0, False),
        attest(net, net.vals[0], 0, True, round_id=3),
    ])
    assert codes(r) == [("training", 7), ("training", 6), ("", 0), ("training", 8), ("training", 1)]


def test_verifiers_who_are_wrong_or_absent_pay(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    staked = [staking.get_validator(net.app.store.begin_block(), v.address).tokens for v in net.vals]
    net.block([attest(net, net.vals[0], 0, False), attest(net, net.vals[2], 0, True)])  # 10 reject, 20 accept: undecided
    net.block([attest(net, net.vals[1], 0, True)])  # 30 accept of 40: accepted
    while net.round(0)["phase"] in ("submit", "verify"):
        net.block([])
    after = [staking.get_validator(net.app.store.begin_block(), v.address).tokens for v in net.vals]
    assert after[0] == staked[0] - staked[0] * 100 // 10_000  # attested against the decision
    assert after[1:] == staked[1:]


def test_merge_quorum_registers_the_next_version(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0]), submit(net, net.trainers[1])])
    net.block([attest(net, v, 0, True) for v in net.vals] + [attest(net, v, 1, False) for v in net.vals])
    assert net.round()["phase"] == "submit"  # decided early, but the submission window is still open
    for _ in range(PARAMS["submission_blocks"]):
        if net.round()["phase"] == "merge":
            break
        net.block([])
    rnd = net.round()
    assert rnd["phase"] == "merge" and rnd["accepted"] == [0]
    assert rnd["aggregator"] in [v.address for v in net.vals]
    merged = tx.MsgAttestMerge(round=0, cid=cid("merged"), sha256=sha("merged"), bytes=10, held_out_loss_micro=1_500_000)
    odd = tx.MsgAttestMerge(round=0, cid=cid("odd"), sha256=sha("odd"), bytes=10, held_out_loss_micro=1_400_000)
    r = net.block([net.tx(net.vals[0], merged), net.tx(net.vals[1], odd)])
    assert codes(r) == [("", 0), ("", 0)]
    assert json.loads(net.query("/registry/latest").value)["id"] == 0
    r = net.block([net.tx(net.vals[2], merged), net.tx(net.trainers[2], merged)])
    assert codes(r)[0] == ("", 0)
    v1 = json.loads(net.query("/registry/latest").value)
    assert (v1["id"], v1["parent"], v1["round"], v1["sha256"], v1["metrics"]["held_out_loss_micro"]) == (1, 0, 0, sha("merged"), 1_500_000)
    assert net.round(0)["phase"] == "closed" and net.round(0)["version"] == 1
    net.block([])
    assert net.round()["id"] == 1 and net.round()["base_version"] == 1  # the next round trains version 1


def test_merge_records_the_median_prompt_score(tmp_path):
    """With eval_prompts set, merge votes carry a prompt score; the version records the agreeing votes' median."""
    net = make_net(tmp_path, eval_prompts=25)
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    net.block([attest(net, v, 0, True) for v in net.vals])
    while net.round()["phase"] != "merge":
        net.block([])

    def vote(correct: int, total: int = 25) -> tx.MsgAttestMerge:
        return tx.MsgAttestMerge(round=0, cid=cid("m"), sha256=sha("m"), bytes=10, held_out_loss_micro=1_000_000,
                                 prompts_correct=correct, prompts_total=total)

    r = net.block([net.tx(net.vals[0], vote(26, 26)), net.tx(net.vals[0], vote(20, 19))])
    assert [c for c, _ in codes(r)] == ["training", "training"]  # more prompts than eval_prompts; correct > total
    assert "invalid prompt score 26/26" in r.tx_results[0].log
    net.block([net.tx(net.vals[0], vote(17)), net.tx(net.vals[1], vote(3))])
    net.block([net.tx(net.vals[2], vote(18))])
    v1 = json.loads(net.query("/registry/latest").value)
    assert v1["id"] == 1 and (v1["metrics"]["prompts_correct"], v1["metrics"]["prompts_total"]) == (17, 25)
    net.app.close()


def test_lora_params_are_validated(tmp_path):
    training.Params(lora_targets="q_proj,v_proj,o_proj").validate()
    for bad in ({"lora_targets": ""}, {"lora_targets": "q_proj,q_proj"}, {"lora_targets": "q_proj, v_proj"},
                {"lora_targets": "attn"}, {"lora_rank": 0}, {"lora_alpha": 0}, {"eval_prompts": -1}):
        with pytest.raises(ValueError, match="lora|eval_prompts"):
            training.Params(**bad).validate()


def test_merge_without_quorum_closes_without_a_version(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    net.block([attest(net, v, 0, True) for v in net.vals])
    while net.round(0)["phase"] != "closed":
        net.block([])
    assert net.round(0)["version"] is None
    assert json.loads(net.query("/registry/latest").value)["id"] == 0


def test_undecided_submissions_expire(net):
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    while net.round(0)["phase"] != "closed":
        net.block([])
    assert net.round(0)["submission_list"][0]["status"] == "expired"


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
