"""`gradchain tx gov` and `gradchain query gov` against the real app behind a loopback RPC server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from abci_app import crypto, paging
from abci_app.modules import bank, gov, training
from tests.unit.conftest import Chain
from tests.unit.test_cli import add_key, assert_one_error_line, run
from tests.unit.test_cli_staking import FUNDS, GENESIS_BOND, MIN_FEE, AppNode, ok, on_app_thread
from tests.unit.test_registry import CID_A, SHA_A
from tests.unit.test_staking import PARAMS, cons_key

GOV_PARAMS = {"min_deposit": 1_000, "expedited_min_deposit": 2_000, "deposit_blocks": 5, "voting_blocks": 5, "expedited_voting_blocks": 2}


class GovNode(AppNode):
    @on_app_thread
    def _start(self, app_home: Path, balances: dict[str, int], staking: dict) -> None:
        # A vote lasts at most an unbonding (gov.check_voting_within_unbonding).
        staking = staking | {"params": staking["params"] | {"unbonding_blocks": GOV_PARAMS["voting_blocks"]}}
        # Dataset 0, registered and not admitted: what `--draft --admit` proposes.
        datasets = {"datasets": [{"name": "kjv", "cid": CID_A, "sha256": SHA_A, "licence": "public-domain", "bytes": 100, "tokens": 100,
                                  "tokenizer": "bytes", "weight": 0}]}
        self.chain = Chain(app_home, balances, min_fee=MIN_FEE, staking=staking, gov={"params": GOV_PARAMS}, datasets=datasets)
        self.app_hashes = {1: self.chain.app.store.app_hash}
        self.power = {u.pub_key.ed25519: u.power for u in self.chain.init.validators}
        self._block([])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def node(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GovNode]:
    """alice (funded) and val0, val1: the operators of the two genesis validators."""
    addresses = {name: add_key(home, name) for name in ("alice", "val0", "val1")}
    genesis = [{"operator": addresses[f"val{i}"], "pubkey": cons_key(i).hex(), "moniker": f"val{i}", "self_bond": GENESIS_BOND} for i in range(2)]
    app_node = GovNode(tmp_path / "app", {a: FUNDS * 100 for a in addresses.values()}, {"params": PARAMS, "validators": genesis})
    app_node.addresses = addresses
    monkeypatch.setenv("GRADCHAIN_NODE", app_node.url)
    yield app_node
    app_node.close()


def ok_json(home: Path, *args: str):
    return json.loads(ok(home, *args, "-o", "json"))


def fails(home: Path, *args: str, fragments=()) -> None:
    result = run(home, *args)
    assert result.exit_code != 0, result.output
    assert_one_error_line(result.stderr, *fragments)


def test_draft_edit_submit_vote_and_watch_it_take_effect(home: Path, node: GovNode, tmp_path: Path) -> None:
    path = tmp_path / "steps.json"
    ok(home, "tx", "gov", "submit-proposal", str(path), "--draft", "--module", "training")
    draft = json.loads(path.read_text())
    assert draft["messages"][0]["@type"] == "update_params" and draft["messages"][0]["params"]["steps"] == 64
    assert draft["deposit"] == "1000ugrad"
    fails(home, "tx", "gov", "submit-proposal", str(path), "--draft", fragments=("exists",))
    draft["messages"][0]["params"] |= {"steps": 32, "audit_steps": 8}
    path.write_text(json.dumps(draft))
    sent = ok_json(home, "tx", "gov", "submit-proposal", str(path), "--from", "alice", "--yes")
    assert sent["code"] == 0
    (listed,) = ok_json(home, "query", "gov", "proposals")["proposals"]
    assert (listed["id"], listed["status"]) == (1, "voting_period")
    for val in ("val0", "val1"):
        ok(home, "tx", "gov", "vote", "1", "yes", "--from", val, "--yes")
    assert ok_json(home, "query", "gov", "votes", "1")["votes"][0]["option"] == "yes"
    assert ok_json(home, "query", "gov", "tally", "1")["yes"] == 2 * GENESIS_BOND
    while node.height <= ok_json(home, "query", "gov", "proposal", "1")["voting_end"]:
        node.block([])
    shown = ok_json(home, "query", "gov", "proposal", "1")
    assert shown["status"] == "passed" and shown["messages"][0]["params"]["steps"] == 32
    assert ok_json(home, "query", "gov", "tally", "1")["final"] is True
    assert ok_json(home, "query", "staking", "params")["power_unit"] == PARAMS["power_unit"]
    assert json.loads(node.chain.query("/training/params").value)["steps"] == 32
    text = ok(home, "query", "gov", "proposal", "1")
    assert "status:   passed" in text and "tally:    yes 2000" in text
    assert "min_deposit:" in ok(home, "query", "gov", "params")


def test_deposit_and_vote_commands(home: Path, node: GovNode, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"title": "t", "summary": "s", "deposit": "250ugrad",
                                "messages": [{"@type": "MsgUpdateParams", "module": "bank", "params": {"min_fee": 3, "byte_fee": 10, "free_bytes": 2048},
                                              "params_sha256": gov.params_digest(bank.Params(min_fee=MIN_FEE))}]}))
    ok(home, "tx", "gov", "submit-proposal", str(path), "--from", "alice", "--yes")
    assert ok_json(home, "query", "gov", "proposal", "1")["status"] == "deposit_period"
    fails(home, "tx", "gov", "vote", "1", "yes", "--from", "val0", "--yes", fragments=("gov code 4", "deposit_period"))
    ok(home, "tx", "gov", "deposit", "1", "750", "--from", "val0", "--yes")
    assert ok_json(home, "query", "gov", "proposal", "1")["status"] == "voting_period"
    fails(home, "tx", "gov", "vote", "1", "maybe", "--from", "val0", "--yes", fragments=("'maybe' is not one of",))
    fails(home, "tx", "gov", "vote", "1", "yes", "--yes", fragments=("--from KEY is required",))
    fails(home, "tx", "gov", "deposit", "7", "10", "--from", "alice", "--yes", fragments=("gov code 1", "no proposal 7"))
    fails(home, "query", "gov", "proposal", "7", fragments=("no proposal 7",))
    fails(home, "query", "gov", "votes", "7", fragments=("no proposal 7",))


def test_proposals_are_listed_across_pages(home: Path, node: GovNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node lists proposals a page at a time (newest first); the CLI shows them all, in one list, as before."""
    path = tmp_path / "p.json"
    for title in ("one", "two", "three"):
        path.write_text(json.dumps({"title": title, "summary": "s", "deposit": "250ugrad",
                                    "messages": [{"@type": "MsgUpdateParams", "module": "bank", "params": {"min_fee": 3, "byte_fee": 10, "free_bytes": 2048},
                                                  "params_sha256": gov.params_digest(bank.Params(min_fee=MIN_FEE))}]}))
        ok(home, "tx", "gov", "submit-proposal", str(path), "--from", "alice", "--yes")
    monkeypatch.setattr(paging, "MAX_ENTRIES", 1)
    listed = ok_json(home, "query", "gov", "proposals")["proposals"]
    assert [(p["id"], p["title"]) for p in listed] == [(3, "three"), (2, "two"), (1, "one")]
    assert [p["id"] for p in ok_json(home, "query", "gov", "proposals", "--status", "deposit_period")["proposals"]] == [3, 2, 1]
    assert ok_json(home, "query", "gov", "proposals", "--status", "passed")["proposals"] == []


