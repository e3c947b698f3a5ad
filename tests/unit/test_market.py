"""The data market: datasets registered by anyone, admitted and weighted by gov only, steps drawn across them by
weight from the round's seed, royalties paid out of accepted rewards, provenance recorded in each version."""

import json
from dataclasses import asdict
import random
from contextlib import contextmanager

import pytest
import torch

from abci_app import runtime, tx
from abci_app.modules import bank, datasets, gov, training
from abci_app.ml import train
from abci_app.workers.recompute import Mix, Work, batch_at, batches, round_work
from tests.unit.conftest import fixed_key
from tests.unit.test_staking import cons_key
from tests.unit.test_training import (
    PARAMS, TrainingChain, audit_round, bond_all, cid, codes, commit, judge, merge_round, reveal, reveal_merge, sha, submit, tokens,
    until_phase, verdict,
)

SEED = "ab" * 32
OWNER_A, OWNER_B = fixed_key(30), fixed_key(31)


def dataset_entry(tag: str, **fields) -> dict:
    return {"name": tag, "cid": cid(tag), "sha256": sha(tag), "licence": "CC-BY-4.0", "bytes": 100, "tokens": 100, "tokenizer": "bytes"} | fields


def market_net(tmp_path, entries: list[dict], gov: dict | None = None, **params) -> TrainingChain:
    """test_training's network (3 validators, 3 trainers) over these genesis datasets (and gov genesis)."""
    vals = [fixed_key(i) for i in range(1, 4)]
    trainers = [fixed_key(i) for i in range(10, 13)]
    net = TrainingChain(
        tmp_path / "app", {k.address: 100_000 for k in vals + trainers},
        staking={"params": {"min_self_bond": 100, "power_unit": 100, "downtime_max_missed": 1000},
                 "validators": [{"operator": v.address, "pubkey": cons_key(i).hex(), "self_bond": b} for i, (v, b) in enumerate(zip(vals, (1_000, 1_000, 2_000)))]},
        datasets={"datasets": entries},
        registry={"versions": [{"cid": cid("v0"), "sha256": sha("v0"), "bytes": 10, "family": "tiny-gpt", "config": {"n_layer": 1}, "dataset_ids": [0], "licence": "Apache-2.0"}]},
        training={"params": PARAMS | params},
        **({"gov": gov} if gov else {}),
    )
    net.vals, net.trainers = vals, trainers
    return net


@pytest.fixture
def two(tmp_path):
    """Dataset 0 (owner A, 10% royalty, weight 1) and dataset 1 (owner B, 50%, weight 3), both admitted at genesis."""
    net = market_net(tmp_path, [
        dataset_entry("kjv", owner=OWNER_A.address, royalty_bps=1_000, weight=1),
        dataset_entry("web", owner=OWNER_B.address, royalty_bps=5_000, weight=3),
    ])
    yield net
    net.app.close()


def body(msg) -> tx.TxBody:
    out = tx.TxBody()
    getattr(out, tx._msg_field(msg)).CopyFrom(msg)
    return out


@contextmanager
def _gov_in_next_block(msgs, reasons):
    original = runtime.end_block

    def hooked(ctx):
        reasons.append(runtime.execute_as(ctx, datasets.GOV, [body(m) for m in msgs]))
        original(ctx)

    runtime.end_block = hooked
    try:
        yield
    finally:
        runtime.end_block = original


def as_gov(net, *msgs) -> str:
    """Execute `msgs` as the gov module account in the next block, the way a passed proposal runs them
    (runtime.execute_as, all or none): "" when they all succeeded, else the recorded failure reason."""
    reasons: list[str] = []
    with _gov_in_next_block(msgs, reasons):
        net.block([])
    return reasons[0]


def admitted(net) -> list[list[int]]:
    return json.loads(net.query("/datasets/admitted").value)


def listing(net) -> list[dict]:
    return net.pages("/datasets/list")


# --- the draw ------------------------------------------------------------------------


def test_the_draw_is_a_function_of_the_seed_and_follows_the_weights():
    mix = [[0, 1], [1, 3], [4, 0], [7, 6]]
    trainer = fixed_key(10).address
    first = training.draw_steps(SEED, trainer, mix, 64)
    assert first == training.draw_steps(SEED, trainer, mix, 64)  # same seed, same draw, on every node
    assert first != training.draw_steps("cd" * 32, trainer, mix, 64)
    assert 4 not in first  # weight 0: never drawn
    totals = {0: 0, 1: 0, 7: 0}
    for i in range(400):
        seed = f"{i:064x}"
        counts = dict(training.step_counts(seed, trainer, mix, 64))
        for d, w in ((0, 1), (1, 3), (7, 6)):
            exact = 64 * w / 10
            assert int(exact) <= counts.get(d, 0) <= int(exact) + 1  # floor or ceil of k x w / W, every time
            totals[d] += counts.get(d, 0)
    assert [round(totals[d] / 400, 1) for d in (0, 1, 7)] == [6.4, 19.2, 38.4]  # and exact on average
    steps = training.draw_steps(SEED, trainer, mix, 64)
    assert steps[:8] != sorted(steps[:8]) or steps[8:16] != sorted(steps[8:16])  # interleaved, not in id blocks
    assert training.draw_steps(SEED, trainer, [[3, 5]], 8) == [3] * 8  # one admitted dataset: every step
    assert training.draw_steps(SEED, trainer, [], 8) == [] and training.draw_steps(SEED, trainer, [[3, 0]], 8) == []


