"""Staking rules, validator-set updates, slashing, jailing, rewards; supply invariant after every block."""

import json

import pytest

from abci_app import crypto, tx
from abci_app.modules import bank, staking
from tests.unit.conftest import Chain, fixed_key

PARAMS = {
    "min_self_bond": 100, "power_unit": 100, "unbonding_blocks": 3, "trainer_unbonding_blocks": 2, "jail_blocks": 5,
    "downtime_window": 5, "downtime_max_missed": 3, "downtime_slash_bps": 1000, "double_sign_slash_bps": 500,
    "double_sign_jail_blocks": 50, "max_validators": 10,
}


def cons_key(i: int) -> bytes:
    return crypto.PrivateKey(bytes([100 + i]) * 32).pubkey


class StakingChain(Chain):
    def block(self, txs, **kwargs):
        response = super().block(txs, **kwargs)
        check_invariants(self)
        return response


def check_invariants(chain: Chain) -> None:
    """supply = all balances; each pool holds exactly what staking says it holds."""
    state = chain.app.store.begin_block()
    balances = {crypto.bech32_encode("gc", k[len(b"bank/balance/"):]): int(v) for k, v in state.iter_prefix(b"bank/balance/")}
    assert sum(balances.values()) == bank.supply(state)
    assert balances.get(staking.BONDED_POOL, 0) == sum(v.tokens for v in staking.validators(state))
    assert balances.get(staking.UNBONDING_POOL, 0) == sum(u["amount"] for u in staking.unbondings(state))
    trainer_total = sum(int(v) for _, v in state.iter_prefix(staking.TRAINER_PREFIX))
    assert balances.get(staking.TRAINER_POOL, 0) == trainer_total
    for v in staking.validators(state):
        assert v.tokens == sum(a for _, a in staking.delegations_to(state, v.operator))


@pytest.fixture
def net(tmp_path):
    ops = [fixed_key(i) for i in range(1, 6)]  # ops[0..1] genesis validators; 2..4 plain accounts
    genesis_validators = [
        {"operator": ops[i].address, "pubkey": cons_key(i).hex(), "moniker": f"val{i}", "self_bond": 1_000} for i in range(2)
    ]
    chain = StakingChain(tmp_path / "app", {k.address: 10_000 for k in ops}, staking={"params": PARAMS, "validators": genesis_validators})
    chain.block([])
    chain.ops = ops
    yield chain
    chain.app.close()


def updates(response):
    return [(u.pub_key.ed25519, u.power) for u in response.validator_updates]


def validator(chain, op):
    return staking.get_validator(chain.app.store.begin_block(), op.address)


def codes(response):
    return [(r.codespace, r.code) for r in response.tx_results]


def test_genesis_validators_become_cometbfts_set(net):
    assert sorted((u.pub_key.ed25519, u.power) for u in net.init.validators) == sorted([(cons_key(0), 10), (cons_key(1), 10)])
    listed = json.loads(net.query("/staking/validators").value)
    assert [(v["moniker"], v["power"]) for v in sorted(listed, key=lambda v: v["moniker"])] == [("val0", 10), ("val1", 10)]


def test_create_validator_sends_a_power_update(net):
    op = net.ops[2]
    r = net.block([net.tx(op, tx.MsgCreateValidator(pubkey=cons_key(2), amount=500, moniker="new"))])
    assert codes(r) == [("", 0)]
    assert updates(r) == [(cons_key(2), 5)]
    assert net.balance(op.address) == 10_000 - 500 - 1
    assert validator(net, op).tokens == 500


@pytest.mark.parametrize(
    "msg, expected",
    [
        (tx.MsgCreateValidator(pubkey=b"\x01" * 31, amount=500, moniker="x"), ("staking", 4)),
        (tx.MsgCreateValidator(pubkey=cons_key(0), amount=500, moniker="x"), ("staking", 3)),
        (tx.MsgCreateValidator(pubkey=cons_key(3), amount=99, moniker="x"), ("staking", 5)),
        (tx.MsgCreateValidator(pubkey=cons_key(3), amount=50_000, moniker="x"), ("bank", 1)),
        (tx.MsgCreateValidator(pubkey=cons_key(3), amount=500, moniker=""), ("staking", 10)),
    ],
)
def test_create_validator_errors_change_nothing_but_the_fee(net, msg, expected):
    op = net.ops[2]
    r = net.block([net.tx(op, msg)])
    assert codes(r) == [expected]
    assert r.tx_results[0].log
    assert net.balance(op.address) == 10_000 - 1
    assert validator(net, op) is None
    assert updates(r) == []


