"""Staking params that validate yet hurt are refused (review 14b, finding 2): a self-bond floor that shuts
operators out until gov itself loses quorum, unbounded block rewards, and a downtime rule a proposer can forge."""

from __future__ import annotations

import pytest

from abci_app.modules import gov, staking
from tests.unit.test_gov import BOND, CHAIN_STAKING, SUBMIT_FEE, net, params_msg  # noqa: F401 (net is a fixture)

BASE = staking.Params(**CHAIN_STAKING)
UNIT = CHAIN_STAKING["power_unit"]

BAD = [
    ({"min_self_bond": staking.MAX_SELF_BOND_UNITS * UNIT + 1}, "min_self_bond is at most"),
    ({"block_reward": staking.MAX_BLOCK_REWARD + 1}, "block_reward is at most"),
    ({"downtime_slash_bps": staking.MAX_DOWNTIME_SLASH_BPS + 1}, "downtime_slash_bps is at most"),
    ({"downtime_window": 100, "downtime_max_missed": 49}, "at least half of downtime_window"),
]


@pytest.mark.parametrize("changes, error", BAD)
def test_validate_refuses_each_bad_set_and_takes_its_limit(changes, error):
    with pytest.raises(ValueError, match=error):
        staking.Params(**CHAIN_STAKING | changes).validate()
    limits = {"min_self_bond": staking.MAX_SELF_BOND_UNITS * UNIT, "block_reward": staking.MAX_BLOCK_REWARD,
              "downtime_slash_bps": staking.MAX_DOWNTIME_SLASH_BPS, "downtime_max_missed": 50}
    name = next(n for n in changes if n in limits)
    staking.Params(**CHAIN_STAKING | changes | {name: limits[name]}).validate()  # the limit itself is allowed


def test_the_defaults_validate():
    staking.Params().validate()


@pytest.mark.parametrize("changes, error", BAD)
def test_a_proposal_carrying_a_bad_set_is_refused_at_submission(net, changes, error):
    before = net.balance(net.alice.address)
    result = net.block([net.submit(net.alice, [params_msg("staking", base=BASE, **changes)])]).tx_results[0]
    assert (result.codespace, result.code) == ("gov", gov.InvalidProposal.code)
    assert "message 0 (update_params) failed (gov code 8)" in result.log and error in result.log, result.log
    assert net.balance(net.alice.address) == before - SUBMIT_FEE  # only the fee: no deposit, no proposal
    assert net.pages("/gov/proposals") == []


def test_min_self_bond_rises_only_to_what_two_thirds_of_the_power_has_self_bonded(net):
    """v0..v2 have self-bonded BOND each; v0 adds as much again and now holds 25 of the 50 active power."""
    net.run([net.tx(net.vals[0], staking.tx_pb2.MsgDelegate(validator=net.vals[0].address, amount=BOND))])
    state = net.app.store.begin_block()
    powers = staking.active_powers(state)
    assert powers[net.vals[0].address] == 25 and sum(powers.values()) == 50
    staking.check_params_change(BASE, staking.Params(**CHAIN_STAKING | {"min_self_bond": BOND}), state)  # everyone keeps it
    with pytest.raises(ValueError, match="leaves 25 of 50 power"):  # only v0: 25 of 50 is under 2/3
        staking.check_params_change(BASE, staking.Params(**CHAIN_STAKING | {"min_self_bond": BOND + 1}), state)
    # Lowering the floor is always allowed, and without the state only the stateless rules apply.
    lower = staking.Params(**CHAIN_STAKING | {"min_self_bond": 1})
    staking.check_params_change(staking.Params(**CHAIN_STAKING | {"min_self_bond": 2 * BOND}), lower, state)
    staking.check_params_change(BASE, staking.Params(**CHAIN_STAKING | {"min_self_bond": BOND + 1}))
