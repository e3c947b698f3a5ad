"""Unit tests for `gradchain query training round|submissions|verdicts|params`.

The node is test_cli_staking's AppNode (test_cli's RPC server in front of the
real Application) over test_training's TrainingChain, with datasets, a
registered model and training enabled. Trainers bond through the CLI;
submissions, sealed and revealed verdicts, judgements and sealed and revealed
merge votes, which only the workers send, are built by test_training's tx helpers (real audit
signatures and samples) and committed directly (`TrainingNode.drive`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from abci_app import tx as txlib
from abci_app.keyring import Keyring
from abci_app.modules import training
from tests.unit.test_cli import add_key, assert_one_error_line, free_port, run
from tests.unit.test_cli_staking import MIN_FEE, AppNode, cons_key, ok, ok_json, on_app_thread
from tests.unit.test_training import (PARAMS, TrainingChain, audit_round, cid, codes, commit, commit_merge, judge, reveal, reveal_merge, sha, submit,
                                      until_phase, verdict)

# test_training's params (its helpers submit PARAMS["steps"] steps), with windows of distinct lengths.
TRAINING = PARAMS | {"submission_blocks": 8, "verification_blocks": 6, "reveal_blocks": 5, "dispute_blocks": 4, "merge_blocks": 6}
STAKING = {"params": {"min_self_bond": 100, "power_unit": 100, "downtime_max_missed": 1000}}
FUNDS = 100_000


class TrainingNode(AppNode):
    """AppNode over a TrainingChain with a dataset, model version 0 and training params in genesis."""

    def __init__(self, app_home: Path, balances: dict[str, int], staking: dict, modules: dict):
        self.modules = modules
        super().__init__(app_home, balances, staking)

    @on_app_thread
    def _start(self, app_home: Path, balances: dict[str, int], staking: dict) -> None:
        self.chain = TrainingChain(app_home, balances, min_fee=MIN_FEE, staking=staking, **self.modules)
        self.app_hashes = {1: self.chain.app.store.app_hash}
        self.power = {u.pub_key.ed25519: u.power for u in self.chain.init.validators}
        self._block([])

    @on_app_thread
    def drive(self, use: Callable[[NodeNet], Any]) -> Any:
        """Run `use` (test_training's helpers, given this node as their chain) on the app thread, which owns the store."""
        return use(NodeNet(self))

    @on_app_thread
    def round(self, round_id: int | None = None) -> dict | None:
        return self.chain.round(round_id)


class NodeNet:
    """The chain test_training's helpers expect (tx, block, round, app), over the node's: txs pay the node's fee
    at the account's next nonce (the CLI sends txs too), blocks go through the node, which records their app hashes."""

    def __init__(self, node: TrainingNode):
        self.node, self.app, self.round = node, node.chain.app, node.chain.round

    def tx(self, key: Any, msg: Any) -> bytes:
        chain = self.node.chain
        return chain.tx(key, msg, fee=MIN_FEE, nonce=max(chain.nonce(key.address), chain.nonces.get(key.address, 0)))

    def block(self, txs: list[bytes]) -> Any:
        return self.node._block(txs)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def more_datasets() -> list[dict]:
    """Datasets admitted in genesis after kjv (a test overrides this by parametrizing it)."""
    return []


@pytest.fixture
def node(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, more_datasets: list[dict]) -> Iterator[TrainingNode]:
    """Validators val0, val1, val2 (power 10, 10, 20) and trainers alice, bob: all keys in the keyring."""
    names = ["val0", "val1", "val2", "alice", "bob"]
    addresses = {name: add_key(home, name) for name in names}
    validators = [{"operator": addresses[f"val{i}"], "pubkey": cons_key(i).hex(), "moniker": f"val{i}", "self_bond": bond}
                  for i, bond in enumerate([1_000, 1_000, 2_000])]
    modules = {
        "datasets": {"datasets": [{"name": "kjv", "cid": cid("corpus"), "sha256": sha("corpus"), "licence": "public-domain",
                                   "bytes": 100, "tokens": 100, "tokenizer": "bytes"}] + more_datasets},
        "registry": {"versions": [{"cid": cid("v0"), "sha256": sha("v0"), "bytes": 10, "family": "tiny-gpt", "config": {"n_layer": 1},
                                   "dataset_ids": [0], "licence": "Apache-2.0"}]},
        "training": {"params": TRAINING},
    }
    app_node = TrainingNode(tmp_path / "app", {a: FUNDS for a in addresses.values()}, STAKING | {"validators": validators}, modules)
    app_node.addresses = addresses
    app_node.keys = {name: Keyring(home).get(name) for name in names}
    app_node.write_genesis(home)
    monkeypatch.setenv("GRADCHAIN_NODE", app_node.url)
    yield app_node
    app_node.close()


def all_ok(response: Any) -> None:
    assert codes(response) == [("", 0)] * len(response.tx_results), [r.log for r in response.tx_results]


MERGED = txlib.MsgAttestMerge(round=0, cid=cid("merged"), sha256=sha("merged"), bytes=10, held_out_loss_micro=2_345_678)


def field(text: str, name: str) -> str:
    """The value of `name:` in a key-value listing."""
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name + ":"))