def test_duplicate_validator(net):
    r = net.block([net.tx(net.ops[0], tx.MsgCreateValidator(pubkey=cons_key(3), amount=500, moniker="again"))])
    assert codes(r) == [("staking", 2)]


def test_delegate_and_undelegate_with_unbonding(net):
    val, d = net.ops[0], net.ops[3]
    r = net.block([net.tx(d, tx.MsgDelegate(validator=val.address, amount=300))])
    assert updates(r) == [(cons_key(0), 13)]
    r = net.block([net.tx(d, tx.MsgUndelegate(validator=val.address, amount=200))])
    assert updates(r) == [(cons_key(0), 11)]
    completion = net.height + PARAMS["unbonding_blocks"]
    assert net.balance(d.address) == 10_000 - 300 - 2
    pending = json.loads(net.query("/staking/unbondings", d.address).value)
    assert pending == [{"owner": d.address, "amount": 200, "kind": "delegation", "validator": val.address, "completion_height": completion}]
    while net.height < completion - 1:
        net.block([])
    assert net.balance(d.address) == 10_000 - 302
    net.block([])
    assert net.balance(d.address) == 10_000 - 302 + 200
    assert json.loads(net.query("/staking/delegations", d.address).value) == [{"validator": val.address, "amount": 100}]


def test_undelegate_errors(net):
    val, d = net.ops[0], net.ops[3]
    r = net.block([
        net.tx(d, tx.MsgUndelegate(validator=val.address, amount=1)),
        net.tx(d, tx.MsgDelegate(validator=net.ops[4].address, amount=1)),
        net.tx(d, tx.MsgDelegate(validator="gc1bogus", amount=1)),
        net.tx(d, tx.MsgDelegate(validator=val.address, amount=0)),
    ])
    assert codes(r) == [("staking", 6), ("staking", 1), ("staking", 1), ("staking", 9)]


def test_undelegating_everything_removes_the_validator(net):
    val = net.ops[1]
    r = net.block([net.tx(val, tx.MsgUndelegate(validator=val.address, amount=1_000))])
    assert updates(r) == [(cons_key(1), 0)]
    assert validator(net, val) is None
    # The consensus key is free again for a new validator.
    r = net.block([net.tx(net.ops[2], tx.MsgCreateValidator(pubkey=cons_key(1), amount=200, moniker="reuse"))])
    assert codes(r) == [("", 0)]


def test_edit_validator(net):
    r = net.block([net.tx(net.ops[0], tx.MsgEditValidator(moniker="renamed")), net.tx(net.ops[2], tx.MsgEditValidator(moniker="x"))])
    assert codes(r) == [("", 0), ("staking", 1)]
    assert validator(net, net.ops[0]).moniker == "renamed"


def test_downtime_jails_slashes_and_unjail_restores(net):
    val = net.ops[1]
    down, up = staking.consensus_address(cons_key(1)), staking.consensus_address(cons_key(0))
    votes = [(up, True), (down, False)]
    net.block([], votes=votes)
    r = net.block([net.tx(val, tx.MsgUnjail())], votes=votes)
    assert codes(r) == [("staking", 7)]  # not jailed yet
    r = net.block([], votes=votes)  # third miss within the window
    assert updates(r) == [(cons_key(1), 0)]
    jailed = validator(net, val)
    assert jailed.jailed and jailed.tokens == 900  # 10% slashed
    assert int(net.query("/bank/supply").value) < 2_000 + 5 * 10_000
    r = net.block([net.tx(val, tx.MsgUnjail())])
    assert codes(r) == [("staking", 8)]  # still jailed
    while net.height < jailed.jailed_until:
        net.block([])
    r = net.block([net.tx(val, tx.MsgUnjail())])
    assert codes(r) == [("", 0)]
    assert updates(r) == [(cons_key(1), 9)]


def test_signed_votes_leave_state_untouched(net):
    before = net.app.store.app_hash
    a, b = staking.consensus_address(cons_key(0)), staking.consensus_address(cons_key(1))
    assert net.block([], votes=[(a, True), (b, True)]).app_hash == before


