"""The data market on a real network, through the CLI as the README's "Data market" section uses it.

`make localnet MODEL=tiny`'s network (4 validators with Kubo nodes and validator workers, the tiny GPT and
the KJV as version 0 and dataset 0) with short gov windows. dev2 registers the KJV's first 5000 lines as
dataset 1 with `tx dataset add`, owned by dev3 at a 5% royalty; a proposal admits it with weight 1000
(`set_dataset_weight`) and the four validators vote it through. Only then does dev1 bond and train, so
round 0 is the first round and opens with both datasets in its mix.

Asserted: round 0's mix is both datasets; dev1's accepted submission drew steps from dataset 1 (the
chain's draw, shown by `query training round`); dev3's balance grew by exactly dataset 1's royalty on the
reward (`training.reward_split` of the drawn steps), which `dataset list` reports as its earnings; `model
lineage 1` names both datasets and dev1 as the trainer; every node has the same app hash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from abci_app import localnet
from abci_app.modules import training
from tests.e2e.conftest import serve, training_localnet
from tests.e2e.helpers import assert_same_app_hash, run_cli, run_json, run_round, training_session, wait_until

pytestmark = pytest.mark.e2e

APP_STATE = localnet.localnet_app_state(localnet.MODEL_TINY)  # the tiny model's training params: k = 64 steps, s = 12 audited
APP_STATE["training"]["params"]["eval_prompts"] = 0  # the prompt score is not what this test is about
APP_STATE["gov"]["params"].update({"deposit_blocks": 20, "voting_blocks": 15, "expedited_voting_blocks": 5})
TRAINING = APP_STATE["training"]["params"]
MIN_DEPOSIT = APP_STATE["gov"]["params"]["min_deposit"]
ROYALTY_BPS, WEIGHT = 500, 1_000
VALIDATORS = [f"validator{i}" for i in range(4)]
TEST_DEADLINE = 900.0


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.Network]:
    net = training_localnet(tmp_path_factory.mktemp("market"), "gradchain-market-e2e", APP_STATE, localnet.MODEL_TINY)
    yield from serve(net, height=2, poke_first=False, timeout=120)


def dataset(net: localnet.Network, dataset_id: int) -> dict:
    return next(d for d in run_json(net, "dataset", "list") if d["id"] == dataset_id)


@pytest.mark.timeout(1200)
def test_a_dataset_admitted_by_governance_is_drawn_from_and_its_owner_paid(network: localnet.Network, tmp_path: Path) -> None:
    net = network
    owner = net.account("dev3").address
    corpus = next(Path(f) for f in net.genesis_files if f.endswith(".txt"))
    early = tmp_path / "kjv-early.txt"
    early.write_text("".join(corpus.read_text().splitlines(keepends=True)[:5000]))

    # Register: not drawn from until governance admits it.
    run_cli(net, "tx", "dataset", "add", str(early), "--from", "dev2", "--name", "kjv-early", "--licence", "public-domain",
            "--owner", owner, "--royalty-bps", str(ROYALTY_BPS), "-y")
    registered = dataset(net, 1)
    assert (registered["name"], registered["owner"], registered["royalty_bps"], registered["weight"]) == ("kjv-early", owner, ROYALTY_BPS, 0)

    # Admit by a proposal the validators vote through.
    admit = tmp_path / "admit.json"  # as the README: drafted, pinned to the dataset's sha256, with the whole deposit
    run_cli(net, "tx", "gov", "submit-proposal", str(admit), "--draft", "--admit", "1", "--weight", str(WEIGHT))
    drafted = json.loads(admit.read_text())
    assert drafted["deposit"] == f"{MIN_DEPOSIT}ugrad" and drafted["messages"] == [
        {"@type": "set_dataset_weight", "dataset": 1, "weight": WEIGHT, "sha256": registered["sha256"]}], drafted
    run_cli(net, "tx", "gov", "submit-proposal", str(admit), "--from", "dev2", "-y")
    proposal_id = run_json(net, "query", "gov", "proposals")["proposals"][0]["id"]
    for v in VALIDATORS:
        run_cli(net, "tx", "gov", "vote", str(proposal_id), "yes", "--from", v, "-y")
    voting_end = run_json(net, "query", "gov", "proposal", str(proposal_id))["voting_end"]
    wait_until(lambda: run_json(net, "query", "gov", "proposal", str(proposal_id))["status"] != "voting_period", 120,
               f"proposal {proposal_id} to be decided at height {voting_end}", poll=1.0)
    decided = run_json(net, "query", "gov", "proposal", str(proposal_id))
    assert decided["status"] == "passed", decided
    assert dataset(net, 1)["weight"] == WEIGHT

    with training_session(net, tmp_path, {"dev1": None}, TEST_DEADLINE) as (trainers, chain, timeline):
        paid_before = chain.query_int("/bank/balance", owner)
        run_round(net, chain, trainers, 2 * TRAINING["min_trainer_bond"], timeline, decide_s=420, merge_s=240)

        rnd = run_json(net, "query", "training", "round", "0")
        assert rnd["mix"] == [[0, 1_000], [1, WEIGHT]] and rnd["version"] == 1, rnd
        (sub,) = rnd["submission_list"]
        assert (sub["trainer"], sub["status"]) == (net.account("dev1").address, "accepted"), sub
        counts = training.step_counts(rnd["seed"], sub["trainer"], rnd["mix"], sub["steps"])
        drawn = dict(map(tuple, counts))
        assert drawn.get(1, 0) > 0, counts  # the new dataset was drawn from
        assert [(m["dataset"], m["steps_drawn"]) for m in rnd["datasets"]] == [(0, drawn.get(0, 0)), (1, drawn[1])]

        # The owner is paid dataset 1's royalty on the reward, exactly; `dataset list` shows it as earned.
        _, royalties = training.reward_split(TRAINING["reward"], counts, {0: 0, 1: ROYALTY_BPS})
        royalty = dict(map(tuple, royalties))[1]
        assert royalty == TRAINING["reward"] * ROYALTY_BPS * drawn[1] // (10_000 * sub["steps"]) > 0
        assert chain.query_int("/bank/balance", owner) == paid_before + royalty
        earned = dataset(net, 1)
        assert (earned["earned"], earned["windows"], earned["submissions"]) == (royalty, drawn[1] * TRAINING["batch_size"], 1), earned

        # The new version's lineage names both datasets and the trainer.
        lineage = run_json(net, "model", "lineage", "1")
        assert sorted((d["id"], d["name"]) for d in lineage["datasets"]) == [(0, dataset(net, 0)["name"]), (1, "kjv-early")], lineage
        assert [t["trainer"] for t in lineage["contributors"]] == [sub["trainer"]], lineage
        text = run_cli(net, "model", "lineage", "1")
        assert "kjv-early" in text and sub["trainer"] in text
        assert_same_app_hash(net)