def round_text(home: Path, node: TrainingNode, *round_id: str) -> str:
    """`query training round [N]` as text, after checking that its JSON is the chain's round view and its mix."""
    found, rnd = ok_json(home, "query", "training", "round", *round_id), node.round(*map(int, round_id))
    mix = found.pop("datasets")
    assert found == rnd | {"height": node.height}
    # every admitted dataset of the round, named, and each step of each submission drawn from one of them
    assert [[m["dataset"], m["weight"]] for m in mix] == rnd["mix"] and all(m["name"] for m in mix)
    assert sum(m["steps_drawn"] for m in mix) == sum(s["steps"] for s in rnd["submission_list"])
    return ok(home, "query", "training", "round", *round_id)


def now(first: int, last: int, height: int) -> str:
    return f"heights {first}-{last} at the latest (now; {last - height} blocks left)"


# --- params -----------------------------------------------------------------------------


def test_params(home: Path, node: TrainingNode) -> None:
    params = ok_json(home, "query", "training", "params")
    assert params == json.loads(json.dumps(training.Params(**TRAINING).__dict__))
    text = ok(home, "query", "training", "params")
    assert field(text, "submission_blocks") == "8" and field(text, "quorum_bps") == "6667" and field(text, "enabled") == "true"
    assert field(text, "audit_steps") == "2" and field(text, "committee_size") == "0"
    assert [line.split(":")[0] for line in text.splitlines()] == sorted(params)
    proven = ok_json(home, "query", "training", "params", "--prove")
    assert proven["proof"]["verified"] is True and proven["reward"] == 500
    assert "proof verified against app hash" in ok(home, "query", "training", "params", "--prove")


# --- a whole round --------------------------------------------------------------------------


def test_no_round_before_a_trainer_bonds(home: Path, node: TrainingNode) -> None:
    for args in (["round"], ["submissions"], ["verdicts"]):
        result = run(home, "query", "training", *args)
        assert result.exit_code == 1 and result.stdout == ""
        assert_one_error_line(result.stderr, "no training round has opened yet", "a trainer is bonded")
    missing = run(home, "query", "training", "round", "0")
    assert_one_error_line(missing.stderr, "round 0 does not exist", "no round has opened yet")