@pytest.mark.parametrize("doc, fragments", [
    ("not json", ("is not valid JSON",)),
    ([], ("JSON object",)),
    ({"summary": "s", "deposit": "1", "messages": [{"@type": "vote"}]}, ('"title"',)),
    ({"title": "t", "summary": "s", "deposit": "1.5", "messages": [{"@type": "vote"}]}, ('"deposit"', "whole number")),
    ({"title": "t", "summary": "s", "deposit": "1", "messages": []}, ('"messages"',)),
    ({"title": "t", "summary": "s", "deposit": "1", "messages": [{"@type": "nope"}]}, ("unknown @type 'nope'",)),
    ({"title": "t", "summary": "s", "deposit": "1", "messages": [{"@type": "send", "amount": "x"}]}, ("proposal message 0 (send)",)),
    ({"title": "t", "summary": "s", "deposit": "1", "extra": 1, "messages": [{"@type": "send"}]}, ("unknown keys extra",)),
    # The chain's own checks, one line each: a params set that is not whole is refused at submission.
    ({"title": "t", "summary": "s", "deposit": "1000ugrad", "messages": [{"@type": "update_params", "module": "training", "params": {"steps": 32}}]},
     ("gov code 2", "whole set: missing")),
    ({"title": "t", "summary": "s", "deposit": "10", "messages": [{"@type": "update_params", "module": "bank", "params": {}}]},
     ("gov code 3", "below 250")),
])
def test_bad_proposal_files_are_one_line_errors(home: Path, node: GovNode, tmp_path: Path, doc, fragments) -> None:
    path = tmp_path / "bad.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    fails(home, "tx", "gov", "submit-proposal", str(path), "--from", "alice", "--yes", fragments=fragments)
    assert ok_json(home, "query", "gov", "proposals")["proposals"] == []


def test_missing_file_and_unknown_draft_module(home: Path, node: GovNode, tmp_path: Path) -> None:
    fails(home, "tx", "gov", "submit-proposal", str(tmp_path / "none.json"), "--from", "alice", "--yes", fragments=("--draft",))
    fails(home, "tx", "gov", "submit-proposal", str(tmp_path / "d.json"), "--draft", "--module", "auth", fragments=("no 'auth' params",))
    assert not (tmp_path / "d.json").exists()
    assert crypto.is_address(node.addresses["alice"])


