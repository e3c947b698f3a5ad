"""Governance against real CometBFT, through the CLI as the README's Governance section uses it.

One 4-validator network (no IPFS, no workers, a block a second) with short
gov windows and a stand-in model version 0 and dataset 0 in genesis (their
CIDs are never fetched): training is enabled, so once a trainer is bonded
empty rounds open and close every few blocks, each with the params it opened
with. The tests run in order:

1. a proposal drafted with `--draft` that changes `training.steps`, opened
   with a quarter of the deposit and completed by `tx gov deposit`, passes on
   the four validators' votes; the chain's params change in the block that
   decides it, the round open then keeps the old steps and the next round
   opens with the new ones;
2. a proposal the validators veto is decided in the block at its voting end:
   supply drops by exactly its deposit there, the depositor gets nothing back
   and the deposits account is empty.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from abci_app import localnet
from abci_app.client import ChainClient
from abci_app.localnet import Network
from abci_app.modules import gov
from tests.e2e.conftest import require_cometbft, serve
from tests.e2e.helpers import (GOV_MIN_DEPOSIT as MIN_DEPOSIT, gradchain, proposal, run_cli, run_json, short_gov, submit_proposal, validators,
                               vote_all, wait_decided, wait_until)

pytestmark = pytest.mark.e2e

VOTING_BLOCKS = 15  # a block a second: room for four votes, sent at once
GENESIS_STEPS, NEW_STEPS = 8, 16


def _digest(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def _cid(tag: str) -> str:
    """A well-formed CIDv1 (the chain checks the form only; nothing fetches it here)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "bafkrei" + "".join(alphabet[b % 32] for b in (hashlib.sha256(tag.encode()).digest() * 2)[:52])


APP_STATE = short_gov(VOTING_BLOCKS) | {
    "training": {"params": {"enabled": True, "steps": GENESIS_STEPS, "audit_steps": 2, "submission_blocks": 6}},
    "datasets": {"datasets": [{"name": "corpus", "cid": _cid("corpus"), "sha256": _digest("corpus"), "licence": "public-domain",
                               "bytes": 100, "tokens": 100, "tokenizer": "bytes"}]},
    "registry": {"versions": [{"cid": _cid("v0"), "sha256": _digest("v0"), "bytes": 10, "family": "tiny-gpt", "config": {"n_layer": 1},
                               "dataset_ids": [0], "licence": "Apache-2.0"}]},
}


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """This module's own network; every process stopped afterwards, also on failure (serve)."""
    require_cometbft()
    root: Path = tmp_path_factory.mktemp("gov-net")
    yield from serve(localnet.create(root, validators=4, chain_id="gradchain-gov-e2e", app_state=APP_STATE, empty_blocks_interval="1s"))


@pytest.fixture(scope="module")
def chain(network: Network) -> Iterator[ChainClient]:
    with ChainClient(network.rpc_url(0)) as client:
        yield client


def test_a_params_proposal_passes_on_the_validators_votes_and_the_next_round_uses_it(network: Network, chain: ChainClient, tmp_path: Path):
    run_cli(network, "tx", "staking", "bond-trainer", "dev2", "1000000", "--yes")  # empty rounds open from now on
    wait_until(lambda: chain.query_json("/training/current") is not None, 30, "round 0 to open")
    path = tmp_path / "steps.json"
    run_cli(network, "tx", "gov", "submit-proposal", str(path), "--draft", "--module", "training", "--set", f"steps={NEW_STEPS}")
    draft = json.loads(path.read_text())
    assert draft["deposit"] == f"{MIN_DEPOSIT}ugrad" and draft["messages"][0]["params"]["steps"] == NEW_STEPS
    path.write_text(path.read_text().replace(f'"{MIN_DEPOSIT}ugrad"', f'"{MIN_DEPOSIT // 4}ugrad"'))  # as the README's sed

    proposal_id = submit_proposal(network, path, "dev0")
    assert proposal(network, proposal_id)["status"] == "deposit_period"
    run_cli(network, "tx", "gov", "deposit", str(proposal_id), str(MIN_DEPOSIT - MIN_DEPOSIT // 4), "--from", "dev1", "--yes")
    assert proposal(network, proposal_id)["status"] == "voting_period"
    vote_all(network, proposal_id, {v: "yes" for v in validators(network)})
    running = run_json(network, "query", "gov", "tally", str(proposal_id))
    assert running["yes"] == running["bonded"] > 0  # each validator's whole stake, as snapshotted when voting started

    decided = wait_decided(network, chain, proposal_id)
    assert decided["status"] == "passed", decided
    assert run_json(network, "query", "gov", "tally", str(proposal_id))["final"] is True
    assert run_json(network, "query", "training", "params")["steps"] == NEW_STEPS
    passed_at = decided["result_height"]
    # Training's end block runs before gov's: a round opened in the deciding block itself still has the old params.
    wait_until(lambda: chain.query_json("/training/current")["open_height"] > passed_at + 1, 60, "a round opened after the vote")
    assert chain.query_json("/training/current")["params"]["steps"] == NEW_STEPS
    assert chain.query_json("/training/round_detail", "0")["params"]["steps"] == GENESIS_STEPS  # a round keeps what it opened with


def test_a_vetoed_proposal_burns_its_deposit(network: Network, chain: ChainClient, tmp_path: Path):
    path = tmp_path / "fee.json"
    run_cli(network, "tx", "gov", "submit-proposal", str(path), "--draft", "--module", "bank", "--set", "min_fee=2")
    proposal_id = submit_proposal(network, path, "dev3")  # the draft's deposit is the whole minimum: voting starts at once
    assert proposal(network, proposal_id)["total_deposit"] == MIN_DEPOSIT
    vote_all(network, proposal_id, {"validator0": "no_with_veto", "validator1": "no_with_veto", "validator2": "yes"})

    decided = wait_decided(network, chain, proposal_id)
    assert decided["status"] == "vetoed", decided
    end = decided["result_height"]

    def at(path: str, data: str, height: int) -> int:
        return int(chain.query(path, data, height=height) or b"0")

    depositor = network.account("dev3").address
    assert at("/bank/supply", "", end) == at("/bank/supply", "", end - 1) - MIN_DEPOSIT
    assert at("/bank/balance", depositor, end) == at("/bank/balance", depositor, end - 1)  # nothing refunded
    assert at("/bank/balance", gov.DEPOSITS, end) == 0
    assert chain.query_json("/bank/params")["min_fee"] == 1  # the vetoed change never ran
    failing = gradchain(network, "tx", "gov", "deposit", str(proposal_id), "10", "--from", "dev0", "--yes")
    assert failing.returncode != 0 and "vetoed" in failing.stderr