def test_misses_outside_the_window_are_forgotten(net):
    down, up = staking.consensus_address(cons_key(1)), staking.consensus_address(cons_key(0))
    net.block([], votes=[(up, True), (down, False)])
    net.block([], votes=[(up, True), (down, False)])
    for _ in range(PARAMS["downtime_window"]):
        net.block([])
    net.block([], votes=[(up, True), (down, False)])
    assert not validator(net, net.ops[1]).jailed


def test_double_sign_slashes_and_jails(net):
    r = net.block([], misbehavior=[staking.consensus_address(cons_key(0))])
    v = validator(net, net.ops[0])
    assert v.tokens == 950 and v.jailed_until == net.height + PARAMS["double_sign_jail_blocks"]
    assert updates(r) == [(cons_key(0), 0)]
    types = [e.type for e in r.events]
    assert "slashed" in types and "jailed" in types


def test_fees_reward_the_proposers_delegators(net):
    val, d = net.ops[0], net.ops[3]
    proposer = staking.consensus_address(cons_key(0))
    net.block([net.tx(d, tx.MsgDelegate(validator=val.address, amount=1_000))], proposer=proposer)  # val: 1000 self + 1000 from d
    before_val, before_d = net.balance(val.address), net.balance(d.address)
    net.block([net.send_tx(net.ops[4], net.ops[2].address, 1, fee=11)], proposer=proposer)
    assert net.balance(d.address) - before_d == 11 * 1000 // 2000
    assert net.balance(val.address) - before_val == 11 - 11 * 1000 // 2000
    assert net.balance(bank.FEE_COLLECTOR) == 0


def test_fees_wait_when_the_proposer_is_unknown(net):
    net.block([net.send_tx(net.ops[4], net.ops[2].address, 1, fee=7)], proposer=b"\x00" * 20)
    assert net.balance(bank.FEE_COLLECTOR) == 7


def test_trainer_bonds(net):
    t = net.ops[4]
    r = net.block([net.tx(t, tx.MsgBondTrainer(amount=700)), net.tx(t, tx.MsgUnbondTrainer(amount=800)), net.tx(t, tx.MsgBondTrainer(amount=0))])
    assert codes(r) == [("", 0), ("staking", 11), ("staking", 9)]
    assert int(net.query("/staking/trainer_bond", t.address).value) == 700
    net.block([net.tx(t, tx.MsgUnbondTrainer(amount=200))])
    balance = net.balance(t.address)
    for _ in range(PARAMS["trainer_unbonding_blocks"]):
        net.block([])
    assert net.balance(t.address) == balance + 200


def test_slash_trainer_for_the_training_module(net):
    from abci_app.context import Context

    t = net.ops[4]
    net.block([net.tx(t, tx.MsgBondTrainer(amount=1_000))])
    state = net.app.store.begin_block()
    ctx = Context(state, "test-chain", net.height + 1, 0)
    assert staking.slash_trainer(ctx, t.address, 2_500, recipient=net.ops[0].address) == 250
    assert staking.trainer_bond(state, t.address) == 750
    assert staking.slash_trainer(ctx, t.address, 1_000) == 75  # burned
    assert [e.type for e in ctx.events].count("trainer_slashed") == 2


def test_max_validators_keeps_the_top_powers(tmp_path):
    ops = [fixed_key(i) for i in range(1, 4)]
    vals = [{"operator": ops[i].address, "pubkey": cons_key(i).hex(), "self_bond": 100 * (i + 1)} for i in range(3)]
    chain = StakingChain(tmp_path / "app", {}, staking={"params": PARAMS | {"max_validators": 2}, "validators": vals})
    assert sorted((u.pub_key.ed25519, u.power) for u in chain.init.validators) == sorted([(cons_key(1), 2), (cons_key(2), 3)])
    chain.app.close()


@pytest.mark.parametrize("bad", [{"params": {"power_unit": 0}}, {"params": {"downtime_slash_bps": 20_000}}, {"params": {"jail_blocks": -1}}])
def test_bad_staking_genesis(tmp_path, bad):
    with pytest.raises(ValueError):
        Chain(tmp_path / "app", {}, staking=bad)
