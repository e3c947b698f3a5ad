"""Unit tests for `gradchain query training round|submissions|attestations|params`.

The node is test_cli_staking's AppNode (test_cli's RPC server in front of the
real Application), with datasets, a registered model and training enabled.
Trainers bond through the CLI; deltas and attestations, which only the
workers send, are signed with the keyring's keys and committed directly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from abci_app import tx as txlib
from abci_app.keyring import Keyring
from abci_app.modules import training
from tests.unit.conftest import CHAIN_ID, Chain
from tests.unit.test_cli import add_key, assert_one_error_line, free_port, run
from tests.unit.test_cli_staking import MIN_FEE, AppNode, cons_key, ok, ok_json, on_app_thread

TRAINING = {"enabled": True, "submission_blocks": 8, "verification_blocks": 10, "merge_blocks": 6, "steps": 2, "reward": 500,
            "min_trainer_bond": 1_000, "max_submissions": 4, "slash_bps": 2_000}
STAKING = {"params": {"min_self_bond": 100, "power_unit": 100, "downtime_max_missed": 1000}}
FUNDS = 100_000


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def cid(tag: str) -> str:
    return "bafkrei" + sha(tag)[:52].translate(str.maketrans("0189", "2345"))


class TrainingNode(AppNode):
    """AppNode over a chain with a dataset, model version 0 and training params in genesis."""

    def __init__(self, app_home: Path, balances: dict[str, int], staking: dict, modules: dict):
        self.modules = modules
        super().__init__(app_home, balances, staking)

    @on_app_thread
    def _start(self, app_home: Path, balances: dict[str, int], staking: dict) -> None:
        self.chain = Chain(app_home, balances, min_fee=MIN_FEE, staking=staking, **self.modules)
        self.app_hashes = {1: self.chain.app.store.app_hash}
        self.power = {u.pub_key.ed25519: u.power for u in self.chain.init.validators}
        self._block([])

    @on_app_thread
    def send(self, key: Any, msg: Any) -> Any:
        """Sign `msg` with the account's next nonce and commit it in a block of its own; its result."""
        raw = txlib.build(key, CHAIN_ID, self.chain.nonce(key.address), MIN_FEE, msg)
        return self._block([raw]).tx_results[0]

    @on_app_thread
    def round(self) -> dict | None:
        return json.loads(self.chain.query("/training/current").value)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def node(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrainingNode]:
    """Validators val0, val1, val2 (power 10, 10, 20) and trainers alice, bob: all keys in the keyring."""
    names = ["val0", "val1", "val2", "alice", "bob"]
    addresses = {name: add_key(home, name) for name in names}
    validators = [{"operator": addresses[f"val{i}"], "pubkey": cons_key(i).hex(), "moniker": f"val{i}", "self_bond": bond}
                  for i, bond in enumerate([1_000, 1_000, 2_000])]
    modules = {
        "datasets": {"datasets": [{"name": "kjv", "cid": cid("corpus"), "sha256": sha("corpus"), "licence": "public-domain",
                                   "bytes": 100, "tokens": 100, "tokenizer": "bytes"}]},
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


def submit(node: TrainingNode, who: str, round_id: int = 0) -> None:
    msg = txlib.MsgSubmitDelta(round=round_id, cid=cid(who), sha256=sha(who), bytes=1234, loss_before_micro=2_500_000,
                               loss_after_micro=2_400_000, steps=TRAINING["steps"], kernel_path="torch-test/AVX2")
    assert node.send(node.keys[who], msg).code == 0


def attest(node: TrainingNode, who: str, index: int, accept: bool, round_id: int = 0) -> None:
    msg = txlib.MsgAttest(round=round_id, submission=index, accept=accept, measured_error_ppm=0 if accept else 900_000,
                          reason="" if accept else "recomputation differs")
    assert node.send(node.keys[who], msg).code == 0


def merge_vote(node: TrainingNode, who: str) -> None:
    msg = txlib.MsgAttestMerge(round=0, cid=cid("merged"), sha256=sha("merged"), bytes=10, held_out_loss_micro=2_345_678)
    assert node.send(node.keys[who], msg).code == 0


def field(text: str, name: str) -> str:
    """The value of `name:` in a key-value listing."""
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name + ":"))


# --- params -----------------------------------------------------------------------------


def test_params(home: Path, node: TrainingNode) -> None:
    params = ok_json(home, "query", "training", "params")
    assert params == json.loads(json.dumps(training.Params(**TRAINING).__dict__))
    text = ok(home, "query", "training", "params")
    assert field(text, "submission_blocks") == "8" and field(text, "quorum_bps") == "6667" and field(text, "enabled") == "true"
    assert [line.split(":")[0] for line in text.splitlines()] == sorted(params)
    proven = ok_json(home, "query", "training", "params", "--prove")
    assert proven["proof"]["verified"] is True and proven["reward"] == 500
    assert "proof verified against app hash" in ok(home, "query", "training", "params", "--prove")