def test_draft_with_settings_is_ready_to_submit(home: Path, node: GovNode, tmp_path: Path) -> None:
    path = tmp_path / "steps.json"
    fails(home, "tx", "gov", "submit-proposal", str(path), "--draft", "--set", "stepz=3", fragments=("training has no param stepz",))
    fails(home, "tx", "gov", "submit-proposal", str(path), "--set", "steps=3", "--from", "alice", fragments=("--set and --admit go with --draft",))
    fails(home, "tx", "gov", "submit-proposal", str(path), "--draft", "--set", "steps", fragments=("expected NAME=VALUE",))
    ok(home, "tx", "gov", "submit-proposal", str(path), "--draft", "--set", "steps=32", "--set", "audit_steps=8")
    doc = json.loads(path.read_text())
    assert (doc["messages"][0]["params"]["steps"], doc["messages"][0]["params"]["audit_steps"]) == (32, 8)
    assert "training.steps to 32, training.audit_steps to 8" in doc["summary"]
    assert doc["messages"][0]["params_sha256"] == gov.params_digest(training.Params())  # drafted against the live set
    ok(home, "tx", "gov", "submit-proposal", str(path), "--from", "alice", "--yes")
    shown = ok_json(home, "query", "gov", "proposal", "1")["messages"][0]
    assert shown["params"]["steps"] == 32
    assert shown["diff"] == {"changes": {"steps": {"current": 64, "proposed": 32}, "audit_steps": {"current": 12, "proposed": 8}}, "stale": False}
    text = ok(home, "query", "gov", "proposal", "1")
    assert "update_params training: 2 change(s) against the current params\n    audit_steps: 12 -> 8\n    steps: 64 -> 32" in text
    assert "STALE" not in text


def test_a_proposal_drafted_before_another_passed_shows_stale(home: Path, node: GovNode, tmp_path: Path) -> None:
    """Review finding 6: both drafts carry the whole training set as it is now; once the first passes, the second
    would undo it: `query gov proposal` says so (and the chain fails it at execution)."""
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    ok(home, "tx", "gov", "submit-proposal", str(first), "--draft", "--set", "steps=32", "--set", "audit_steps=8")
    ok(home, "tx", "gov", "submit-proposal", str(second), "--draft", "--set", "reward=5")
    ok(home, "tx", "gov", "submit-proposal", str(first), "--from", "alice", "--yes")
    doc = json.loads(second.read_text()) | {"deposit": "250ugrad"}  # stays in its deposit period
    second.write_text(json.dumps(doc))
    ok(home, "tx", "gov", "submit-proposal", str(second), "--from", "alice", "--yes")
    for val in ("val0", "val1"):
        ok(home, "tx", "gov", "vote", "1", "yes", "--from", val, "--yes")
    while ok_json(home, "query", "gov", "proposal", "1")["status"] == "voting_period":
        node.block([])
    assert ok_json(home, "query", "gov", "proposal", "1")["status"] == "passed"
    shown = ok_json(home, "query", "gov", "proposal", "2")
    assert shown["status"] == "deposit_period" and shown["messages"][0]["diff"]["stale"] is True
    # Against the live set (steps 32 now) the whole-set message would put steps and audit_steps back.
    assert shown["messages"][0]["diff"]["changes"] == {"audit_steps": {"current": 8, "proposed": 12}, "reward": {"current": 1_000_000, "proposed": 5},
                                                       "steps": {"current": 32, "proposed": 64}}
    text = ok(home, "query", "gov", "proposal", "2")
    assert "STALE: training params changed since it was drafted, it will fail" in text and "steps: 32 -> 64" in text
    # Submitted now, the same stale file is refused in one line.
    fails(home, "tx", "gov", "submit-proposal", str(second), "--from", "alice", "--yes", fragments=("gov code 9", "changed since this set was drafted"))


def test_draft_admission_pins_the_datasets_sha256(home: Path, node: GovNode, tmp_path: Path) -> None:
    """Review 14b F6: ids are first come, so the drafted admission names the content it means."""
    path = tmp_path / "admit.json"
    fails(home, "tx", "gov", "submit-proposal", str(path), "--draft", "--admit", "9", fragments=("unknown dataset 9",))
    fails(home, "tx", "gov", "submit-proposal", str(path), "--draft", "--admit", "0", "--set", "steps=3", fragments=("one at a time",))
    ok(home, "tx", "gov", "submit-proposal", str(path), "--draft", "--admit", "0", "--weight", "500")
    doc = json.loads(path.read_text())
    assert doc["messages"] == [{"@type": "set_dataset_weight", "dataset": 0, "weight": 500, "sha256": SHA_A}] and doc["deposit"] == "1000ugrad"
    ok(home, "tx", "gov", "submit-proposal", str(path), "--from", "alice", "--yes")
    assert ok_json(home, "query", "gov", "proposal", "1")["messages"][0]["sha256"] == SHA_A
