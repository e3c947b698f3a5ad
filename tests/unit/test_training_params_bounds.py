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