# --- a whole round --------------------------------------------------------------------------


def test_no_round_before_a_trainer_bonds(home: Path, node: TrainingNode) -> None:
    for args in (["round"], ["submissions"], ["attestations"]):
        result = run(home, "query", "training", *args)
        assert result.exit_code == 1 and result.stdout == ""
        assert_one_error_line(result.stderr, "no training round has opened yet", "a trainer is bonded")
    missing = run(home, "query", "training", "round", "0")
    assert_one_error_line(missing.stderr, "round 0 does not exist", "no round has opened yet")


def test_round_submissions_attestations_through_a_round(home: Path, node: TrainingNode) -> None:
    ok(home, "tx", "staking", "bond-trainer", "alice", "2000", "-y")
    ok(home, "tx", "staking", "bond-trainer", "bob", "2000", "-y")
    opened = node.round()

    # submit phase, nothing submitted yet
    rnd = ok_json(home, "query", "training", "round")
    assert {k: rnd[k] for k in ("id", "phase", "base_version", "dataset_id", "seed", "submissions", "version")} == {
        "id": 0, "phase": "submit", "base_version": 0, "dataset_id": 0, "seed": opened["seed"], "submissions": 0, "version": None}
    assert rnd["height"] == node.height and rnd["submit_until"] == rnd["open_height"] + TRAINING["submission_blocks"]
    assert ok_json(home, "query", "training", "round", "0") == rnd
    text = ok(home, "query", "training", "round")
    left = rnd["submit_until"] - 1 - node.height
    assert field(text, "round") == "0 (submit)" and field(text, "height") == str(node.height) and field(text, "seed") == opened["seed"]
    assert field(text, "submit") == f"heights {rnd['open_height']}-{rnd['submit_until'] - 1} (now; {left} blocks left)"
    assert field(text, "verify") == f"heights {rnd['submit_until']}-{rnd['verify_until'] - 1} at the latest"
    assert field(text, "merge").startswith("after verification") and field(text, "version") == "-"
    empty = run(home, "query", "training", "submissions")
    assert empty.exit_code == 0 and empty.stdout == "" and "round 0 (submit) has no submissions" in empty.stderr
    assert ok_json(home, "query", "training", "submissions")["submissions"] == []
    assert "no attestations for round 0" in run(home, "query", "training", "attestations").stderr

    # two submissions: alice's accepted (10 + 20 of 40), bob's rejected
    submit(node, "alice")
    submit(node, "bob")
    attest(node, "val0", 0, True)
    pending = ok_json(home, "query", "training", "submissions")["submissions"][0]
    assert (pending["status"], pending["accept_power"], pending["reject_power"]) == ("pending", 10, 0)
    attest(node, "val2", 0, True)
    attest(node, "val1", 1, False)
    attest(node, "val2", 1, False)

    listed = ok_json(home, "query", "training", "submissions", "--round", "0")
    assert (listed["round"], listed["phase"], listed["height"]) == (0, "submit", node.height)
    summary = [(s["index"], s["trainer"], s["status"], s["accept_power"], s["reject_power"], s["cid"]) for s in listed["submissions"]]
    assert summary == [(0, node.addresses["alice"], "accepted", 30, 0, cid("alice")), (1, node.addresses["bob"], "rejected", 0, 30, cid("bob"))]
    assert all("attestations" not in s for s in listed["submissions"])
    table = ok(home, "query", "training", "submissions").splitlines()
    assert table[0] == f"round 0 (submit), height {node.height}"
    assert table[1].split() == ["INDEX", "TRAINER", "STATUS", "ACCEPT", "NO", "GAIN", "FRAUD", "LOSS", "BEFORE", "LOSS", "AFTER", "CID"]
    assert table[2].split() == ["0", node.addresses["alice"], "accepted", "30", "0", "0", "2.5000", "2.4000", cid("alice")]
    assert table[3].split()[:6] == ["1", node.addresses["bob"], "rejected", "0", "0", "30"]

    every = ok_json(home, "query", "training", "attestations")
    listed_atts = [(a["submission"], a["validator"], a["accept"], a["power"]) for a in every["attestations"]]
    assert [a[0] for a in listed_atts] == [0, 0, 1, 1] and sorted(listed_atts) == sorted([
        (0, node.addresses["val0"], True, 10), (0, node.addresses["val2"], True, 20),
        (1, node.addresses["val1"], False, 10), (1, node.addresses["val2"], False, 20),
    ])
    assert every["merge_votes"] == []
    only_bob = ok_json(home, "query", "training", "attestations", "--submission", "1")
    assert only_bob["submission"] == 1 and sorted(a["validator"] for a in only_bob["attestations"]) == sorted([node.addresses["val1"], node.addresses["val2"]])
    rows = ok(home, "query", "training", "attestations", "--round", "0", "--submission", "1").splitlines()
    assert rows[1].split() == ["SUBMISSION", "VALIDATOR", "VERDICT", "POWER", "ERROR", "PPM", "HEIGHT", "REASON"]
    val1_row = next(row for row in rows[2:] if node.addresses["val1"] in row)
    assert val1_row.split()[:5] == ["1", node.addresses["val1"], "fraud", "10", "900000"] and val1_row.endswith("recomputation differs")
    no_such = run(home, "query", "training", "attestations", "--submission", "7")
    assert no_such.exit_code == 1
    assert_one_error_line(no_such.stderr, "round 0 has no submission 7 (2 submitted")

    # the window closes, every submission is decided: merge
    while node.round()["phase"] != "merge":
        node.block([])
    merging = ok_json(home, "query", "training", "round")
    assert merging["accepted"] == [0] and merging["aggregator"] in {node.addresses[f"val{i}"] for i in range(3)}
    text = ok(home, "query", "training", "round")
    merge_first = merging["merge_until"] - TRAINING["merge_blocks"]
    assert field(text, "round") == "0 (merge)" and field(text, "accepted") == "0" and field(text, "aggregator") == merging["aggregator"]
    assert field(text, "merge") == f"heights {merge_first}-{merging['merge_until'] - 1} (now; {merging['merge_until'] - 1 - node.height} blocks left)"
    assert field(text, "verify").startswith(f"ended at height {merge_first - 1} ")
    assert field(text, "submissions") == "2 (1 accepted, 1 rejected)"

    merge_vote(node, "val0")
    merge_vote(node, "val2")  # 30 of 40 agree: version 1
    closed = ok_json(home, "query", "training", "round", "0")
    assert (closed["phase"], closed["version"]) == ("closed", 1)
    assert field(ok(home, "query", "training", "round", "0"), "version") == "1"
    votes = ok_json(home, "query", "training", "attestations", "--round", "0")["merge_votes"]
    assert sorted((v["validator"], v["sha256"], v["held_out_loss_micro"]) for v in votes) == sorted(
        [(node.addresses[n], sha("merged"), 2_345_678) for n in ("val0", "val2")])
    merge_table = ok(home, "query", "training", "attestations", "--round", "0").splitlines()
    assert [node.addresses["val0"], "10", "2.3457", sha("merged"), cid("merged")] in [line.split() for line in merge_table]

    # both trainers are still bonded: round 1 opens on version 1, and is what `round` shows by default
    node.block([])
    assert ok_json(home, "query", "training", "round")["id"] == 1
    assert ok_json(home, "query", "training", "round")["base_version"] == 1
    missing = run(home, "query", "training", "submissions", "--round", "5")
    assert_one_error_line(missing.stderr, "round 5 does not exist", "the latest is round 1")


