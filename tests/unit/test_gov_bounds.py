"""Bounds on what one block or one proposal can do (review 14b, findings 4 and 8): at most MAX_VOTES_ENDING votes
end at one height, and a params change multiplies a fee by at most bank.MAX_FEE_RISE."""

from __future__ import annotations

import pytest

from abci_app import tx
from abci_app.modules import bank, gov, training
from tests.unit.test_gov import GOV_PARAMS, SUBMIT_FEE, live, net, params_msg  # noqa: F401 (net is a fixture)

MIN_DEPOSIT = GOV_PARAMS["min_deposit"]


def _steps_change(net, steps):
    return [params_msg("training", base=live(net, training), steps=steps, audit_steps=8)]


def test_at_most_max_votes_ending_end_at_one_height_and_the_next_block_takes_more(net):
    full = [net.submit(net.alice, _steps_change(net, 32), deposit=MIN_DEPOSIT, title=f"full {i}") for i in range(gov.MAX_VOTES_ENDING + 1)]
    before = net.balance(net.alice.address)
    results = net.block(full).tx_results
    assert [r.code for r in results[:-1]] == [0] * gov.MAX_VOTES_ENDING
    assert (results[-1].codespace, results[-1].code) == ("gov", gov.VotingFull.code), results[-1].log
    assert f"{gov.MAX_VOTES_ENDING} votes already end at height" in results[-1].log
    # The refused one left nothing: no proposal, no deposit, only its fee.
    assert len(net.view("/gov/proposals")) == gov.MAX_VOTES_ENDING
    assert net.balance(net.alice.address) == before - (gov.MAX_VOTES_ENDING + 1) * SUBMIT_FEE - gov.MAX_VOTES_ENDING * MIN_DEPOSIT
    state = net.app.store.begin_block()
    end = net.proposal(1)["voting_end"]
    assert gov.votes_ending(state, end) == gov.MAX_VOTES_ENDING
    # One block later the vote ends one height later: there is room again.
    net.run([net.submit(net.alice, _steps_change(net, 32), deposit=MIN_DEPOSIT, title="next block")])
    last = net.view("/gov/proposals")[0]
    assert (last["status"], last["voting_end"]) == (gov.VOTING_PERIOD, end + 1)


def test_a_deposit_that_would_start_a_vote_at_a_full_height_is_refused_and_changes_nothing(net):
    net.run([net.submit(net.bob, _steps_change(net, 32), deposit=MIN_DEPOSIT // 2, title="waiting")])
    waiting = net.view("/gov/proposals")[0]["id"]
    fill = [net.submit(net.alice, _steps_change(net, 32), deposit=MIN_DEPOSIT, title=f"full {i}") for i in range(gov.MAX_VOTES_ENDING)]
    before = (net.balance(net.bob.address), net.proposal(waiting))
    results = net.block([*fill, net.tx(net.bob, tx.MsgDeposit(proposal=waiting, amount=MIN_DEPOSIT))]).tx_results
    assert [r.code for r in results[:-1]] == [0] * gov.MAX_VOTES_ENDING
    assert results[-1].code == gov.VotingFull.code and f"proposal {waiting}'s vote" in results[-1].log
    assert (net.balance(net.bob.address), net.proposal(waiting)) == (before[0] - 1, before[1])  # only the fee of 1
    assert net.proposal(waiting)["status"] == gov.DEPOSIT_PERIOD
    assert net.run([net.tx(net.bob, tx.MsgDeposit(proposal=waiting, amount=MIN_DEPOSIT))])  # a block later it starts
    assert net.proposal(waiting)["status"] == gov.VOTING_PERIOD


@pytest.mark.parametrize("name", ["min_fee", "byte_fee"])
def test_a_fee_may_rise_at_most_tenfold_in_one_change(name):
    current = bank.Params(min_fee=5, byte_fee=7)
    bank.check_params_change(current, bank.Params(**{**vars(current), name: bank.MAX_FEE_RISE * getattr(current, name)}))
    with pytest.raises(ValueError, match=f"{name} may rise at most {bank.MAX_FEE_RISE}x"):
        bank.check_params_change(current, bank.Params(**{**vars(current), name: bank.MAX_FEE_RISE * getattr(current, name) + 1}))
    bank.check_params_change(current, bank.Params(**{**vars(current), name: 1}))  # lowering is always allowed


def test_a_proposal_raising_a_fee_too_far_is_refused_at_submission(net):
    current = live(net, bank)
    too_far = params_msg("bank", base=current, min_fee=bank.MAX_FEE_RISE * current.min_fee + 1)
    result = net.block([net.submit(net.alice, [too_far])]).tx_results[0]
    assert (result.codespace, result.code) == ("gov", gov.InvalidProposal.code)
    assert "min_fee may rise at most" in result.log, result.log
    assert net.view("/gov/proposals") == []
    within = params_msg("bank", base=current, min_fee=bank.MAX_FEE_RISE * current.min_fee)
    assert net.run([net.submit(net.alice, [within])])