def test_a_round_through_every_phase_with_a_dispute(home: Path, node: TrainingNode) -> None:
    """Two submissions: a false fraud claim on alice's (refuted: accepted), a true one on bob's (upheld: rejected)."""
    ok(home, "tx", "staking", "bond-trainer", "alice", "2000", "-y")
    ok(home, "tx", "staking", "bond-trainer", "bob", "2000", "-y")
    alice, bob, v0, v1, v2 = (node.keys[n] for n in ("alice", "bob", "val0", "val1", "val2"))
    opened = node.round()
    first, submit_until = opened["open_height"], opened["submit_until"]

    # submit: every later window is still to come
    rnd = ok_json(home, "query", "training", "round")
    assert {k: rnd[k] for k in ("id", "phase", "base_version", "dataset_id", "seed", "submissions", "version", "beacon")} == {
        "id": 0, "phase": "submit", "base_version": 0, "dataset_id": 0, "seed": opened["seed"], "submissions": 0, "version": None, "beacon": ""}
    assert ok_json(home, "query", "training", "round", "0") == rnd
    text = round_text(home, node)
    assert field(text, "round") == "0 (submit)" and field(text, "height") == str(node.height) and field(text, "seed") == opened["seed"]
    assert field(text, "submit") == f"heights {first}-{submit_until - 1} (now; {submit_until - 1 - node.height} blocks left)"
    assert field(text, "commit") == f"heights {submit_until}-{submit_until + 5} at the latest"
    assert field(text, "reveal") == "after the commit phase, 5 blocks at most"
    assert field(text, "dispute") == "only if an auditor claims fraud, 4 blocks at most"
    assert field(text, "merge") == "after verification, if a submission is accepted; 6 blocks at most"
    assert field(text, "merge_reveal") == "after the merge votes are sealed, 5 blocks at most"
    assert field(text, "beacon").startswith("- (") and field(text, "audit") == "2 of 8 steps recomputed by each auditor"
    assert field(text, "committee") == "every validator of the round (3)"
    assert (field(text, "auditors"), field(text, "claims"), field(text, "version")) == ("-", "0", "-")
    assert field(text, "merge votes") == "0 committed, 0 revealed"
    empty = run(home, "query", "training", "submissions")
    assert empty.exit_code == 0 and empty.stdout == "" and "round 0 (submit) has no submissions" in empty.stderr
    assert ok_json(home, "query", "training", "submissions")["submissions"] == []
    nothing = run(home, "query", "training", "verdicts")
    assert (nothing.exit_code, nothing.stdout, nothing.stderr) == (0, "", f"no verdicts revealed for round 0 (submit) at height {node.height}\n")

    # commit: the window closed, the beacon drew the committees (every validator: committee_size 0)
    all_ok(node.drive(lambda net: net.block([submit(net, alice), submit(net, bob)])))
    rnd = node.drive(lambda net: until_phase(net, "commit"))
    assert rnd["beacon"] and rnd["commit_until"] == submit_until + 6 and len(rnd["auditors"]) == 3
    text = round_text(home, node)
    assert field(text, "round") == "0 (commit)" and field(text, "beacon") == rnd["beacon"]
    assert field(text, "submit") == f"heights {first}-{submit_until - 1}"
    assert field(text, "commit") == now(submit_until, rnd["commit_until"] - 1, node.height)
    assert field(text, "auditors") == "3 (0 committed, 0 revealed)"
    table = ok(home, "query", "training", "submissions").splitlines()
    assert table[0] == f"round 0 (commit), height {node.height}"
    assert table[1].split() == ["INDEX", "TRAINER", "STATUS", "COMMITTEE", "ACCEPT", "NO", "GAIN", "FRAUD", "LOSS", "BEFORE", "LOSS", "AFTER"]
    assert table[2].split() == ["0", alice.address, "pending", "3", "(power", "40)", "0", "0", "0", "2.0000", "1.9000"]
    listed = ok_json(home, "query", "training", "submissions", "--round", "0")
    assert (listed["round"], listed["phase"], listed["height"]) == (0, "commit", node.height)
    assert [s | {"verdicts": [], "claims": []} for s in listed["submissions"]] == rnd["submission_list"]

    # val0 calls alice's step 5 a fraud and accepts bob's with made-up proofs; val2 calls bob's endpoints a fraud
    sealed = node.drive(lambda net: {
        v0: [verdict(net, v0, 0, "fraud", fraud_step=5), verdict(net, v0, 1, proofs="wrong")],
        v1: [verdict(net, v1, 0), verdict(net, v1, 1, "no_gain")],
        v2: [verdict(net, v2, 0), verdict(net, v2, 1, "fraud", fraud_step=TRAINING["steps"])],
    })
    sealed[v1][1].measured_error_ppm = 1_200
    sealed[v2][1].reason = "end state differs"
    all_ok(node.drive(lambda net: net.block([commit(net, v, sealed[v]) for v in (v0, v1)])))
    assert field(round_text(home, node), "auditors") == "3 (2 committed, 0 revealed)"
    waiting = run(home, "query", "training", "verdicts", "--submission", "0")
    assert waiting.stdout == "" and waiting.stderr == (
        f"no verdicts revealed for submission 0 of round 0 (commit; 2 of 3 auditors committed, verdicts open in the reveal phase) at height {node.height}\n")

    # reveal: the last commitment ended the commit phase early
    all_ok(node.drive(lambda net: net.block([commit(net, v2, sealed[v2])])))
    committed_at = node.height
    rnd = node.round()
    text = round_text(home, node)
    assert field(text, "round") == "0 (reveal)"
    assert field(text, "commit") == f"heights {submit_until}-{committed_at} (ended early: everyone acted)"
    assert field(text, "reveal") == now(committed_at + 1, rnd["reveal_until"] - 1, node.height)
    all_ok(node.drive(lambda net: net.block([reveal(net, v, sealed[v]) for v in (v0, v1)])))
    text = round_text(home, node)
    assert (field(text, "auditors"), field(text, "claims")) == ("3 (3 committed, 2 revealed)", "1 (1 open); judged by 0 of 3 validators")
    partial = ok_json(home, "query", "training", "verdicts")
    assert sorted((e["submission"], e["validator"], e["verdict"]) for e in partial["verdicts"]) == sorted([
        (0, v0.address, "fraud"), (0, v1.address, "accept"), (1, v0.address, "accept"), (1, v1.address, "no_gain")])
    assert partial["claims"] == [{"submission": 0, "step": 5, "claimants": [v0.address], "valid_power": 0, "invalid_power": 0, "abstain_power": 0, "outcome": ""}]

    # dispute: two claims for every validator of the round to judge
    all_ok(node.drive(lambda net: net.block([reveal(net, v2, sealed[v2])])))
    revealed_at = node.height
    rnd = node.round()
    text = round_text(home, node)
    assert field(text, "round") == "0 (dispute)"
    assert field(text, "reveal") == f"heights {committed_at + 1}-{revealed_at} (ended early: everyone acted)"
    assert field(text, "dispute") == now(revealed_at + 1, rnd["dispute_until"] - 1, node.height)
    assert (field(text, "auditors"), field(text, "claims")) == ("3 (3 committed, 3 revealed)", "2 (2 open); judged by 0 of 3 validators")
    rows = ok(home, "query", "training", "verdicts").splitlines()
    assert rows[0] == f"round 0 (dispute), height {node.height}"
    assert rows[1].split() == ["SUBMISSION", "VALIDATOR", "VERDICT", "POWER", "STEPS", "CHECKED", "PROOF", "FRAUD", "STEP", "ERROR", "PPM", "HEIGHT", "REASON"]
    by_row = {tuple(row.split()[:2]): row for row in rows[2:8]}
    steps_checked = {(s["index"], e["validator"]): ",".join(map(str, e["steps_checked"])) for s in rnd["submission_list"] for e in s["verdicts"]}
    assert by_row[("0", v0.address)].split() == ["0", v0.address, "fraud", "10", steps_checked[(0, v0.address)], "-", "5", "0", str(revealed_at - 1), "-"]
    assert by_row[("1", v0.address)].split() == ["1", v0.address, "accept", "10", steps_checked[(1, v0.address)], "bad", "-", "0", str(revealed_at - 1), "-"]
    assert by_row[("1", v1.address)].split() == ["1", v1.address, "no_gain", "10", steps_checked[(1, v1.address)], "ok", "-", "1200", str(revealed_at - 1), "-"]
    assert by_row[("1", v2.address)].split()[2:] == ["fraud", "20", steps_checked[(1, v2.address)], "-", "endpoints", "0", str(revealed_at),
                                                     "end", "state", "differs"]
    assert rows[8] == "fraud claims: upheld or refuted by 27 of the round's 40 power"
    assert [row.split() for row in rows[9:]] == [["SUBMISSION", "STEP", "CLAIMANTS", "VALID", "INVALID", "OUTCOME"],
                                                 ["0", "5", v0.address, "0", "0", "open"], ["1", "endpoints", v2.address, "0", "0", "open"]]
    all_ok(node.drive(lambda net: net.block([judge(net, v, [(0, 5, True), (1, TRAINING["steps"], False)]) for v in (v1, v2)])))
    assert field(round_text(home, node), "claims") == "2 (2 open); judged by 2 of 3 validators"
    only_bob = ok_json(home, "query", "training", "verdicts", "--submission", "1")
    assert (only_bob["submission"], "merge_votes" in only_bob) == (1, False)
    assert sorted(e["validator"] for e in only_bob["verdicts"]) == sorted([v0.address, v1.address, v2.address])
    assert [(c["step"], c["valid_power"], c["invalid_power"], c["outcome"]) for c in only_bob["claims"]] == [(TRAINING["steps"], 0, 30, "")]
    no_such = run(home, "query", "training", "verdicts", "--submission", "7")
    assert no_such.exit_code == 1
    assert_one_error_line(no_such.stderr, "round 0 has no submission 7 (2 submitted")

    # merge: the last judge ended the dispute early; alice's claim refuted (accepted), bob's upheld (rejected)
    all_ok(node.drive(lambda net: net.block([judge(net, v0, [(0, 5, False)])])))
    judged_at = node.height
    merging = node.round()
    text = round_text(home, node)
    assert field(text, "round") == "0 (merge)" and field(text, "accepted") == "0" and field(text, "aggregator") == merging["aggregator"]
    assert field(text, "dispute") == f"heights {revealed_at + 1}-{judged_at} (ended early: everyone acted)"
    assert field(text, "merge") == now(judged_at + 1, merging["merge_until"] - 1, node.height)
    assert field(text, "merge_reveal") == "after the merge votes are sealed, 5 blocks at most"
    assert field(text, "claims") == "2 (1 upheld, 1 refuted); judged by 3 of 3 validators"
    assert field(text, "submissions") == "2 (1 accepted, 1 rejected)"
    table = ok(home, "query", "training", "submissions").splitlines()
    assert table[2].split()[:9] == ["0", alice.address, "accepted", "3", "(power", "40)", "30", "0", "10"]
    assert table[3].split()[:9] == ["1", bob.address, "rejected", "3", "(power", "40)", "10", "10", "20"]
    claim_rows = ok(home, "query", "training", "verdicts").splitlines()[-2:]
    assert [row.split() for row in claim_rows] == [["0", "5", v0.address, "30", "10", "refuted"], ["1", "endpoints", v2.address, "0", "30", "upheld"]]

    # sealed merge votes: val0 and val2 recomputed the merge, val1 seals another file; nothing is public yet
    odd = txlib.MsgAttestMerge(round=0, cid=cid("odd"), sha256=sha("odd"), bytes=10, held_out_loss_micro=1)
    all_ok(node.drive(lambda net: net.block([commit_merge(net, v0, MERGED), commit_merge(net, v2, MERGED)])))
    text = round_text(home, node)
    assert (field(text, "round"), field(text, "merge votes")) == ("0 (merge)", "2 committed, 0 revealed")
    assert ok_json(home, "query", "training", "verdicts")["merge_votes"] == []

    # merge_reveal: the last commitment ended the merge's commit window early
    all_ok(node.drive(lambda net: net.block([commit_merge(net, v1, odd)])))
    sealed_at = node.height
    revealing = node.round()
    text = round_text(home, node)
    assert (field(text, "round"), field(text, "merge votes")) == ("0 (merge_reveal)", "3 committed, 0 revealed")
    assert field(text, "merge") == f"heights {judged_at + 1}-{sealed_at} (ended early: everyone acted)"
    assert field(text, "merge_reveal") == now(sealed_at + 1, revealing["merge_reveal_until"] - 1, node.height)
    all_ok(node.drive(lambda net: net.block([reveal_merge(net, v0, MERGED)])))
    text = round_text(home, node)
    assert (field(text, "round"), field(text, "merge votes"), field(text, "version")) == ("0 (merge_reveal)", "3 committed, 1 revealed", "-")

    # 30 of 40 revealed the same merge: nothing is decided until every committer revealed (or the window ends)
    all_ok(node.drive(lambda net: net.block([reveal_merge(net, v2, MERGED)])))
    text = round_text(home, node)
    assert (field(text, "round"), field(text, "merge votes"), field(text, "version")) == ("0 (merge_reveal)", "3 committed, 2 revealed", "-")

    # closed: the last reveal (the odd file) ends it at the end of that block: version 1
    all_ok(node.drive(lambda net: net.block([reveal_merge(net, v1, odd)])))
    text = round_text(home, node, "0")
    assert (field(text, "round"), field(text, "version"), field(text, "merge votes")) == ("0 (closed)", "1", "3 committed, 3 revealed")
    assert field(text, "merge") == f"heights {judged_at + 1}-{sealed_at} (ended early: everyone acted)"
    assert field(text, "merge_reveal") == f"heights {sealed_at + 1}-{revealing['merge_reveal_until'] - 1} at the latest"
    votes = ok_json(home, "query", "training", "verdicts", "--round", "0")["merge_votes"]
    assert sorted((v["validator"], v["sha256"]) for v in votes) == sorted(
        [(node.addresses[n], sha("merged")) for n in ("val0", "val2")] + [(node.addresses["val1"], odd.sha256)])
    listing = ok(home, "query", "training", "verdicts", "--round", "0")
    assert [v0.address, "10", "2.3457", sha("merged"), cid("merged")] in [line.split() for line in listing.splitlines()]

    # both trainers are still bonded, so round 1 opens at the next block: it trains version 1, and is what the commands show by default
    node.drive(lambda net: net.block([]))
    latest = ok_json(home, "query", "training", "round")
    assert (latest["id"], latest["phase"], latest["base_version"]) == (1, "submit", 1)
    assert run(home, "query", "training", "verdicts").stderr.startswith("no verdicts revealed for round 1 (submit)")
    missing = run(home, "query", "training", "submissions", "--round", "5")
    assert_one_error_line(missing.stderr, "round 5 does not exist", "the latest is round 1")