# --- errors ---------------------------------------------------------------------------------


COMMANDS = [["round"], ["round", "3"], ["submissions"], ["submissions", "--round", "1"], ["attestations", "--submission", "0"], ["params"]]


@pytest.mark.parametrize("args", [["round", "-1"], ["round", "x"], ["submissions", "--round", "-2"], ["attestations", "--submission", "one"]])
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


def test_valid_work_that_does_not_help_shows_as_not_merged(home: Path, node: TrainingNode) -> None:
    """Issue 12: the three verdicts as the CLI shows them; a no-gain decision is "not_merged", not "rejected"."""
    ok(home, "tx", "staking", "bond-trainer", "alice", "2000", "-y")
    submit(node, "alice")
    for who in ("val0", "val2"):
        msg = txlib.MsgAttest(round=0, submission=0, accept=False, no_gain=True, reason="no gain: held-out loss regressed")
        assert node.send(node.keys[who], msg).code == 0
    (sub,) = ok_json(home, "query", "training", "submissions")["submissions"]
    assert (sub["status"], sub["accept_power"], sub["no_gain_power"], sub["reject_power"]) == ("not_merged", 0, 30, 0)
    table = ok(home, "query", "training", "submissions").splitlines()
    assert table[2].split()[:6] == ["0", node.addresses["alice"], "not_merged", "0", "30", "0"]
    rows = ok(home, "query", "training", "attestations").splitlines()
    assert all(row.split()[2] == "no_gain" for row in rows[2:])
    assert field(ok(home, "query", "training", "round"), "submissions") == "1 (1 not_merged)"
