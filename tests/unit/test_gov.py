"""gov: proposals, deposits, stake-weighted votes, the tally rules, atomic execution, params under governance."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import pytest

from abci_app import paging, runtime, tx
from abci_app.modules import bank, gov, registry, staking, training
from tests.unit.conftest import Chain, fixed_key
from tests.unit.test_registry import CID_A, CID_B, CONFIG, SHA_A, SHA_B, version_msg
from tests.unit.test_staking import PARAMS as STAKING_PARAMS, check_invariants, cons_key

FUNDS = 10**9
CHAIN_ID_BYTES = b"test-chain"
BOND = 1_000  # each genesis validator's self-bond
SUBMIT_FEE = 100_000  # covers the bytes of a proposal that carries a whole parameter set
CHAIN_STAKING = STAKING_PARAMS | {"unbonding_blocks": 6}
GOV_PARAMS = {
    "min_deposit": 1_000, "expedited_min_deposit": 3_000, "min_initial_deposit_bps": 2_500,
    "deposit_blocks": 4, "voting_blocks": 6, "expedited_voting_blocks": 2,
}


class GovChain(Chain):
    """Validators v0..v2 (1,000 each), delegator d0 with 500 on v0 and d1 with 300 on v1 and 200 on v2, and plain accounts."""

    def block(self, txs, **kwargs):
        response = super().block(txs, **kwargs)
        check_invariants(self)
        return response

    def run(self, txs):
        """One block of txs; each must succeed."""
        response = self.block(txs)
        assert [(r.codespace, r.code, r.log) for r in response.tx_results if r.code] == []
        return response

    def until(self, height):
        """Empty blocks up to and including `height`; the responses."""
        return [self.block([]) for _ in range(height - self.height)]

    def proposal(self, proposal_id):
        return json.loads(self.query("/gov/proposal", str(proposal_id)).value)

    def view(self, path, data=""):
        result = self.query(path, data)
        assert result.code == 0, result.log
        return json.loads(result.value)

    def submit(self, key, messages, deposit=1_000, expedited=False, title="Raise the steps", summary="Why: more work per round."):
        msg = tx.MsgSubmitProposal(messages=[body(m) for m in messages], initial_deposit=deposit, title=title, summary=summary,
                                   expedited=expedited)
        return self.tx(key, msg, fee=SUBMIT_FEE)

    def vote(self, key, proposal_id, option):
        return self.tx(key, tx.MsgVote(proposal=proposal_id, option=option))


def body(msg) -> tx.TxBody:
    entry = tx.TxBody()
    getattr(entry, tx._msg_field(msg)).CopyFrom(msg)
    return entry


def params_msg(module, base=None, **changes) -> tx.MsgUpdateParams:
    """MsgUpdateParams with the whole set: `base` (the module's defaults unless given) with `changes`, drafted against `base`."""
    base = base if base is not None else runtime.module_params(module).params_type()
    return tx.MsgUpdateParams(module=module, params_json=json.dumps(asdict(base) | changes), params_sha256=gov.params_digest(base))


def live(net, module):
    """A module's params as the chain has them now: the base a params change is drafted against."""
    return module.get_params(net.app.store.begin_block())


def end_events(response, kind):
    return [dict(e.attributes and {a.key: a.value for a in e.attributes}) for e in response.events if e.type == kind]


@pytest.fixture
def net(tmp_path):
    vals = [fixed_key(i) for i in range(1, 4)]
    d0, d1, alice, bob = (fixed_key(i) for i in range(4, 8))
    genesis_validators = [{"operator": v.address, "pubkey": cons_key(i).hex(), "moniker": f"v{i}", "self_bond": BOND} for i, v in enumerate(vals)]
    chain = GovChain(
        tmp_path / "app", {k.address: FUNDS for k in (*vals, d0, d1, alice, bob)},
        staking={"params": CHAIN_STAKING, "validators": genesis_validators}, gov={"params": GOV_PARAMS},
        datasets={"datasets": [{"name": "kjv", "cid": CID_A, "sha256": SHA_A, "licence": "public-domain", "bytes": 4_000_000,
                                "tokens": 4_000_000, "tokenizer": "bytes"}]},
        registry={"versions": [{"cid": CID_B, "sha256": SHA_B, "bytes": 123, "family": "tiny-gpt", "config": CONFIG,
                                "dataset_ids": [0], "licence": "Apache-2.0"}]},
    )
    chain.run([chain.tx(d0, tx.MsgDelegate(validator=vals[0].address, amount=500)),
               chain.tx(d1, tx.MsgDelegate(validator=vals[1].address, amount=300)),
               chain.tx(d1, tx.MsgDelegate(validator=vals[2].address, amount=200))])
    chain.vals, chain.d0, chain.d1, chain.alice, chain.bob = vals, d0, d1, alice, bob
    yield chain
    chain.app.close()


def open_vote(net, messages=None, expedited=False, deposit=None):
    """Submit a proposal (a training.steps change unless given) with its whole min deposit; its id, now voting."""
    messages = messages or [params_msg("training", base=live(net, training), steps=32, audit_steps=8)]
    deposit = deposit if deposit is not None else GOV_PARAMS["expedited_min_deposit" if expedited else "min_deposit"]
    response = net.run([net.submit(net.alice, messages, deposit=deposit, expedited=expedited)])
    proposal_id = int(next(e for e in end_events_of_tx(response) if e["type"] == "proposal_submitted")["proposal"])
    assert net.proposal(proposal_id)["status"] == gov.VOTING_PERIOD
    return proposal_id


def end_events_of_tx(response):
    return [{"type": e.type} | {a.key: a.value for a in e.attributes} for r in response.tx_results for e in r.events]


def finish(net, proposal_id):
    """Run to the end of the voting window; the end block's response."""
    return net.until(net.proposal(proposal_id)["voting_end"])[-1]


# --- the lifecycle -------------------------------------------------------------------------


def test_a_params_proposal_passes_on_validator_votes_and_takes_effect(net):
    before = net.balance(net.alice.address)
    pid = open_vote(net)
    assert net.balance(net.alice.address) == before - SUBMIT_FEE - GOV_PARAMS["min_deposit"]
    assert net.balance(gov.DEPOSITS) == GOV_PARAMS["min_deposit"]
    net.run([net.vote(v, pid, gov.YES) for v in net.vals])
    assert training.get_params(net.app.store.begin_block()).steps == 64  # nothing changes before the window ends
    end = finish(net, pid)
    proposal = net.proposal(pid)
    assert proposal["status"] == gov.PASSED and proposal["failed_reason"] == ""
    assert proposal["tally"] == {"yes": 4_000, "abstain": 0, "no": 0, "no_with_veto": 0, "bonded": 4_000}  # delegators follow
    assert json.loads(net.query("/training/params").value)["steps"] == 32
    assert [e["module"] for e in end_events(end, "params_updated")] == ["training"]
    assert end_events(end, "proposal_passed")[0]["yes"] == "4000"
    assert net.balance(net.alice.address) == before - SUBMIT_FEE  # deposit refunded on pass
    assert net.balance(gov.DEPOSITS) == 0


def test_a_user_cannot_update_params_directly_and_registry_is_governed(net):
    r = net.block([net.tx(net.alice, params_msg("training", steps=32)), net.tx(net.alice, version_msg())])
    assert [(x.codespace, x.code) for x in r.tx_results] == [("gov", gov.Unauthorized.code), ("registry", registry.Unauthorized.code)]
    assert "gov module account" in r.tx_results[1].log
    pid = open_vote(net, [version_msg(note="by governance")])
    net.run([net.vote(v, pid, gov.YES) for v in net.vals])
    finish(net, pid)
    assert net.proposal(pid)["status"] == gov.PASSED
    latest = json.loads(net.query("/registry/latest").value)
    assert (latest["id"], latest["creator"], latest["note"]) == (1, gov.GOV, "by governance")


# --- tally rules ---------------------------------------------------------------------------


def test_delegators_inherit_their_validators_vote_unless_they_vote(net):
    pid = open_vote(net)
    net.run([net.vote(net.vals[0], pid, gov.YES), net.vote(net.vals[1], pid, gov.NO)])
    # d0's 500 follow v0 (yes); d1's 300 follow v1 (no); d1's 200 on v2 count nowhere: v2 did not vote.
    assert net.view("/gov/tally", str(pid)) == {"yes": 1_500, "abstain": 0, "no": 1_300, "no_with_veto": 0, "bonded": 4_000, "final": False}
    net.run([net.vote(net.d0, pid, gov.NO), net.vote(net.d1, pid, gov.YES)])
    # d0 overrides v0 with its 500; d1 votes yes with all 500 of its stake, on v1 and v2 alike.
    assert net.view("/gov/tally", str(pid))["yes"] == 1_000 + 500 and net.view("/gov/tally", str(pid))["no"] == 500 + 1_000
    end = finish(net, pid)
    proposal = net.proposal(pid)
    assert proposal["status"] == gov.REJECTED and proposal["failed_reason"].startswith("threshold not met")
    assert proposal["tally"] == {"yes": 1_500, "abstain": 0, "no": 1_500, "no_with_veto": 0, "bonded": 4_000}  # 50% is not above 50%
    assert end_events(end, "proposal_rejected")[0]["reason"].startswith("threshold")
    assert net.view("/gov/tally", str(pid))["final"] is True


def test_the_tally_counts_the_stake_snapshotted_when_voting_started(net):
    pid = open_vote(net)
    net.run([net.vote(net.d0, pid, gov.YES), net.vote(net.vals[0], pid, gov.NO)])
    # v0's snapshot holds d0's 500: d0 cast them itself, v0 casts the rest.
    assert net.view("/gov/tally", str(pid))["yes"] == 500 and net.view("/gov/tally", str(pid))["no"] == 1_000
    net.run([net.tx(net.d0, tx.MsgDelegate(validator=net.vals[0].address, amount=1_000)),  # more stake after voting started
             net.tx(net.d1, tx.MsgUndelegate(validator=net.vals[1].address, amount=300))])  # leaves before the end
    # d0's delegation grew after the snapshot: it no longer votes by itself, and the vote it cast keeps its weight.
    # v1's snapshot still has the 300 d1 took out.
    r = net.block([net.vote(net.d0, pid, gov.NO), net.vote(net.vals[1], pid, gov.YES), net.vote(net.vals[2], pid, gov.YES)])
    assert [x.code for x in r.tx_results] == [gov.NoStake.code, 0, 0]
    # v2 misses three signatures in a row and is jailed before the end; its snapshotted 1,200 still vote.
    v2 = staking.consensus_address(cons_key(2))
    for _ in range(3):
        net.block([], votes=[(v2, False)])
    assert staking.get_validator(net.app.store.begin_block(), net.vals[2].address).jailed
    assert net.height == net.proposal(pid)["voting_end"]
    assert net.proposal(pid)["tally"] == {"yes": 500 + 1_300 + 1_200, "abstain": 0, "no": 1_000, "no_with_veto": 0, "bonded": 4_000}
    assert net.proposal(pid)["status"] == gov.PASSED
    assert gov.snapshot(net.app.store.begin_block(), pid) == [] and gov.tally(net.app.store.begin_block(), pid) == gov.Tally()


def test_flash_stake_does_not_vote(net):
    """Stake delegated after voting started (here in the last block) does not count: every validator's no stands."""
    pid = open_vote(net)
    net.run([net.vote(v, pid, gov.NO) for v in net.vals])
    end = net.proposal(pid)["voting_end"]
    net.until(end - 1)
    r = net.block([net.tx(net.bob, tx.MsgDelegate(validator=net.vals[0].address, amount=20_000)), net.vote(net.bob, pid, gov.YES)])
    assert r.tx_results[0].code == 0 and r.tx_results[1].code == gov.NoStake.code and "height" in r.tx_results[1].log
    assert net.height == end
    assert net.proposal(pid)["status"] == gov.REJECTED
    assert net.proposal(pid)["tally"] == {"yes": 0, "abstain": 0, "no": 4_000, "no_with_veto": 0, "bonded": 4_000}


def test_voted_stake_stays_until_voting_end_and_cannot_vote_twice(net):
    """d0 votes, undelegates and hands its tokens to bob: they complete after voting_end (held), and bob's fresh
    delegation would not count anyway; d0's vote keeps its weight."""
    net.run([net.submit(net.alice, [params_msg("training", steps=32, audit_steps=8)], deposit=GOV_PARAMS["min_deposit"]),
             net.tx(net.d1, tx.MsgUndelegate(validator=net.vals[2].address, amount=200))])  # same block, after the snapshot
    pid = 1
    proposal = net.proposal(pid)
    assert proposal["voting_start"] == net.height
    net.run([net.vote(net.d0, pid, gov.YES)])
    net.run([net.tx(net.d0, tx.MsgUndelegate(validator=net.vals[0].address, amount=500))])
    completions = {u["owner"]: u["completion_height"] for u in staking.unbondings(net.app.store.begin_block())}
    # unbonding_blocks alone would complete d1's at voting_start + 6 = voting_end: held, it completes after.
    assert completions == {net.d1.address: proposal["voting_end"] + 1, net.d0.address: net.height + CHAIN_STAKING["unbonding_blocks"]}
    assert completions[net.d0.address] > proposal["voting_end"]
    assert net.view("/gov/tally", str(pid))["yes"] == 500
    net.run([net.vote(net.vals[0], pid, gov.NO)])
    assert net.view("/gov/tally", str(pid)) | {"final": False} == {"yes": 500, "abstain": 0, "no": 1_000, "no_with_veto": 0,
                                                                  "bonded": 4_000, "final": False}


def test_a_delegator_takes_its_stake_from_its_validators_vote_in_either_order(net):
    first, second = open_vote(net), open_vote(net)
    net.run([net.vote(net.vals[0], first, gov.YES), net.vote(net.d0, second, gov.NO)])
    net.run([net.vote(net.d0, first, gov.NO), net.vote(net.vals[0], second, gov.YES)])
    for pid in (first, second):
        t = net.view("/gov/tally", str(pid))
        assert (t["yes"], t["no"]) == (1_000, 500)
    net.run([net.vote(net.d0, first, gov.YES), net.vote(net.vals[0], second, gov.ABSTAIN)])  # re-votes move whole weights
    assert net.view("/gov/tally", str(first))["yes"] == 1_500 and net.view("/gov/tally", str(first))["no"] == 0
    t = net.view("/gov/tally", str(second))
    assert (t["yes"], t["abstain"], t["no"]) == (0, 1_000, 500)
    # A validator voting through another validator: v1 delegates to v0 before the snapshot, then votes on a third.
    net.run([net.tx(net.vals[1], tx.MsgDelegate(validator=net.vals[0].address, amount=100))])
    net.block([])
    third = open_vote(net, [version_msg(note="third")])
    response = net.run([net.vote(net.vals[0], third, gov.NO), net.vote(net.vals[1], third, gov.YES)])
    assert [e["stake"] for e in end_events_of_tx(response) if e["type"] == "voted"] == ["1600", "1400"]
    t = net.view("/gov/tally", str(third))
    assert (t["yes"], t["no"], t["bonded"]) == (1_300 + 100, 1_600 - 100, 4_100)


def test_votes_are_listed_a_page_at_a_time(net, monkeypatch):
    monkeypatch.setattr(paging, "MAX_ENTRIES", 2)
    pid = open_vote(net)
    net.run([net.vote(k, pid, gov.YES) for k in (*net.vals, net.d0)])
    voters = sorted((k.address for k in (*net.vals, net.d0)), key=tx.crypto.address_raw)
    first = net.view("/gov/votes", str(pid))
    assert ([v["voter"] for v in first["entries"]], first["next"]) == (voters[:2], voters[1])
    listed = net.pages("/gov/votes", str(pid))
    assert [v["voter"] for v in listed] == voters
    assert net.view("/gov/votes", f"{pid}/{voters[-1]}") == {"entries": [], "next": None}
    assert {v["voter"]: v["stake"] for v in listed}[net.d0.address] == 500
    for data in (f"{pid}/nonsense", f"{pid}/{net.d0.address}/x", "/"):
        assert net.query("/gov/votes", data).code == runtime.BadQuery.code, data


def test_a_delegation_that_shrank_since_the_snapshot_votes_what_is_left(net):
    pid = open_vote(net)
    net.run([net.tx(net.d1, tx.MsgUndelegate(validator=net.vals[2].address, amount=150))])
    response = net.run([net.vote(net.d1, pid, gov.NO)])
    assert [e["stake"] for e in end_events_of_tx(response) if e["type"] == "voted"] == ["350"]  # 300 on v1, 50 left on v2
    net.run([net.vote(net.vals[2], pid, gov.YES)])
    t = net.view("/gov/tally", str(pid))
    assert (t["yes"], t["no"]) == (1_200 - 50, 350)  # v2 casts its snapshot less the 50 d1 voted itself


def test_an_expedited_vote_that_falls_back_holds_the_stake_to_its_new_end(net):
    pid = open_vote(net, expedited=True)
    holds = lambda: {staking._hold(net.app.store.begin_block(), v.address)["until"] for v in net.vals}  # noqa: E731
    assert holds() == {net.proposal(pid)["voting_end"]}
    net.run([net.vote(net.vals[0], pid, gov.YES), net.vote(net.vals[1], pid, gov.NO)])  # 1,500 to 1,300: below 66.7%
    finish(net, pid)
    proposal = net.proposal(pid)
    assert proposal["status"] == gov.VOTING_PERIOD and proposal["voting_end"] == proposal["voting_start"] + GOV_PARAMS["voting_blocks"]
    assert holds() == {proposal["voting_end"]}  # the votes cast keep counting: their stake stays slashable
    assert len(gov.snapshot(net.app.store.begin_block(), pid)) == 3
    net.run([net.vote(net.vals[2], pid, gov.YES)])
    finish(net, pid)
    assert net.proposal(pid)["status"] == gov.PASSED and net.proposal(pid)["tally"]["yes"] == 1_500 + 1_200


def test_a_vote_reads_a_bounded_number_of_delegations(net, monkeypatch):
    monkeypatch.setattr(gov, "MAX_VOTE_DELEGATIONS", 2)
    net.run([net.tx(net.d1, tx.MsgDelegate(validator=net.vals[0].address, amount=10))])
    pid = open_vote(net)
    r = net.block([net.vote(net.d1, pid, gov.YES), net.vote(net.d0, pid, gov.YES)]).tx_results
    assert [x.code for x in r] == [gov.InvalidVote.code, 0] and "more than 2 delegations" in r[0].log
    assert net.view("/gov/tally", str(pid))["yes"] == 500


def test_the_end_block_reads_no_delegation(net, monkeypatch):
    """Ending votes reads the running counts and the snapshot: no voter's delegations (they were read by its vote)."""
    pids = [open_vote(net), open_vote(net, [version_msg(note="second")])]
    net.run([net.vote(k, pid, gov.YES) for pid in pids for k in (*net.vals, net.d0, net.d1)])
    reads = []
    monkeypatch.setattr(staking, "voting_delegations", lambda *a: reads.append(a) or [])
    monkeypatch.setattr(staking, "delegations_of", lambda *a: reads.append(a) or [])
    net.until(max(net.proposal(p)["voting_end"] for p in pids))
    assert reads == [] and all(net.proposal(p)["status"] == gov.PASSED for p in pids)
    assert net.proposal(pids[0])["tally"]["yes"] == 4_000


def test_allowed_staking_changes_apply(net):
    base = staking.Params(**CHAIN_STAKING)
    pid = open_vote(net, [params_msg("staking", base=base, unbonding_blocks=9, max_validators=2)])
    net.run([net.vote(v, pid, gov.YES) for v in net.vals])
    end = finish(net, pid)
    assert net.proposal(pid)["status"] == gov.PASSED
    assert json.loads(net.query("/staking/params").value)["unbonding_blocks"] == 9
    # The smallest validator (v2: 1,000 + 200) leaves CometBFT's set in the block the change executes.
    assert [u.power for u in end.validator_updates] == [0]


def test_a_second_vote_replaces_the_first(net):
    pid = open_vote(net)
    net.run([net.vote(net.vals[0], pid, gov.NO)])
    net.run([net.vote(net.vals[0], pid, gov.YES), net.vote(net.vals[1], pid, gov.YES)])
    assert net.pages("/gov/votes", str(pid)) == sorted(
        [{"voter": net.vals[0].address, "option": "yes", "stake": 0}, {"voter": net.vals[1].address, "option": "yes", "stake": 0}],
        key=lambda v: bytes(tx.crypto.address_raw(v["voter"])))
    assert net.view("/gov/tally", str(pid))["no"] == 0
    finish(net, pid)
    assert net.proposal(pid)["status"] == gov.PASSED  # 2,800 of 4,000 voted, all yes


def test_quorum_not_met_rejects_and_refunds(net):
    before = net.balance(net.alice.address)
    pid = open_vote(net)
    net.run([net.vote(net.vals[0], pid, gov.YES)])  # v0 and d0: 1,500 of 4,000 bonded = 37.5% >= 33.4%
    net.run([net.vote(net.d0, pid, gov.ABSTAIN), net.vote(net.vals[0], pid, gov.YES)])
    assert net.view("/gov/tally", str(pid))["yes"] == 1_000
    # Quorum: only d1 voting would be 500 / 4,000 = 12.5%.
    pid2 = open_vote(net)
    net.run([net.vote(net.d1, pid2, gov.YES)])
    end = finish(net, pid2)  # pid's window ended on the way
    proposal = net.proposal(pid2)
    assert proposal["status"] == gov.REJECTED and proposal["failed_reason"].startswith("quorum not met")
    assert end_events(end, "deposits_refunded") == [{"proposal": str(pid2), "amount": "1000"}]
    assert net.proposal(pid)["status"] == gov.PASSED  # yes 1,000 over no 0; d0's 500 abstain count for quorum only
    assert net.balance(net.alice.address) == before - 2 * SUBMIT_FEE


def test_quorum_burn_when_the_param_says_so():
    outcome = gov.outcome(gov.Params(burn_vote_quorum=True), gov.Tally(yes=333, bonded=1_000), False)
    assert outcome[0] == gov.REJECTED and outcome[2] is True
    assert gov.outcome(gov.Params(), gov.Tally(yes=334, bonded=1_000), False)[0] == gov.PASSED  # 33.4% exactly is quorum
    assert gov.outcome(gov.Params(), gov.Tally(bonded=0), False)[0] == gov.REJECTED  # nobody bonded: never passes


@pytest.mark.parametrize("tally, status", [
    (gov.Tally(yes=501, no=499, bonded=1_000), gov.PASSED),
    (gov.Tally(yes=500, no=500, bonded=1_000), gov.REJECTED),  # threshold is strictly above
    (gov.Tally(yes=100, abstain=800, no=99, bonded=1_000), gov.PASSED),  # abstain counts for quorum, not for the threshold
    (gov.Tally(abstain=900, bonded=1_000), gov.REJECTED),  # every vote abstained
    (gov.Tally(yes=600, no_with_veto=335, no=65, bonded=1_000), gov.VETOED),  # veto above 33.4% of the votes beats a yes majority
    (gov.Tally(yes=666, no_with_veto=334, bonded=1_000), gov.PASSED),  # 33.4% exactly is not a veto
])
def test_tally_rules(tally, status):
    assert gov.outcome(gov.Params(), tally, False)[0] == status


def test_expedited_threshold_is_higher():
    assert gov.outcome(gov.Params(), gov.Tally(yes=660, no=340, bonded=1_000), True)[0] == gov.REJECTED
    assert gov.outcome(gov.Params(), gov.Tally(yes=668, no=332, bonded=1_000), True)[0] == gov.PASSED


def test_a_vetoed_proposal_burns_its_deposit(net):
    supply = bank.supply(net.app.store.begin_block())
    pid = open_vote(net)
    net.run([net.vote(net.vals[0], pid, gov.YES), net.vote(net.vals[1], pid, gov.NO_WITH_VETO), net.vote(net.vals[2], pid, gov.NO_WITH_VETO)])
    end = finish(net, pid)
    assert net.proposal(pid)["status"] == gov.VETOED
    assert end_events(end, "deposits_burned") == [{"proposal": str(pid), "amount": "1000"}]
    assert json.loads(net.query("/training/params").value)["steps"] == 64
    assert bank.supply(net.app.store.begin_block()) == supply - 1_000
    assert net.balance(gov.DEPOSITS) == 0


def test_every_vote_abstaining_rejects_and_refunds(net):
    pid = open_vote(net)
    net.run([net.vote(v, pid, gov.ABSTAIN) for v in net.vals])
    end = finish(net, pid)
    assert net.proposal(pid)["failed_reason"] == "every vote abstained"
    assert end_events(end, "deposits_refunded")


# --- deposits ----------------------------------------------------------------------------


def test_deposits_from_several_accounts_start_the_vote_and_are_all_refunded(net):
    before = {k.address: net.balance(k.address) for k in (net.alice, net.bob)}
    r = net.run([net.submit(net.alice, [params_msg("training", steps=32, audit_steps=8)], deposit=250)])
    pid = int(end_events_of_tx(r)[-1].get("proposal") or net.pages("/gov/proposals")[0]["id"])
    assert net.proposal(pid)["status"] == gov.DEPOSIT_PERIOD
    net.run([net.tx(net.bob, tx.MsgDeposit(proposal=pid, amount=700))])
    assert net.proposal(pid)["status"] == gov.DEPOSIT_PERIOD
    r = net.run([net.tx(net.bob, tx.MsgDeposit(proposal=pid, amount=50))])
    assert net.proposal(pid)["status"] == gov.VOTING_PERIOD and net.proposal(pid)["total_deposit"] == 1_000
    assert "voting_started" in [e["type"] for e in end_events_of_tx(r)]
    net.run([net.vote(v, pid, gov.YES) for v in net.vals])
    finish(net, pid)
    assert net.balance(net.alice.address) == before[net.alice.address] - SUBMIT_FEE
    assert net.balance(net.bob.address) == before[net.bob.address] - 2
    assert net.query("/gov/proposal", str(pid)).code == 0 and list(gov.deposits(net.app.store.begin_block(), pid)) == []


def test_a_proposal_short_of_its_deposit_is_dropped_and_its_deposit_burned(net):
    supply = bank.supply(net.app.store.begin_block())
    r = net.run([net.submit(net.alice, [params_msg("training", steps=32, audit_steps=8)], deposit=250)])
    pid = net.pages("/gov/proposals")[0]["id"]
    assert net.block([net.vote(net.vals[0], pid, gov.YES)]).tx_results[0].code == gov.WrongPeriod.code
    ends = net.until(net.proposal(pid)["deposit_end"])
    assert net.proposal(pid)["status"] == gov.DROPPED
    assert end_events(ends[-1], "proposal_dropped") == [{"proposal": str(pid), "total_deposit": "250"}]
    assert bank.supply(net.app.store.begin_block()) == supply - 250
    assert net.block([net.tx(net.bob, tx.MsgDeposit(proposal=pid, amount=1_000))]).tx_results[0].code == gov.WrongPeriod.code
    assert r.tx_results[0].code == 0


def test_deposits_are_refunded_at_expiry_when_burning_is_off(tmp_path):
    alice = fixed_key(1)
    chain = GovChain(tmp_path / "app", {alice.address: FUNDS}, gov={"params": GOV_PARAMS | {"burn_proposal_deposit_prevote": False}})
    chain.run([chain.submit(alice, [params_msg("training", steps=32, audit_steps=8)], deposit=250)])
    chain.until(chain.proposal(1)["deposit_end"])
    assert chain.proposal(1)["status"] == gov.DROPPED and chain.balance(alice.address) == FUNDS - SUBMIT_FEE
    chain.app.close()


# --- params validated in full at submission -------------------------------------------------


@pytest.mark.parametrize("message, error", [
    (params_msg("training", steps=0), "invalid training params"),
    (params_msg("training", audit_steps=65), "invalid training params"),
    (tx.MsgUpdateParams(module="training", params_json=json.dumps({"steps": 32})), "whole set: missing"),
    (tx.MsgUpdateParams(module="training", params_json=json.dumps(asdict(training.Params()) | {"stepz": 1})), "unknown stepz"),
    (params_msg("training", steps="32"), "training.params.steps must be int"),
    (params_msg("training", steps=32.0), "training.params.steps must be int"),
    (params_msg("training", enabled=1), "training.params.enabled must be bool"),
    (params_msg("bank", min_fee=2**70), "bank.params.min_fee must be int"),
    (params_msg("gov", expedited_voting_blocks=600), "expedited_voting_blocks"),
    (params_msg("staking", base=staking.Params(**CHAIN_STAKING), power_unit=7), "power_unit is set at genesis only"),
    (params_msg("staking", base=staking.Params(**CHAIN_STAKING), unbonding_blocks=2), "unbonding_blocks must be at least 3"),
    (params_msg("staking", base=staking.Params(**CHAIN_STAKING), unbonding_blocks=5), "unbonding_blocks may only grow"),
    (params_msg("registry", authority="not-an-address"), "registry.params.authority"),
    # Bounds that keep the chain and gov usable whatever passes (review finding 7).
    (params_msg("gov", threshold_bps=10_000, expedited_threshold_bps=10_000), "10000 passes nothing"),
    (params_msg("gov", threshold_bps=4_999), "need 5000 <= threshold_bps"),
    (params_msg("gov", quorum_bps=6_668), "quorum_bps must be 1000 to 6667"),
    (params_msg("gov", quorum_bps=999), "quorum_bps must be 1000 to 6667"),
    (params_msg("gov", veto_threshold_bps=0), "veto_threshold_bps must be 1000 to 10000"),
    (params_msg("gov", expedited_min_deposit=gov.MAX_MIN_DEPOSIT + 1), f"expedited_min_deposit <= {gov.MAX_MIN_DEPOSIT}"),
    (params_msg("gov", base=gov.Params(**GOV_PARAMS), expedited_min_deposit=10**14), "1000 bps of the supply"),
    (params_msg("staking", base=staking.Params(**CHAIN_STAKING), unbonding_blocks=2**62), "unbonding_blocks must be at most 10000000"),
    # Review 14b: a vote lasts at most an unbonding (F1), and gov cannot be made practically unusable (F3).
    (params_msg("gov", base=gov.Params(**GOV_PARAMS), voting_blocks=7), "voting_blocks (7) must be at most staking.params.unbonding_blocks (6)"),
    (params_msg("gov", base=gov.Params(**GOV_PARAMS), voting_blocks=5), "voting_blocks may not shrink below 10 blocks"),
    (params_msg("gov", base=gov.Params(**GOV_PARAMS), deposit_blocks=3), "deposit_blocks may not shrink below 10 blocks"),
    (params_msg("gov", base=gov.Params(**GOV_PARAMS), expedited_voting_blocks=1), "expedited_voting_blocks may not shrink below 5 blocks"),
    (params_msg("gov", base=gov.Params(**GOV_PARAMS), min_initial_deposit_bps=5_001), "min_initial_deposit_bps must be at most 5000"),
    (params_msg("staking", base=staking.Params(**CHAIN_STAKING), jail_blocks=10**8), "jail_blocks must be at most 10000000"),
    (params_msg("bank", min_fee=0), "min_fee must be 1 to"),
    (params_msg("bank", min_fee=bank.MAX_MIN_FEE + 1), "min_fee must be 1 to"),
    (params_msg("bank", byte_fee=0), "byte_fee must be 1 to"),
    (params_msg("bank", free_bytes=bank.MAX_FREE_BYTES + 1), "free_bytes must be at most"),
    (params_msg("training", batch_size=training.MAX_BATCH_SIZE + 1), "batch_size must be at most 4096"),
    (tx.MsgUpdateParams(module="auth", params_json="{}"), "has no params"),
    (tx.MsgUpdateParams(module="training", params_json="[" * 40), "not valid JSON"),
    (tx.MsgUpdateParams(module="training", params_json="{\"steps\": NaN}"), "not valid JSON"),
])
def test_invalid_params_are_refused_at_submission(net, message, error):
    before = net.balance(net.alice.address)
    first = tx.MsgSetDatasetWeight(dataset=0, weight=5)  # valid: the refusal names the second message
    result = net.block([net.submit(net.alice, [first, message])]).tx_results[0]
    assert (result.codespace, result.code) == ("gov", gov.InvalidProposal.code)
    assert "refused at submission: message 1 (update_params) failed (gov code 8)" in result.log and error in result.log, result.log
    assert net.balance(net.alice.address) == before - SUBMIT_FEE  # only the fee: no deposit, no proposal
    assert net.pages("/gov/proposals") == []


@pytest.mark.parametrize("messages, error", [
    ([], "1 to 16 messages"),
    ([tx.MsgVote(proposal=1, option=1)], "vote cannot be a proposal's message"),
    ([tx.MsgSend(recipient=fixed_key(9).address, amount=1)], "insufficient balance"),  # the gov account holds nothing
    ([version_msg(parent=7)], "registry code 3"),
])
def test_proposals_that_could_only_fail_are_refused(net, messages, error):
    result = net.block([net.submit(net.alice, messages)]).tx_results[0]
    assert result.code == gov.InvalidProposal.code and error in result.log, result.log


def test_bad_proposal_fields_are_refused(net):
    good = [body(params_msg("training", steps=32, audit_steps=8))]
    stamped = tx.TxBody(chain_id="test-chain", send=tx.MsgSend(recipient=net.bob.address, amount=1))
    cases = [
        (tx.MsgSubmitProposal(messages=good, initial_deposit=249, title="t", summary="s"), gov.InvalidDeposit, "below 250"),
        (tx.MsgSubmitProposal(messages=good, initial_deposit=749, title="t", summary="s", expedited=True), gov.InvalidDeposit, "below 750"),
        (tx.MsgSubmitProposal(messages=good, initial_deposit=250, title="", summary="s"), gov.InvalidProposal, "title"),
        (tx.MsgSubmitProposal(messages=good, initial_deposit=250, title="t", summary="\x00"), gov.InvalidProposal, "summary"),
        (tx.MsgSubmitProposal(messages=good, initial_deposit=250, title="t" * 141, summary="s"), gov.InvalidProposal, "title"),
        (tx.MsgSubmitProposal(messages=[stamped], initial_deposit=250, title="t", summary="s"), gov.InvalidProposal, "leave chain_id"),
        (tx.MsgSubmitProposal(messages=[tx.TxBody()], initial_deposit=250, title="t", summary="s"), gov.InvalidProposal, "no known message"),
    ]
    results = net.block([net.tx(net.alice, msg, fee=SUBMIT_FEE) for msg, _, _ in cases]).tx_results
    for result, (_, error, text) in zip(results, cases):
        assert (result.code, text in result.log) == (error.code, True), result.log
    poor = fixed_key(20)
    net.run([net.tx(net.alice, tx.MsgSend(recipient=poor.address, amount=SUBMIT_FEE + 100))])
    result = net.block([net.submit(poor, [params_msg("training", steps=32, audit_steps=8)], deposit=250)]).tx_results[0]
    assert result.codespace == "bank" and "initial deposit" in result.log
    assert net.pages("/gov/proposals") == []


# --- atomic execution -------------------------------------------------------------------------


def test_one_failing_message_rolls_back_the_others(net):
    """Both proposals pass submission; the first registers the version, so the second's register fails when it runs."""
    first = open_vote(net, [version_msg()])
    second = open_vote(net, [params_msg("bank", min_fee=3), version_msg()])
    net.run([net.vote(v, p, gov.YES) for p in (first, second) for v in net.vals])
    end = finish(net, second)
    assert net.proposal(first)["status"] == gov.PASSED
    proposal = net.proposal(second)
    assert proposal["status"] == gov.FAILED
    assert proposal["failed_reason"].startswith("message 1 (register_version) failed (registry code 5)")
    assert end_events(end, "proposal_failed")[0]["reason"] == proposal["failed_reason"]
    assert end_events(end, "params_updated") == []  # the bank change ran first and was rolled back
    assert json.loads(net.query("/bank/params").value)["min_fee"] == 1
    assert end_events(end, "deposits_refunded")  # a passed proposal's deposit comes back even if its messages fail


def test_a_message_that_raises_at_execution_fails_the_proposal_not_the_chain(net, monkeypatch):
    pid = open_vote(net, [params_msg("bank", min_fee=3), params_msg("training", steps=32, audit_steps=8)])
    net.run([net.vote(v, pid, gov.YES) for v in net.vals])

    def broken(ctx, signer, msg):
        bank.mint(ctx, signer, 5)  # a write that must not survive
        raise RuntimeError("bug")

    monkeypatch.setitem(runtime.CALLS, "update_params", ("gov", broken))
    supply = bank.supply(net.app.store.begin_block())
    finish(net, pid)
    proposal = net.proposal(pid)
    assert proposal["status"] == gov.FAILED and "internal error RuntimeError" in proposal["failed_reason"]
    assert bank.supply(net.app.store.begin_block()) == supply and net.balance(gov.GOV) == 0


# --- expedited -------------------------------------------------------------------------------


def test_expedited_passes_early_or_falls_back_to_a_regular_vote(net):
    fast = open_vote(net, expedited=True)
    assert net.proposal(fast)["voting_end"] == net.height + GOV_PARAMS["expedited_voting_blocks"]
    net.run([net.vote(v, fast, gov.YES) for v in net.vals])
    finish(net, fast)
    assert net.proposal(fast)["status"] == gov.PASSED

    slow = open_vote(net, [params_msg("training", base=live(net, training), steps=16, audit_steps=8)], expedited=True)
    start = net.proposal(slow)["voting_start"]
    net.run([net.vote(net.vals[0], slow, gov.YES), net.vote(net.vals[1], slow, gov.YES), net.vote(net.vals[2], slow, gov.NO)])
    end = finish(net, slow)  # yes 2,800 of 4,000 (70% > 66.7%)? d1's 200 follow v2: no = 1,200; yes 2,800 / 4,000 = 70%
    assert net.proposal(slow)["status"] == gov.PASSED and end_events(end, "proposal_passed")

    third = open_vote(net, [params_msg("training", base=live(net, training), steps=8, audit_steps=8)], expedited=True)
    start = net.proposal(third)["voting_start"]
    net.run([net.vote(net.vals[0], third, gov.YES), net.vote(net.vals[1], third, gov.NO)])  # 1,500 yes vs 1,300 no: 53%
    end = finish(net, third)
    proposal = net.proposal(third)
    assert proposal["status"] == gov.VOTING_PERIOD and proposal["expedited"] is False
    assert proposal["voting_end"] == start + GOV_PARAMS["voting_blocks"]
    assert end_events(end, "expedited_converted") == [{"proposal": str(third), "voting_end": str(proposal["voting_end"])}]
    finish(net, third)
    assert net.proposal(third)["status"] == gov.PASSED  # 53% passes the regular 50% threshold
    assert json.loads(net.query("/training/params").value)["steps"] == 8


# --- attackers -------------------------------------------------------------------------------


def test_votes_need_stake_a_known_proposal_and_a_valid_option(net):
    pid = open_vote(net)
    results = net.block([net.vote(net.bob, pid, gov.YES), net.vote(net.vals[0], pid, 5), net.vote(net.vals[0], pid, 0),
                         net.vote(net.vals[0], 99, gov.YES)]).tx_results
    assert [r.code for r in results] == [gov.NoStake.code, gov.InvalidVote.code, gov.InvalidVote.code, gov.UnknownProposal.code]
    assert net.pages("/gov/votes", str(pid)) == []


def test_a_vote_after_the_window_is_refused_and_changes_nothing(net):
    pid = open_vote(net)
    net.run([net.vote(v, pid, gov.YES) for v in net.vals])
    finish(net, pid)
    tally = net.proposal(pid)["tally"]
    result = net.block([net.vote(net.vals[0], pid, gov.NO_WITH_VETO)]).tx_results[0]
    assert result.code == gov.WrongPeriod.code and "passed" in result.log
    assert net.proposal(pid)["tally"] == tally and net.pages("/gov/votes", str(pid))[0]["option"] == "yes"


def test_spam_proposals_pay_deposits_and_leave_bounded_state(net):
    """Empty proposals are refused; each spam proposal costs its initial deposit, burned at expiry, and leaves
    only its record: deposits, queue entries and votes are gone."""
    supply = bank.supply(net.app.store.begin_block())
    spam = [net.submit(net.bob, [params_msg("training", steps=32, audit_steps=8)], deposit=250, title=f"spam {i}") for i in range(20)]
    net.run(spam)
    assert len(net.pages("/gov/proposals")) == 20
    net.until(net.height + GOV_PARAMS["deposit_blocks"])
    state = net.app.store.begin_block()
    assert all(p["status"] == gov.DROPPED for p in net.pages("/gov/proposals"))
    assert bank.supply(state) == supply - 20 * 250
    assert list(state.iter_prefix(gov.DEPOSIT_PREFIX)) == [] and list(state.iter_prefix(gov.DEPOSIT_QUEUE_PREFIX)) == []
    assert list(state.iter_prefix(gov.VOTING_QUEUE_PREFIX)) == []
    assert net.pages("/gov/proposals", "dropped")[0]["id"] == 20


def test_depositors_are_bounded(net):
    r = net.run([net.submit(net.alice, [params_msg("training", steps=32, audit_steps=8)], deposit=250)])
    assert r.tx_results[0].code == 0
    funded = [fixed_key(100 + i) for i in range(gov.MAX_DEPOSITORS)]
    least = gov.min_new_deposit(gov.get_params(net.app.store.begin_block()), False)
    assert least == -(-GOV_PARAMS["min_deposit"] // gov.MAX_DEPOSITORS) == 16
    net.run([net.tx(net.alice, tx.MsgSend(recipient=k.address, amount=100)) for k in funded])
    results = net.block([net.tx(k, tx.MsgDeposit(proposal=1, amount=least)) for k in funded]).tx_results
    assert [r.code for r in results[:-1]] == [0] * (gov.MAX_DEPOSITORS - 1)
    assert results[-1].code == gov.InvalidDeposit.code and "depositors already" in results[-1].log
    assert net.block([net.tx(net.alice, tx.MsgDeposit(proposal=1, amount=1))]).tx_results[0].code == 0  # an existing depositor adds
    zero = net.block([net.tx(net.alice, tx.MsgDeposit(proposal=1, amount=0))]).tx_results[0]
    assert zero.code == gov.InvalidDeposit.code
    # Depositors who fill every slot have reached the minimum between them: the proposal is voting.
    assert net.proposal(1)["status"] == gov.VOTING_PERIOD and net.proposal(1)["depositors"] == gov.MAX_DEPOSITORS


def test_dust_deposits_cannot_lock_supporters_out(net):
    """Review finding 5: 63 one-token deposits would fill the depositor slots and let the proposer's deposit burn."""
    net.run([net.submit(net.alice, [params_msg("training", steps=32, audit_steps=8)], deposit=250)])
    sybils = [fixed_key(100 + i) for i in range(gov.MAX_DEPOSITORS - 1)]
    net.run([net.tx(net.bob, tx.MsgSend(recipient=k.address, amount=3)) for k in sybils])
    dust = net.block([net.tx(k, tx.MsgDeposit(proposal=1, amount=1)) for k in sybils]).tx_results
    assert {(r.code, "adds at least 16ugrad" in r.log) for r in dust} == {(gov.InvalidDeposit.code, True)}
    assert net.proposal(1)["depositors"] == 1 and net.balance(gov.DEPOSITS) == 250
    net.run([net.tx(net.d0, tx.MsgDeposit(proposal=1, amount=750))])  # the honest supporter gets in
    assert net.proposal(1)["status"] == gov.VOTING_PERIOD
    # An initial deposit takes a slot too: with no minimum initial deposit, a nonzero one below 1/64 is refused.
    pid = open_vote(net, [params_msg("gov", base=live(net, gov), min_initial_deposit_bps=0)])
    net.run([net.vote(v, pid, gov.YES) for v in net.vals])
    finish(net, pid)
    assert net.proposal(pid)["status"] == gov.PASSED
    r = net.block([net.submit(net.alice, [params_msg("bank", min_fee=2)], deposit=15)]).tx_results[0]
    assert r.code == gov.InvalidDeposit.code and "adds at least 16ugrad" in r.log, r.log
    r = net.block([net.submit(net.alice, [params_msg("bank", min_fee=2)], deposit=46, expedited=True)]).tx_results[0]
    assert r.code == gov.InvalidDeposit.code and "adds at least 47ugrad" in r.log, r.log  # ceil(3,000 / 64)
    net.run([net.submit(net.alice, [params_msg("bank", min_fee=2)], deposit=0)])
    assert net.proposal(pid + 1)["depositors"] == 0 and net.proposal(pid + 1)["status"] == gov.DEPOSIT_PERIOD


def test_a_params_change_drafted_before_another_passed_fails_instead_of_reverting_it(net):
    """Review finding 6: B carries the whole set as it was before A passed; it must not silently put A's change back."""
    a = open_vote(net, [params_msg("training", steps=32, audit_steps=8)])
    b = open_vote(net, [params_msg("bank", min_fee=3), params_msg("training", reward=2_000_000)])  # drafted against steps=64
    net.run([net.vote(v, p, gov.YES) for p in (a, b) for v in net.vals])
    finish(net, a)
    assert json.loads(net.query("/training/params").value)["steps"] == 32
    end = finish(net, b)
    proposal = net.proposal(b)
    assert proposal["status"] == gov.FAILED
    assert "message 1 (update_params) failed (gov code 9): training params changed since this set was drafted" in proposal["failed_reason"]
    assert end_events(end, "params_updated") == []  # all or none: bank's min_fee stays too
    assert json.loads(net.query("/bank/params").value)["min_fee"] == 1
    assert json.loads(net.query("/training/params").value)["steps"] == 32
    # Drafted again against the live params, the same change passes and keeps A's.
    c = open_vote(net, [params_msg("training", base=live(net, training), reward=2_000_000)])
    net.run([net.vote(v, c, gov.YES) for v in net.vals])
    finish(net, c)
    p = json.loads(net.query("/training/params").value)
    assert net.proposal(c)["status"] == gov.PASSED and (p["steps"], p["reward"]) == (32, 2_000_000)


@pytest.mark.parametrize("digest", ["", "00" * 32, gov.params_digest(training.Params(steps=32, audit_steps=8)), "not hex"])
def test_a_params_change_against_other_params_is_refused_at_submission(net, digest):
    message = params_msg("training", steps=16)
    message.params_sha256 = digest
    result = net.block([net.submit(net.alice, [message])]).tx_results[0]
    assert (result.codespace, result.code) == ("gov", gov.InvalidProposal.code)
    assert "(gov code 9): training params changed since this set was drafted" in result.log, result.log
    assert net.pages("/gov/proposals") == []


def test_two_changes_of_one_module_in_one_proposal_are_refused(net):
    """Drafted against the same params, the second would undo the first; drafted against the first's, the pair would
    step around a module's per-change limits (test_gov_bounds.py)."""
    first = params_msg("training", steps=32, audit_steps=8)
    second = params_msg("training", reward=5)
    result = net.block([net.submit(net.alice, [first, second])]).tx_results[0]
    assert result.code == gov.InvalidProposal.code and "changes training's params at most once" in result.log


def test_end_block_survives_any_proposal_content(net):
    """Every routed message type, empty and with junk fields, as a proposal: refused at submission or decided at
    the end of its window, never an exception out of a block."""
    junk = {"recipient": "gc1junk", "amount": 2**64 - 1, "validator": net.vals[0].address, "module": "training",
            "params_json": "{}", "proposal": 1, "round": 2**63, "cid": "x" * 100, "sha256": "zz", "moniker": "\x7f"}
    submitted = []
    for name in sorted(runtime.CALLS):
        field = tx.TxBody.DESCRIPTOR.fields_by_name[name]
        msg_type = field.message_type._concrete_class
        filled = msg_type()
        for f in msg_type.DESCRIPTOR.fields:
            value = junk.get(f.name)
            if value is not None:
                try:
                    setattr(filled, f.name, value)
                except (TypeError, ValueError, AttributeError):
                    pass
        for msg in (msg_type(), filled):
            submitted.append(net.submit(net.alice, [msg], title=f"{name} probe"))
    results = net.block(submitted).tx_results
    assert all(r.code in (0, gov.InvalidProposal.code) for r in results), [(r.codespace, r.code, r.log) for r in results]
    assert any(r.code == 0 for r in results)  # some pass their dry run (e.g. withdraw_rewards with nothing to pay)
    open_ids = [p["id"] for p in net.pages("/gov/proposals", "voting_period")]
    net.run([net.vote(v, pid, gov.YES) for pid in open_ids for v in net.vals])
    net.until(net.height + GOV_PARAMS["voting_blocks"] + 1)
    assert net.pages("/gov/proposals", "voting_period") == []


# --- queries ---------------------------------------------------------------------------------


def test_queries(net):
    pid = open_vote(net)
    assert net.view("/gov/params") == asdict(gov.Params(**GOV_PARAMS))
    (listed,) = net.pages("/gov/proposals")
    assert (listed["id"], listed["messages"], listed["title"]) == (pid, 1, "Raise the steps")
    stored = net.proposal(pid)
    (entry,) = gov.messages_of(gov.Proposal(**stored))
    assert json.loads(entry.update_params.params_json)["steps"] == 32
    for path, data in (("/gov/proposal", "x"), ("/gov/votes", "99"), ("/gov/tally", ""), ("/gov/proposals", "nonsense")):
        result = net.query(path, data)
        assert result.code == runtime.BadQuery.code, (path, data, result.log)
    assert net.query("/gov/proposal", "99").value == b""
    assert hashlib.sha256(net.query("/gov/proposal", str(pid)).value).digest()  # a provable single key


def test_the_localnet_gov_params_are_valid() -> None:
    from abci_app import localnet as ln
    from abci_app.localnet.genesis import DEV_BALANCE

    for model in ln.MODELS:
        params = gov.Params(**ln.localnet_app_state(model)["gov"]["params"])
        params.validate()
        assert params.voting_blocks <= 120 and params.min_deposit <= DEV_BALANCE // 1000


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@pytest.mark.parametrize("depth, refusal", [(20, ("gov", gov.InvalidProposal.code)), (200, ("runtime", runtime.MalformedTx.code))])
def test_nested_proposals_are_refused_without_an_exception(net, depth, refusal):
    """Proposals inside proposals, as deep as a tx allows: the decoder's depth limit or gov's rule refuses them."""
    proposal = _field(3, b"t") + _field(4, b"s")
    for level in range(depth):
        deposit = bytes([0x10]) + _varint(1_000) if level == depth - 1 else b""  # the outermost pays its deposit
        proposal = _field(1, _field(60, proposal)) + deposit + _field(3, b"t") + _field(4, b"s")
    nonce = net.nonce(net.alice.address)
    nonce_field = bytes([0x10]) + _varint(nonce) if nonce else b""  # canonical: proto3 leaves a zero out
    body = _field(1, CHAIN_ID_BYTES) + nonce_field + bytes([0x18]) + _varint(SUBMIT_FEE) + _field(60, proposal)
    signature = net.alice.sign(tx.crypto.sign_bytes(CHAIN_ID_BYTES.decode(), body))
    raw = tx.Tx(body=body, pubkey=net.alice.pubkey, signature=signature).SerializeToString(deterministic=True)
    checked = net.check(raw)
    assert (checked.codespace, checked.code) == refusal, checked.log
    result = net.block([raw]).tx_results[0]
    assert result.code == checked.code and net.pages("/gov/proposals") == []


@pytest.mark.parametrize("gov_params", [{"voting_blocks": 7, "expedited_voting_blocks": 2}, {}])  # {}: the default, 20
def test_genesis_refuses_a_vote_longer_than_an_unbonding(tmp_path, gov_params):
    """Review 14b F1: the stake hold of a vote (until voting_end) never delays an exit past unbonding_blocks."""
    with pytest.raises(ValueError, match="must be at most staking.params.unbonding_blocks"):
        Chain(tmp_path / "app", {}, staking={"params": CHAIN_STAKING}, gov={"params": gov_params})


def test_gov_windows_may_grow_from_short_genesis_ones(net):
    """The floors refuse only shrinking below them: a test net's short windows may stay or grow, up to unbonding_blocks."""
    pid = open_vote(net, [params_msg("gov", base=live(net, gov), deposit_blocks=5, quorum_bps=2_000)])
    net.run([net.vote(v, pid, gov.YES) for v in net.vals])
    finish(net, pid)
    assert net.proposal(pid)["status"] == gov.PASSED
    assert (live(net, gov).deposit_blocks, live(net, gov).quorum_bps, live(net, gov).voting_blocks) == (5, 2_000, 6)