def test_valid_work_that_does_not_help_shows_as_not_merged(home: Path, node: TrainingNode) -> None:
    """Issue 12: every auditor proves the work correct but says no gain: "not_merged", not "rejected"; the round closes
    after the reveal, with no dispute and no merge."""
    ok(home, "tx", "staking", "bond-trainer", "alice", "2000", "-y")
    all_ok(node.drive(lambda net: net.block([submit(net, node.keys["alice"])])))
    vals = [node.keys[f"val{i}"] for i in range(3)]
    node.drive(lambda net: audit_round(net, {v: {0: "no_gain"} for v in vals}))
    rnd = node.round()
    (sub,) = ok_json(home, "query", "training", "submissions")["submissions"]
    assert (sub["status"], sub["accept_power"], sub["no_gain_power"], sub["reject_power"]) == ("not_merged", 0, 40, 0)
    table = ok(home, "query", "training", "submissions").splitlines()
    assert table[2].split()[:9] == ["0", node.addresses["alice"], "not_merged", "3", "(power", "40)", "0", "40", "0"]
    rows = ok(home, "query", "training", "verdicts").splitlines()
    assert len(rows) == 5 and all(row.split()[2:4] == ["no_gain", p] and row.split()[5] == "ok" for row, p in zip(
        rows[2:], [str(dict(rnd["powers"])[e["validator"]]) for e in rnd["submission_list"][0]["verdicts"]]))
    text = round_text(home, node)
    assert field(text, "round") == "0 (closed)" and field(text, "submissions") == "1 (1 not_merged)"
    assert field(text, "reveal") == f"heights {rnd['reveal_until'] - TRAINING['reveal_blocks']}-{rnd['reveal_until'] - 1} at the latest"
    assert (field(text, "dispute"), field(text, "merge"), field(text, "claims")) == ("- (no fraud claim)", "- (nothing accepted)", "0")
    assert (field(text, "merge_reveal"), field(text, "merge votes")) == ("- (nothing accepted)", "0 committed, 0 revealed")