def test_one_admitted_dataset_gives_the_batches_of_before():
    """The single-dataset case is the old rule exactly: train.batches_for over batch_seed(seed, trainer, sha256)."""
    family = type("Family", (), {"context_length": staticmethod(lambda base: 1_024)})()
    data = Mix(torch.arange(5_000, dtype=torch.int32), torch.arange(100, dtype=torch.int32), sha("kjv"), {})
    trainer = fixed_key(10).address
    params = {"steps": 5, "batch_size": 3, "seq_len": 16}
    work = round_work({"id": 0, "base_version": 0, "seed": SEED, "mix": [[0, 7]]}, trainer, {"sha256": sha("kjv")}, params, "", {0: sha("kjv")})
    old = train.batches_for(train.batch_seed(bytes.fromhex(SEED), trainer, sha("kjv")), data.train, 5, 3, 16)
    new = batches(family, None, data, work)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(old, new))
    assert work == Work(0, 0, SEED, trainer, sha("kjv"), params, "", (sha("kjv"),) * 5)


def test_a_mixed_round_takes_each_step_from_its_drawn_dataset():
    family = type("Family", (), {"context_length": staticmethod(lambda base: 1_024)})()
    low, high = torch.arange(0, 1_000, dtype=torch.int32), torch.arange(50_000, 51_000, dtype=torch.int32)
    data = Mix(low, low[:100], sha("kjv"), {sha("web"): high})
    trainer = fixed_key(11).address
    rnd = {"id": 2, "base_version": 1, "seed": SEED, "mix": [[0, 1], [1, 1]]}
    work = round_work(rnd, trainer, {"sha256": sha("kjv")}, {"steps": 16, "batch_size": 2, "seq_len": 8}, "", {0: sha("kjv"), 1: sha("web")})
    drawn = training.draw_steps(SEED, trainer, rnd["mix"], 16)
    assert sorted(set(drawn)) == [0, 1]
    for i, d in enumerate(drawn):
        x, _ = batch_at(family, None, data, work, i)
        assert bool((x >= 50_000).all()) == (d == 1)  # step i's windows all come from its drawn dataset
        seed = train.batch_seed(bytes.fromhex(SEED), trainer, sha("web" if d else "kjv")) + b"/step/" + i.to_bytes(4, "big")
        assert torch.equal(x, train.batch_for(seed, high if d else low, 2, 8)[0])
    with pytest.raises(ValueError, match="not loaded"):
        batch_at(family, None, Mix(low, low, sha("kjv"), {}), work, drawn.index(1))


# --- royalties ---------------------------------------------------------------------


def test_royalties_sum_exactly_and_nothing_is_minted_beyond_the_reward():
    rng = random.Random(14)
    for _ in range(3_000):
        n_sets = rng.randint(1, 16)
        ids = sorted(rng.sample(range(100), n_sets))
        counts = [[d, rng.randint(1, 64)] for d in ids]
        bps = {d: rng.choice([0, 1, 333, 5_000, 9_999, 10_000]) for d in ids}
        reward = rng.choice([0, 1, 7, 999, 1_000_000, 10**18 + 3])
        trainer, royalties = training.reward_split(reward, counts, bps)
        n = sum(c for _, c in counts)
        total = reward * sum(bps[d] * c for d, c in counts) // (10_000 * n)
        assert sum(a for _, a in royalties) == total  # exactly royalty_bps x reward over the windows, rounded down once
        assert trainer + total == reward and trainer >= 0  # taken out of the reward: nothing minted on top
        for (d, c), (d2, a) in zip(counts, royalties):
            exact = reward * bps[d] * c
            assert d == d2 and exact // (10_000 * n) <= a <= -(-exact // (10_000 * n))  # each within one unit of its claim
    # The remainder rule: claims of 2.5 and 2.5 -> 5 in all, floors 2 and 2, the unit left to the lower id of the tie;
    # claims of 0.75 and 0.75 -> 1 in all (rounded down once), to the lower id; the trainer keeps the rest.
    assert training.reward_split(10, [[0, 1], [1, 1]], {0: 5_000, 1: 5_000}) == (5, [[0, 3], [1, 2]])
    assert training.reward_split(3, [[0, 1], [1, 1]], {0: 5_000, 1: 5_000}) == (2, [[0, 1], [1, 0]])
    assert training.reward_split(10, [[0, 1], [1, 3]], {0: 1_000, 1: 9_000}) == (3, [[0, 0], [1, 7]])  # 0.25 + 6.75 = 7: 0 and 6, +1 to 6.75
    assert training.reward_split(100, [[2, 3]], {2: 0}) == (100, [[2, 0]])


