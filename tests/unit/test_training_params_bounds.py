"""Training params that would freeze a round cannot be set (issue 14 review, finding 2): a round holds its
validators' stake until it closes, and no proposal reaches a round already open."""

from __future__ import annotations

import pytest

from abci_app.modules import training


@pytest.mark.parametrize("field", ["submission_blocks", "verification_blocks", "reveal_blocks", "dispute_blocks", "merge_blocks",
                                   "trainer_unbonding_blocks"])
def test_a_window_beyond_the_round_limit_is_refused(field):
    training.Params(**{field: training.MAX_ROUND_BLOCKS // 8}).validate()  # well inside: accepted
    with pytest.raises(ValueError, match=f"at most {training.MAX_ROUND_BLOCKS}"):
        training.Params(**{field: training.MAX_ROUND_BLOCKS + 1}).validate()


def test_windows_that_are_each_allowed_but_sum_beyond_the_limit_are_refused():
    half = training.MAX_ROUND_BLOCKS // 2
    with pytest.raises(ValueError, match="a round's windows sum to"):
        training.Params(submission_blocks=half, verification_blocks=half, merge_blocks=half).validate()


CEILINGS = {"reward": training.MAX_REWARD, "check_fee": training.MAX_CHECK_FEE, "min_trainer_bond": training.MAX_TRAINER_BOND,
            "eval_prompts": training.MAX_EVAL_PROMPTS, "audit_heldout_windows": training.MAX_HELDOUT_WINDOWS,
            "max_state_bytes": training.MAX_STATE_BYTES, "fetch_seconds": training.MAX_FETCH_SECONDS}


@pytest.mark.parametrize("field, ceiling", sorted(CEILINGS.items()))
def test_money_and_work_fields_have_a_ceiling(field, ceiling):
    """review 14b, finding 5: no proposal mints without bound per submission or sets auditors work they cannot finish."""
    training.Params(**{field: ceiling}).validate()
    with pytest.raises(ValueError, match=f"training.params.{field} must be at most {ceiling}"):
        training.Params(**{field: ceiling + 1}).validate()
    with pytest.raises(ValueError, match=f"training.params.{field} must be at most"):
        training.Params(**{field: 2**63 - 1}).validate()


def test_the_merge_window_must_be_positive():
    training.Params(merge_blocks=1).validate()
    with pytest.raises(ValueError, match="merge_blocks must be positive"):
        training.Params(merge_blocks=0).validate()