WIKI = {"name": "wiki", "cid": cid("wiki"), "sha256": sha("wiki"), "licence": "CC-BY-SA-4.0", "bytes": 100, "tokens": 100,
        "tokenizer": "bytes", "weight": 3_000}


@pytest.mark.parametrize("more_datasets", [[WIKI]])
def test_round_shows_its_dataset_mix(home: Path, node: TrainingNode) -> None:
    """Two admitted datasets, weights 1000 and 3000: the round lists both with their share and the steps its
    submissions drew from each, which are the chain's own draws (training.step_counts)."""
    ok(home, "tx", "staking", "bond-trainer", "alice", "2000", "-y")
    ok(home, "tx", "staking", "bond-trainer", "bob", "2000", "-y")
    all_ok(node.drive(lambda net: net.block([submit(net, node.keys["alice"]), submit(net, node.keys["bob"])])))
    rnd = node.round()
    assert rnd["mix"] == [[0, 1_000], [1, 3_000]]
    drawn = {0: 0, 1: 0}
    for s in rnd["submission_list"]:
        for d, n in training.step_counts(rnd["seed"], s["trainer"], rnd["mix"], s["steps"]):
            drawn[d] += n
    assert drawn[0] and drawn[1]  # the seed draws from both (systematic sampling: 8 steps at 1:3 give each 2 or 6 a submission)
    mix = ok_json(home, "query", "training", "round")["datasets"]
    assert mix == [{"dataset": 0, "name": "kjv", "weight": 1_000, "steps_drawn": drawn[0]},
                   {"dataset": 1, "name": "wiki", "weight": 3_000, "steps_drawn": drawn[1]}]
    lines = round_text(home, node).splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("mix:")) + 1:]
    assert [row.split() for row in table] == [["DATASET", "NAME", "WEIGHT", "SHARE", "STEPS", "DRAWN"],
                                              ["0", "kjv", "1000", "25.0%", str(drawn[0])], ["1", "wiki", "3000", "75.0%", str(drawn[1])]]