@pytest.mark.parametrize("cap", [None, 2_000])
def test_an_accepted_round_pays_each_owner_by_windows_and_records_the_provenance(two, monkeypatch, cap):
    """cap: max_royalty_bps lowered after both registered (review 14b F6): a stored 50% royalty is paid at the cap."""
    net = two
    if cap is not None:
        current = datasets.get_params(net.app.store.begin_block())
        assert as_gov(net, tx.MsgUpdateParams(module="datasets", params_json=json.dumps(asdict(current) | {"max_royalty_bps": cap}),
                                              params_sha256=gov.params_digest(current))) == ""
    bps = {0: 1_000, 1: 5_000 if cap is None else cap}
    minted: list[tuple[str, int]] = []
    real_mint = bank.mint
    monkeypatch.setattr(bank, "mint", lambda ctx, recipient, amount: minted.append((recipient, amount)) or real_mint(ctx, recipient, amount))
    bond_all(net)
    rnd = net.round()
    assert rnd["mix"] == [[0, 1], [1, 3]] and rnd["dataset_id"] == 0
    net.block([submit(net, net.trainers[0]), submit(net, net.trainers[1])])
    before = {k.address: net.balance(k.address) for k in [OWNER_A, OWNER_B, *net.trainers]}
    audit_round(net, {v: {0: "accept", 1: "accept"} for v in net.vals})
    assert net.round(0)["accepted"] == [0, 1]
    reward, k, b = PARAMS["reward"], PARAMS["steps"], 8  # batch_size: the training default
    owed = {OWNER_A.address: 0, OWNER_B.address: 0}
    windows = {0: 0, 1: 0}
    for trainer in net.trainers[:2]:
        counts = training.step_counts(rnd["seed"], trainer.address, rnd["mix"], k)
        assert sum(c for _, c in counts) == k
        part, royalties = training.reward_split(reward, counts, bps)
        assert net.balance(trainer.address) - before[trainer.address] == part
        for (d, c), (_, amount) in zip(counts, royalties):
            owed[[OWNER_A, OWNER_B][d].address] += amount
            windows[d] += c * b
        assert part == reward - sum(reward * bps[d] * c for d, c in counts) // (10_000 * k)
    assert {a: net.balance(a) - before[a] for a in owed} == owed and sum(owed.values()) > 0
    verifier_minted = reward * PARAMS["verifier_reward_bps"] // 10_000
    paid = [a for a in minted if a[0] != training.CHECK_FEE_POOL]
    assert sum(n for _, n in paid) == 2 * reward  # royalties come out of the rewards: nothing minted on top
    assert sorted(minted) == sorted(paid + [(training.CHECK_FEE_POOL, verifier_minted)] * 2)
    market = {d["id"]: d for d in listing(net)}
    assert [(market[d]["earned"], market[d]["windows"], market[d]["submissions"]) for d in (0, 1)] == [
        (owed[OWNER_A.address], windows[0], sum(1 for t in net.trainers[:2] if dict(training.step_counts(rnd["seed"], t.address, rnd["mix"], k)).get(0))),
        (owed[OWNER_B.address], windows[1], sum(1 for t in net.trainers[:2] if dict(training.step_counts(rnd["seed"], t.address, rnd["mix"], k)).get(1))),
    ]
    assert (market[1]["owner"], market[1]["royalty_bps"], market[1]["weight"]) == (OWNER_B.address, 5_000, 3)
    merged = tx.MsgAttestMerge(round=0, cid=cid("merged"), sha256=sha("merged"), bytes=10, held_out_loss_micro=1_500_000)
    merge_round(net, {v: merged for v in net.vals})
    net.block([reveal_merge(net, v, merged) for v in net.vals])
    v1 = json.loads(net.query("/registry/latest").value)
    assert v1["id"] == 1 and v1["dataset_ids"] == sorted({d for t in net.trainers[:2] for d, _ in training.step_counts(rnd["seed"], t.address, rnd["mix"], k)})
    subs = {s["index"]: s for s in net.round(0)["submission_list"]}
    assert v1["contributions"] == [
        {"submission": i, "trainer": subs[i]["trainer"], "cid": subs[i]["cid"], "sha256": subs[i]["sha256"], "seed": rnd["seed"],
         "windows": [[d, c * b] for d, c in training.step_counts(rnd["seed"], subs[i]["trainer"], rnd["mix"], k)]}
        for i in (0, 1)
    ]


def abstain(net, val, claims):
    """`val` judges claims [(submission, step)] as abstained: it could not load a mixed dataset they need."""
    return net.tx(val, tx.MsgJudgeClaims(round=0, judgements=[tx.ClaimJudgement(submission=i, step=s, abstain=True) for i, s in claims]))


def stakes(net) -> dict[str, int]:
    return {v.address: tokens(net, v) for v in net.vals}


