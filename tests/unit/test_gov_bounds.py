"""Bounds on what one passed proposal can do (reviews 14b F4, 14c F4 and F6): a params change multiplies a fee by
at most bank.MAX_FEE_RISE and halves free_bytes at most, a proposal changes a module's params once, and training's
checks cannot be loosened past their floors."""

from __future__ import annotations

import pytest

from abci_app.modules import bank, gov, training
from tests.unit.test_gov import live, net, params_msg  # noqa: F401 (net is a fixture)


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
    assert net.pages("/gov/proposals") == []
    within = params_msg("bank", base=current, min_fee=bank.MAX_FEE_RISE * current.min_fee)
    assert net.run([net.submit(net.alice, [within])])


def test_free_bytes_may_fall_at_most_by_half():
    current = bank.Params(free_bytes=2048)
    bank.check_params_change(current, bank.Params(free_bytes=1024))
    with pytest.raises(ValueError, match="free_bytes may fall at most by half"):
        bank.check_params_change(current, bank.Params(free_bytes=1023))


def test_a_proposal_changes_a_modules_params_once(net):
    """Chained sets (the second drafted against the first) would step around the per-change limits."""
    current = live(net, bank)
    first = bank.Params(min_fee=current.min_fee * bank.MAX_FEE_RISE, byte_fee=current.byte_fee, free_bytes=current.free_bytes)
    second = bank.Params(min_fee=first.min_fee * bank.MAX_FEE_RISE, byte_fee=current.byte_fee, free_bytes=current.free_bytes)
    chained = [params_msg("bank", base=current, min_fee=first.min_fee), params_msg("bank", base=first, min_fee=second.min_fee)]
    result = net.block([net.submit(net.alice, chained)]).tx_results[0]
    assert (result.codespace, result.code) == ("gov", gov.InvalidProposal.code)
    assert "changes bank's params at most once" in result.log, result.log
    assert net.pages("/gov/proposals") == []


LOOSENED = [
    ({"quorum_bps": training.MIN_CHANGED_QUORUM_BPS - 1}, "quorum_bps may not fall below"),
    ({"step_tolerance_ppm": training.MAX_CHANGED_STEP_TOLERANCE_PPM + 1}, "step_tolerance_ppm may not rise above"),
    ({"max_heldout_regression_ppm": training.MAX_CHANGED_REGRESSION_PPM + 1}, "max_heldout_regression_ppm may not rise above"),
    ({"audit_steps": training.MIN_CHANGED_AUDIT_STEPS - 1}, "audit_steps may not fall below 4"),
    *(({name: training.MAX_CHANGED_PENALTY_BPS + 1}, f"{name} may not rise above") for name in training._PENALTY_FIELDS),
]


@pytest.mark.parametrize("changes, error", LOOSENED)
def test_training_checks_cannot_be_loosened_past_their_floors(changes, error):
    current = training.Params()
    with pytest.raises(ValueError, match=error):
        training.check_params_change(current, training.Params(**{**vars(current), **changes}))
    (name, value), = changes.items()
    limit = value + 1 if "fall below" in error else value - 1
    training.check_params_change(current, training.Params(**{**vars(current), name: limit}))  # the floor itself is allowed


def test_a_genesis_outside_the_floors_may_keep_or_tighten_but_not_loosen():
    genesis = training.Params(quorum_bps=1, step_tolerance_ppm=10**6, audit_steps=1)  # a test net's
    training.check_params_change(genesis, genesis)
    training.check_params_change(genesis, training.Params(quorum_bps=2, step_tolerance_ppm=10**5, audit_steps=2))
    with pytest.raises(ValueError, match="step_tolerance_ppm"):
        training.check_params_change(genesis, training.Params(quorum_bps=1, step_tolerance_ppm=10**6 + 1, audit_steps=1))


def test_a_proposal_loosening_training_is_refused_at_submission(net):
    loose = params_msg("training", base=live(net, training), quorum_bps=1)
    result = net.block([net.submit(net.alice, [loose])]).tx_results[0]
    assert (result.codespace, result.code) == ("gov", gov.InvalidProposal.code) and "quorum_bps may not fall below" in result.log, result.log