# --- errors ---------------------------------------------------------------------------------


COMMANDS = [["round"], ["round", "3"], ["submissions"], ["submissions", "--round", "1"], ["verdicts"], ["verdicts", "--submission", "0"], ["params"]]


@pytest.mark.parametrize("args", [["round", "-1"], ["round", "x"], ["submissions", "--round", "-2"], ["verdicts", "--submission", "one"],
                                  ["verdicts", "--round", "-1"]])
def test_bad_arguments(home: Path, args: list[str]) -> None:
    result = run(home, "query", "training", *args, "--node", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "Invalid value for")


def test_node_unreachable_is_one_line(home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in COMMANDS:
        result = run(home, "query", "training", *args, "--node", url)
        assert result.exit_code == 1, args
        assert_one_error_line(result.stderr, f"node not running at {url}")
        assert result.stdout == ""


def test_node_without_training(home: Path, node: TrainingNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "rpc_abci_query", lambda params: {"result": {"response": {
        "code": 9, "codespace": "runtime", "log": f"unknown query path '{json.loads(params['path'])}'"}}})
    for args in COMMANDS:
        result = run(home, "query", "training", *args)
        assert result.exit_code == 1, args
        assert_one_error_line(result.stderr, "query /training/", "failed (runtime code 9): unknown query path")


def test_attestations_are_gone_verdicts_replace_them(home: Path) -> None:
    listing = ok(home, "query", "training", "--help")
    assert "verdicts" in listing and "attestations" not in listing
    assert run(home, "query", "training", "attestations").exit_code == 2  # no such command: scripts fail loudly


def test_claim_steps_past_the_last_are_named():
    from abci_app.cli.training import _step_name
    assert [_step_name(step, 64) for step in (0, 63, 64, 65, 66)] == ["0", "63", "endpoints", "unavailable", "dataset unavailable"]