@pytest.mark.parametrize("withheld", ["dataset", "dataset-served-to-the-judges", "trainer-files"])
def test_a_drawn_dataset_nobody_serves_expires_only_the_submission_that_needs_it(two, withheld):
    """Dataset 1 (or, last case, the trainer's own files) is withheld from the committee: every member sends the
    verdict `spotcheck.Auditor` seals for it on submission 0 and accepts submission 1, and the round goes on to its
    merge. A withheld dataset (k + 2) is its owner's doing: submission 0 is never accepted on data nobody could check,
    but it expires with its bond and check fee back, whether the judges cannot load it either (they abstain:
    undecided, nobody charged) or it is served to them after all (refuted; no valid verdict, so it expires; each
    claimant pays verifier_penalty_bps, as a false "unavailable" must not be a free veto). The trainer's own files
    withheld (k + 1) are still the trainer's fault: upheld, slash_bps of its bond, nobody charged."""
    net = two
    bond_all(net)
    net.block([submit(net, net.trainers[0]), submit(net, net.trainers[1])])
    staked = stakes(net)
    trainer_balance = net.balance(net.trainers[0].address)
    k = PARAMS["steps"]
    step = k + (training.CLAIM_UNAVAILABLE_OFFSET if withheld == "trainer-files" else training.CLAIM_DATASET_OFFSET)
    audit_round(net, {v: {0: ("fraud", step), 1: "accept"} for v in net.vals})
    assert net.round()["phase"] == "dispute" and net.round(0)["accepted"] == [1]
    if withheld == "dataset":
        assert codes(net.block([abstain(net, v, [(0, step)]) for v in net.vals])) == [("", 0)] * 3
    else:
        net.block([judge(net, v, [(0, step, withheld == "dataset-served-to-the-judges")]) for v in net.vals])
    until_phase(net, "merge")
    sub = net.round(0)["submission_list"][0]
    claim = sub["claims"][0]
    assert claim["outcome"] == {"dataset": "undecided", "dataset-served-to-the-judges": "refuted", "trainer-files": "upheld"}[withheld]
    assert claim["abstain_power"] == (claim["valid_power"] + claim["invalid_power"] == 0) * net.round(0)["total_power"]
    # Not unrevealed, not a wrong or absent judge, not an accepted fraud; only a refuted k + 2 claimant pays.
    charge = PARAMS["verifier_penalty_bps"] * (withheld == "dataset-served-to-the-judges")
    assert stakes(net) == {a: n - n * charge // 10_000 for a, n in staked.items()}
    if withheld == "trainer-files":
        assert sub["status"] == "rejected" and net.bond(net.trainers[0]) == {"bonded": 1_600, "locked": 0, "unbonding": 0}
        assert net.balance(net.trainers[0].address) == trainer_balance  # no reward, no royalty, no check fee back
    else:
        assert sub["status"] == "expired" and net.bond(net.trainers[0]) == {"bonded": 2_000, "locked": 0, "unbonding": 0}
        assert net.balance(net.trainers[0].address) == trainer_balance + PARAMS["check_fee"]  # its check fee back
    assert [d["submissions"] for d in sorted(listing(net), key=lambda d: d["id"])] == [
        int(bool(dict(training.step_counts(net.round(0)["seed"], net.trainers[1].address, net.round(0)["mix"], k)).get(d))) for d in (0, 1)]


def test_a_dataset_owner_that_withholds_its_data_cannot_get_an_honest_trainer_slashed(two):
    """The attack of review 14c F2: a validator (here the largest, standing for dataset 1's owner) lets the trainers
    fetch its dataset, stops serving it, and claims fraud on a step drawn from it. The other judges cannot load it and
    abstain; the owner alone is short of the quorum, so the claim ends undecided: the trainer is not slashed and gets
    its check fee back, the claimant is paid nothing, the honest auditors that proved an accept lose nothing, and the
    abstaining judges are not counted absent. The submission is not accepted on data the snapshot could not check."""
    net = two
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    owner, honest = net.vals[2], net.vals[:2]
    rnd = net.round(0)
    drawn = training.draw_steps(rnd["seed"], net.trainers[0].address, rnd["mix"], PARAMS["steps"])
    target = drawn.index(1)  # a step drawn from the withheld dataset
    staked, trainer_balance, owner_balance = stakes(net), net.balance(net.trainers[0].address), net.balance(owner.address)
    audit_round(net, {owner: {0: ("fraud", target)}} | {v: {0: "accept"} for v in honest})
    r = net.block([judge(net, owner, [(0, target, False)])] + [abstain(net, v, [(0, target)]) for v in honest])
    assert codes(r) == [("", 0)] * 3
    until_phase(net, "closed")
    sub = net.round(0)["submission_list"][0]
    assert sub["claims"][0]["outcome"] == "undecided" and sub["status"] == "expired"
    assert net.bond(net.trainers[0]) == {"bonded": 2_000, "locked": 0, "unbonding": 0}
    assert net.balance(net.trainers[0].address) == trainer_balance + PARAMS["check_fee"]
    assert net.balance(owner.address) == owner_balance - 3 and stakes(net) == staked  # paid nothing: only its 3 tx fees (1 each) spent
    assert net.round(0)["accepted"] == [] and net.round(0)["version"] is None


def test_an_upheld_dataset_claim_rejects_and_slashes_but_pays_its_claimants_nothing(two):
    """Review 14d F1: a trainer fakes only steps drawn from a mixed dataset whose owner withholds it from the auditors,
    who all claim k + 2. At the dispute the data is served and every judge finds the steps bad: the quorum loaded the
    data (a judge that cannot abstains), so this is proven fraud. The submission is rejected and slash_bps of the bond
    taken, like any upheld claim; but the k + 2 claimants proved nothing and the owner must not profit from its own
    withholding, so their slash shares and the check fee are burned: no claimant is paid or charged."""
    net = two
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    staked, bal = stakes(net), {a: net.balance(a) for a in [net.trainers[0].address] + [v.address for v in net.vals]}
    supply = bank.supply(net.app.store.begin_block())
    step = PARAMS["steps"] + training.CLAIM_DATASET_OFFSET
    audit_round(net, {v: {0: ("fraud", step)} for v in net.vals})
    net.block([judge(net, v, [(0, step, False)]) for v in net.vals])
    until_phase(net, "closed")
    sub = net.round(0)["submission_list"][0]
    assert sub["claims"][0]["outcome"] == "upheld" and sub["status"] == "rejected"
    slashed = 2_000 * PARAMS["slash_bps"] // 10_000
    assert net.bond(net.trainers[0]) == {"bonded": 2_000 - slashed, "locked": 0, "unbonding": 0}
    assert net.balance(net.trainers[0].address) == bal[net.trainers[0].address]  # no check fee back
    assert stakes(net) == staked and all(net.balance(v.address) == bal[v.address] - 3 for v in net.vals)  # only tx fees
    assert supply - bank.supply(net.app.store.begin_block()) == slashed + PARAMS["check_fee"]  # all burned


def test_an_upheld_dataset_claim_beside_a_step_claim_burns_only_the_dataset_claimants_shares(two):
    """The slash share an upheld k + 2 claimant would get is burned, not handed to the other upheld claimants: with
    one step claimant and two k + 2 claimants, the step claimant gets a third of the check fee and slash share."""
    net = two
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    rnd = net.round(0)
    target = training.draw_steps(rnd["seed"], net.trainers[0].address, rnd["mix"], PARAMS["steps"]).index(1)
    step = PARAMS["steps"] + training.CLAIM_DATASET_OFFSET
    prover, k2 = net.vals[2], net.vals[:2]
    before = {v.address: net.balance(v.address) for v in net.vals}
    audit_round(net, {prover: {0: ("fraud", target)}} | {v: {0: ("fraud", step)} for v in k2})
    net.block([judge(net, v, [(0, target, False), (0, step, False)]) for v in net.vals])
    until_phase(net, "closed")
    sub = net.round(0)["submission_list"][0]
    assert [c["outcome"] for c in sub["claims"]] == ["upheld", "upheld"] and sub["status"] == "rejected"
    share = (PARAMS["check_fee"] + 2_000 * PARAMS["slash_bps"] // 10_000 * PARAMS["attester_share_bps"] // 10_000) // 3
    assert net.balance(prover.address) - before[prover.address] == share - 3
    assert all(net.balance(v.address) == before[v.address] - 3 for v in k2)


@pytest.mark.parametrize("decided", [True, False])
def test_an_abstention_on_a_decided_claim_is_charged_like_absence(two, decided):
    """Review 14d F2: an abstention cannot be checked, so where a quorum of judges loaded the data and decided the
    claim, abstaining pays verifier_penalty_bps as absence does (not recomputing is never cheaper than recomputing);
    on a claim that stays undecided nobody showed the data was there, so it stays free while silence is charged."""
    net = two
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    rnd = net.round(0)
    target = training.draw_steps(rnd["seed"], net.trainers[0].address, rnd["mix"], PARAMS["steps"]).index(1)
    honest, lazy, other = net.vals[2], net.vals[0], net.vals[1]  # powers 20, 10, 10 of 40
    staked = stakes(net)
    # Accepts from another kernel path (no proofs) are never charged accepted_fraud: the judging alone is priced here.
    audit_round(net, {honest: {0: ("fraud", target)}, lazy: {0: ("accept", "none")}, other: {0: ("accept", "none")}})
    txs = [judge(net, honest, [(0, target, False)]), abstain(net, lazy, [(0, target)])]
    net.block(txs + [judge(net, other, [(0, target, False)])] if decided else txs)  # undecided: `other` says nothing
    until_phase(net, "closed")
    sub = net.round(0)["submission_list"][0]
    assert sub["claims"][0]["outcome"] == ("upheld" if decided else "undecided")
    assert sub["status"] == ("rejected" if decided else "expired")
    charged = {v.address: staked[v.address] - stakes(net)[v.address] for v in net.vals}
    penalty = {v.address: staked[v.address] * PARAMS["verifier_penalty_bps"] // 10_000 for v in net.vals}
    assert penalty[lazy.address] > 0
    if decided:  # `other` judged with the quorum after accepting: only the abstention costs
        assert charged == {honest.address: 0, lazy.address: penalty[lazy.address], other.address: 0}
    else:  # the abstention is free, silence is absence
        assert charged == {honest.address: 0, lazy.address: 0, other.address: penalty[other.address]}


def test_a_refuted_dataset_claim_costs_its_claimant_the_verifier_penalty(two):
    """Review 14d F3: a committee member that claims k + 2 instead of recomputing, refuted by every judge (the data
    was there and the steps reproduce), pays verifier_penalty_bps like a wrong judge: "unavailable" is no free veto.
    The judges that replayed the steps are not charged."""
    net = two
    bond_all(net)
    net.block([submit(net, net.trainers[0])])
    step = PARAMS["steps"] + training.CLAIM_DATASET_OFFSET
    big = net.vals[2]
    staked = stakes(net)
    audit_round(net, {big: {0: ("fraud", step)}, net.vals[0]: {0: "accept"}, net.vals[1]: {0: "accept"}})
    events = list(net.block([judge(net, v, [(0, step, True)]) for v in net.vals]).events)  # all judged: the dispute ends
    while net.round(0)["phase"] != "closed":
        events += net.block([]).events
    assert net.round(0)["submission_list"][0]["claims"][0]["outcome"] == "refuted"
    assert stakes(net) == staked | {big.address: staked[big.address] - staked[big.address] * PARAMS["verifier_penalty_bps"] // 10_000}
    penalized = [{a.key: a.value for a in e.attributes} for e in events if e.type == "verifier_penalized"]
    assert [(p["validator"], p["reason"]) for p in penalized] == [(big.address, "false_dataset_claim")]


def test_an_abstention_is_refused_where_no_mixed_dataset_is_needed(two):
    """A judge may abstain only on a claim that needs a dataset other than the round's own (a step drawn from one, or
    a dataset-unavailable claim): the endpoints, the trainer's files and a step of the round's own dataset need none,
    so abstaining there would be a free way out of judging. An abstention that also says valid is refused too."""
    net = two
    bond_all(net)
    net.block([submit(net, net.trainers[0]), submit(net, net.trainers[1])])
    rnd = net.round(0)
    k = PARAMS["steps"]
    own = training.draw_steps(rnd["seed"], net.trainers[0].address, rnd["mix"], k).index(0)
    mixed = training.draw_steps(rnd["seed"], net.trainers[1].address, rnd["mix"], k).index(1)
    audit_round(net, {net.vals[0]: {0: ("fraud", own), 1: ("fraud", mixed)}, net.vals[1]: {0: ("fraud", k), 1: "accept"},
                      net.vals[2]: {0: ("fraud", k + 1), 1: "accept"}})
    before = [s["claims"] for s in net.round(0)["submission_list"]]
    both = tx.MsgJudgeClaims(round=0, judgements=[tx.ClaimJudgement(submission=1, step=mixed, valid=True, abstain=True)])
    r = net.block([abstain(net, val, [(0, step)]) for val, step in zip(net.vals, (own, k, k + 1))] + [net.tx(net.vals[0], both)])
    assert codes(r) == [("training", 5)] * 4 and all("needs no dataset but the round's own" in t.log for t in r.tx_results[:3])
    assert "an abstention says neither valid nor invalid" in r.tx_results[3].log
    assert net.round(0)["phase"] == "dispute" and [s["claims"] for s in net.round(0)["submission_list"]] == before and net.round(0)["judged"] == []
    assert codes(net.block([abstain(net, net.vals[1], [(1, mixed)])])) == [("", 0)]  # a step drawn from dataset 1: fine
    assert net.round(0)["submission_list"][1]["claims"][0]["abstain_power"] == dict(map(tuple, net.round(0)["powers"]))[net.vals[1].address]


def test_a_dataset_unavailable_verdict_needs_a_sample_that_draws_from_a_mixed_dataset(tmp_path):
    """With only the round's own dataset admitted, no step draws from a dataset an owner could withhold: a k + 2
    verdict there is refused (the auditor must say what it found)."""
    net = market_net(tmp_path, [dataset_entry("kjv", owner=OWNER_A.address, weight=1), dataset_entry("web", owner=OWNER_B.address, weight=0)])
    try:
        bond_all(net)
        net.block([submit(net, net.trainers[0])])
        until_phase(net, "commit")
        assert net.round(0)["mix"] == [[0, 1]]
        v = verdict(net, net.vals[0], 0, "fraud", fraud_step=PARAMS["steps"] + training.CLAIM_DATASET_OFFSET)
        assert codes(net.block([commit(net, net.vals[0], [v])])) == [("", 0)]
        until_phase(net, "reveal")
        r = net.block([reveal(net, net.vals[0], [v])])
        assert codes(r) == [("training", 13)] and "draws from a dataset other than the round's own" in r.tx_results[0].log
    finally:
        net.app.close()


# --- admission: gov only ---------------------------------------------------------------


def test_only_the_gov_account_sets_weights(two):
    net = two
    stranger = net.trainers[2]
    r = net.block([net.tx(stranger, tx.MsgSetDatasetWeight(dataset=1, weight=1_000_000))])
    assert codes(r) == [("datasets", 4)] and "only the gov module account" in r.tx_results[0].log and "\n" not in r.tx_results[0].log
    assert admitted(net) == [[0, 1], [1, 3]]  # untouched
    assert as_gov(net, tx.MsgSetDatasetWeight(dataset=1, weight=9)) == ""
    assert admitted(net) == [[0, 1], [1, 9]]
    # Bad input from gov fails the whole batch with a one-line reason and leaves every weight as it was.
    for msgs, words in [
        ([tx.MsgSetDatasetWeight(dataset=0, weight=5), tx.MsgSetDatasetWeight(dataset=7, weight=1)], "unknown dataset 7"),
        ([tx.MsgSetDatasetWeight(dataset=0, weight=datasets.MAX_WEIGHT + 1)], "above the maximum"),
        # Review 14b F6: ids are first come, so a proposal may pin the content it means; another's fails.
        ([tx.MsgSetDatasetWeight(dataset=1, weight=5, sha256=sha("kjv"))], f"dataset 1 has sha256 {sha('web')}, not"),
        ([tx.MsgSetDatasetWeight(dataset=1, weight=5, sha256="x" * 10_000)], "(datasets code 6)"),
    ]:
        reason = as_gov(net, *msgs)
        assert words in reason and "\n" not in reason and len(reason) < 1_000, reason
        assert admitted(net) == [[0, 1], [1, 9]]
    assert as_gov(net, tx.MsgSetDatasetWeight(dataset=1, weight=5, sha256=sha("web"))) == ""
    assert admitted(net) == [[0, 1], [1, 5]]


def test_admission_is_bounded(tmp_path):
    net = market_net(tmp_path, [dataset_entry(f"d{i}", weight=1 if i < datasets.MAX_ADMITTED else 0) for i in range(datasets.MAX_ADMITTED + 1)])
    assert len(admitted(net)) == datasets.MAX_ADMITTED
    assert "max_admitted" in as_gov(net, tx.MsgSetDatasetWeight(dataset=datasets.MAX_ADMITTED, weight=1))
    assert as_gov(net, tx.MsgSetDatasetWeight(dataset=0, weight=0), tx.MsgSetDatasetWeight(dataset=datasets.MAX_ADMITTED, weight=1)) == ""
    assert [d for d, _ in admitted(net)] == list(range(1, datasets.MAX_ADMITTED + 1))
    net.app.close()


def test_delisting_stops_draws_from_the_next_round(two):
    net = two
    bond_all(net)
    assert net.round()["mix"] == [[0, 1], [1, 3]]
    assert as_gov(net, tx.MsgSetDatasetWeight(dataset=1, weight=0)) == ""
    assert admitted(net) == [[0, 1]] and net.round(0)["mix"] == [[0, 1], [1, 3]]  # the open round keeps its snapshot
    until_phase(net, "closed")  # nothing submitted: round 0 closes empty
    net.block([])
    rnd = net.round()
    assert rnd["id"] == 1 and rnd["mix"] == [[0, 1]]
    assert set(training.draw_steps(rnd["seed"], net.trainers[0].address, rnd["mix"], PARAMS["steps"])) == {0}
    assert as_gov(net, tx.MsgSetDatasetWeight(dataset=0, weight=0)) == ""
    until_phase(net, "closed", round_id=1)
    for _ in range(3):
        net.block([])
    assert net.round()["id"] == 1  # nothing admitted: no round opens


# --- registration ------------------------------------------------------------------------


def test_anyone_registers_a_dataset_with_an_owner_and_a_royalty(two):
    net = two
    alice = net.trainers[2]
    good = tx.MsgRegisterDataset(name="wiki", cid=cid("wiki"), sha256=sha("wiki"), licence="CC-BY-SA-4.0", bytes=10, tokens=10,
                                 tokenizer="bytes", owner=OWNER_A.address, royalty_bps=5_000)
    bad = [
        (dict(royalty_bps=5_001), "royalty 5001 bps is above the maximum of 5000"),
        (dict(owner="gc1notanaddress"), "invalid owner address"),
        (dict(owner=training.TRAINER_POOL), "a module account cannot own a dataset"),
        (dict(owner=datasets.GOV), "a module account cannot own a dataset"),
        (dict(name=""), "invalid dataset name"),
    ]
    listed = listing(net)
    for fields, words in bad:
        msg = tx.MsgRegisterDataset()
        msg.CopyFrom(good)
        for k, v in fields.items():
            setattr(msg, k, v)
        r = net.block([net.tx(alice, msg)])
        assert codes(r) == [("datasets", 1)] and words in r.tx_results[0].log and "\n" not in r.tx_results[0].log
    assert listing(net) == listed  # untouched
    assert codes(net.block([net.tx(alice, good)])) == [("", 0)]
    entry = listing(net)[2]
    assert (entry["id"], entry["creator"], entry["owner"], entry["royalty_bps"], entry["weight"], entry["earned"]) == (
        2, alice.address, OWNER_A.address, 5_000, 0, 0)  # registered, not admitted: no round draws from it yet
    assert admitted(net) == [[0, 1], [1, 3]]
    own = tx.MsgRegisterDataset(name="own", cid=cid("own"), sha256=sha("own"), licence="MIT", bytes=1)
    assert codes(net.block([net.tx(alice, own)])) == [("", 0)]
    assert listing(net)[3]["owner"] == alice.address  # no owner given: the signer


def test_params_and_genesis_are_checked():
    with pytest.raises(ValueError, match="max_royalty_bps"):
        datasets.Params(max_royalty_bps=10_001).validate()
    with pytest.raises(ValueError, match="max_admitted"):
        datasets.Params(max_admitted=datasets.MAX_ADMITTED + 1).validate()
    with pytest.raises(ValueError, match="max_submissions"):
        training.Params(max_submissions=10_000).validate()


def test_a_royalty_in_genesis_needs_an_owner_address(tmp_path):
    with pytest.raises(ValueError, match="owner address"):
        market_net(tmp_path, [dataset_entry("kjv", royalty_bps=100)])


def test_genesis_datasets_are_admitted_unless_weighted_zero(tmp_path):
    net = market_net(tmp_path, [dataset_entry("kjv"), dataset_entry("later", weight=0)])
    assert admitted(net) == [[0, datasets.GENESIS_WEIGHT]]
    assert bank.is_module_account(datasets.GOV) and not bank.is_module_account(OWNER_A.address)
    net.app.close()


def test_a_round_without_a_mix_pays_the_trainer_everything():
    """Rounds opened before the market (no `mix`) draw nothing: the whole reward goes to the trainer."""
    assert training.step_counts(SEED, fixed_key(10).address, [], 8) == []
    assert training.reward_split(500, [], {}) == (500, [])


def test_a_passed_proposal_admits_a_dataset_and_a_bad_one_is_refused_at_submission(tmp_path):
    """The whole path through the gov module: submit, deposit, validators vote, the message runs as the gov account."""
    gov = {"params": {"min_deposit": 100, "expedited_min_deposit": 100, "deposit_blocks": 5, "voting_blocks": 3, "expedited_voting_blocks": 2}}
    net = market_net(tmp_path, [dataset_entry("kjv"), dataset_entry("web", owner=OWNER_B.address, royalty_bps=500, weight=0)], gov=gov)
    proposer = net.vals[0]

    def proposal(*msgs):
        return net.tx(proposer, tx.MsgSubmitProposal(messages=[body(m) for m in msgs], initial_deposit=100, title="admit web", summary="web, 5%"))

    refused = net.block([proposal(tx.MsgSetDatasetWeight(dataset=9, weight=1))])
    assert codes(refused)[0][0] == "gov" and "unknown dataset 9" in refused.tx_results[0].log
    assert codes(net.block([proposal(tx.MsgSetDatasetWeight(dataset=1, weight=3_000))])) == [("", 0)]
    proposals = net.pages("/gov/proposals")
    pid = max(p["id"] for p in proposals)
    assert codes(net.block([net.tx(v, tx.MsgVote(proposal=pid, option=1)) for v in net.vals])) == [("", 0)] * 3
    for _ in range(4):
        net.block([])
    assert admitted(net) == [[0, datasets.GENESIS_WEIGHT], [1, 3_000]]
    net.app.close()


GOVERNED = {"params": {"min_deposit": 100, "expedited_min_deposit": 100, "deposit_blocks": 5, "voting_blocks": 3, "expedited_voting_blocks": 2}}


def pass_proposal(net, *msgs):
    """Submit msgs as one proposal (full deposit), every validator votes yes, run to its end: the proposal."""
    r = net.block([net.tx(net.vals[0], tx.MsgSubmitProposal(messages=[body(m) for m in msgs], initial_deposit=100, title="t", summary="s"))])
    assert codes(r) == [("", 0)], r.tx_results[0].log
    pid = max(p["id"] for p in net.pages("/gov/proposals"))
    assert codes(net.block([net.tx(v, tx.MsgVote(proposal=pid, option=1)) for v in net.vals])) == [("", 0)] * 3
    end = json.loads(net.query("/gov/proposal", str(pid)).value)["voting_end"]
    while net.height < end:
        net.block([])
    return json.loads(net.query("/gov/proposal", str(pid)).value)


def test_gov_reassigns_a_datasets_owner_and_royalty(tmp_path):
    """Review finding 8: the first registrant of a sha256 owns it; governance is the remedy for a front-runner."""
    net = market_net(tmp_path, [dataset_entry("kjv"), dataset_entry("web", owner=OWNER_B.address, royalty_bps=5_000, weight=0)], gov=GOVERNED)
    move = tx.MsgSetDatasetOwner(dataset=1, owner=OWNER_A.address, royalty_bps=200)
    direct = net.block([net.tx(net.trainers[0], move)])
    assert codes(direct) == [("datasets", datasets.Unauthorized.code)] and "only the gov module account" in direct.tx_results[0].log
    for bad, words in [(dict(dataset=9), "unknown dataset 9"), (dict(owner=""), "names the new owner"),
                       (dict(owner=datasets.GOV), "a module account cannot own a dataset"), (dict(owner="gc1nope"), "invalid owner address"),
                       (dict(royalty_bps=5_001), "royalty 5001 bps is above the maximum of 5000")]:
        msg = tx.MsgSetDatasetOwner()
        msg.CopyFrom(move)
        for k, v in bad.items():
            setattr(msg, k, v)
        r = net.block([net.tx(net.vals[0], tx.MsgSubmitProposal(messages=[body(msg)], initial_deposit=100, title="t", summary="s"))])
        assert codes(r)[0][0] == "gov" and words in r.tx_results[0].log, r.tx_results[0].log
    before = listing(net)[1]
    assert (before["owner"], before["royalty_bps"], before["creator"]) == (OWNER_B.address, 5_000, "genesis")
    assert pass_proposal(net, move)["status"] == "passed"
    after = listing(net)[1]
    assert (after["owner"], after["royalty_bps"]) == (OWNER_A.address, 200)
    assert {k: v for k, v in after.items() if k not in ("owner", "royalty_bps")} == {k: v for k, v in before.items() if k not in ("owner", "royalty_bps")}
    net.app.close()


def test_a_proposal_registering_a_dataset_must_name_its_owner(tmp_path):
    """Review finding 9: registered by a passed proposal without an owner, the gov module account would own it."""
    net = market_net(tmp_path, [dataset_entry("kjv")], gov=GOVERNED)
    reg = tx.MsgRegisterDataset(name="d", cid=cid("d"), sha256=sha("d"), licence="cc0", bytes=10, tokens=10, tokenizer="bytes", royalty_bps=100)
    r = net.block([net.tx(net.vals[0], tx.MsgSubmitProposal(messages=[body(reg)], initial_deposit=100, title="t", summary="s"))])
    assert codes(r)[0][0] == "gov" and "module account (a proposal registers as gov): name the dataset's owner" in r.tx_results[0].log
    reg.owner = OWNER_A.address
    assert pass_proposal(net, reg, tx.MsgSetDatasetWeight(dataset=1, weight=1_000))["status"] == "passed"
    entry = listing(net)[1]
    assert (entry["owner"], entry["creator"], entry["weight"]) == (OWNER_A.address, datasets.GOV, 1_000)
    net.app.close()
