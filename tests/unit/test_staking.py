"""Staking rules, validator-set updates, slashing, jailing, rewards; supply invariant after every block."""

import json

import pytest

from abci_app import crypto, tx
from abci_app.modules import bank, staking
from tests.unit.conftest import CHAIN_ID, Chain, fixed_key

PARAMS = {
    "min_self_bond": 100, "power_unit": 100, "unbonding_blocks": 3, "jail_blocks": 5,
    "downtime_window": 5, "downtime_max_missed": 3, "downtime_slash_bps": 1000, "double_sign_slash_bps": 500,
    "double_sign_jail_blocks": 50, "max_validators": 10,
}


def cons_priv(i: int) -> crypto.PrivateKey:
    """A node's CometBFT consensus key."""
    return crypto.PrivateKey(bytes([100 + i]) * 32)


def cons_key(i: int) -> bytes:
    return cons_priv(i).pubkey


def create_msg(operator: crypto.PrivateKey, i: int, amount: int, moniker: str, chain_id: str = CHAIN_ID) -> tx.MsgCreateValidator:
    """MsgCreateValidator for consensus key i, with its proof of possession for `operator`."""
    pop = cons_priv(i).sign(staking.pop_message(chain_id, operator.address))
    return tx.MsgCreateValidator(pubkey=cons_key(i), amount=amount, moniker=moniker, pubkey_signature=pop)


class StakingChain(Chain):
    def block(self, txs, **kwargs):
        response = super().block(txs, **kwargs)
        check_invariants(self)
        return response


def check_invariants(chain: Chain) -> None:
    """supply = all balances; each pool holds exactly what staking says it holds; CometBFT's set is staking's."""
    state = chain.app.store.begin_block()
    balances = {crypto.bech32_encode("gc", k[len(b"bank/balance/"):]): int(v) for k, v in state.iter_prefix(b"bank/balance/")}
    assert sum(balances.values()) == bank.supply(state)
    everyone = list(staking.validators(state))
    assert balances.get(staking.BONDED_POOL, 0) == sum(v.tokens for v in everyone)
    pools = {k[len(staking.LEAVING_PREFIX):]: json.loads(v) for k, v in state.iter_prefix(staking.LEAVING_PREFIX)}
    assert balances.get(staking.UNBONDING_POOL, 0) == sum(p["tokens"] for p in pools.values())
    entry_shares: dict[bytes, int] = {}
    for _, raw in state.iter_prefix(staking.UNBONDING_PREFIX):
        entry = json.loads(raw)
        pool_key = crypto.address_raw(entry["validator"]) + entry["left_height"].to_bytes(8, "big")
        entry_shares[pool_key] = entry_shares.get(pool_key, 0) + entry["shares"]
    # Every leaving pool is exactly its entries' shares (none is left behind), worth at most one token a share.
    assert entry_shares == {k: p["shares"] for k, p in pools.items()}
    assert all(0 <= p["tokens"] <= p["shares"] for p in pools.values())
    assert balances.get(staking.DISTRIBUTION, 0) == sum(v.rewards_outstanding for v in everyone)
    for v in everyone:
        records = [json.loads(raw) for _, raw in state.iter_prefix(staking.DELEGATION_PREFIX + crypto.address_raw(v.operator))]
        assert v.shares == sum(r["shares"] for r in records) and v.tokens <= v.shares
        values = sum(a for _, a in staking.delegations_to(state, v.operator))
        assert values <= v.tokens <= values + len(records)
    by_validator = {k[len(staking.DELEGATION_PREFIX):] for k, _ in state.iter_prefix(staking.DELEGATION_PREFIX)}
    by_delegator = {k[-20:] + k[-40:-20] for k, _ in state.iter_prefix(staking.DELEGATOR_PREFIX)}
    assert by_validator == by_delegator
    reported = {k[len(staking.POWER_PREFIX):]: int(p) for k, p in state.iter_prefix(staking.POWER_PREFIX)}
    active = {bytes.fromhex(v.pubkey): p for v, p in staking.active_set(state)}
    assert reported == active or not active
    assert all(p > 0 for p in reported.values())


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
    listed = net.pages("/staking/validators")
    assert [(v["moniker"], v["power"]) for v in sorted(listed, key=lambda v: v["moniker"])] == [("val0", 10), ("val1", 10)]


def test_create_validator_sends_a_power_update(net):
    op = net.ops[2]
    r = net.block([net.tx(op, create_msg(op, 2, 500, "new"))])
    assert codes(r) == [("", 0)]
    assert updates(r) == [(cons_key(2), 5)]
    assert net.balance(op.address) == 10_000 - 500 - 1
    assert validator(net, op).tokens == 500


@pytest.mark.parametrize(
    "msg, expected",
    [
        (tx.MsgCreateValidator(pubkey=b"\x01" * 31, amount=500, moniker="x"), ("staking", 4)),
        (create_msg(fixed_key(3), 0, 500, "x"), ("staking", 3)),
        (create_msg(fixed_key(3), 3, 99, "x"), ("staking", 5)),
        (create_msg(fixed_key(3), 3, 50_000, "x"), ("bank", 1)),
        (create_msg(fixed_key(3), 3, 500, ""), ("staking", 10)),
        (create_msg(fixed_key(3), 3, 500, "caf\u00e9"), ("staking", 10)),
        (tx.MsgCreateValidator(pubkey=cons_key(3), amount=500, moniker="x"), ("staking", 12)),
        (create_msg(fixed_key(4), 3, 500, "x"), ("staking", 12)),
        (create_msg(fixed_key(3), 3, 500, "x", chain_id="other-chain"), ("staking", 12)),
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
    r = net.block([net.tx(net.ops[0], create_msg(net.ops[0], 3, 500, "again"))])
    assert codes(r) == [("staking", 2)]


def test_delegate_and_undelegate_with_unbonding(net):
    val, d = net.ops[0], net.ops[3]
    r = net.block([net.tx(d, tx.MsgDelegate(validator=val.address, amount=300))])
    assert updates(r) == [(cons_key(0), 13)]
    r = net.block([net.tx(d, tx.MsgUndelegate(validator=val.address, amount=200))])
    assert updates(r) == [(cons_key(0), 11)]
    completion = net.height + PARAMS["unbonding_blocks"]
    assert net.balance(d.address) == 10_000 - 300 - 2
    pending = net.pages("/staking/unbondings", d.address)
    assert pending == [{"owner": d.address, "amount": 200, "kind": "delegation", "validator": val.address, "completion_height": completion}]
    while net.height < completion - 1:
        net.block([])
    assert net.balance(d.address) == 10_000 - 302
    net.block([])
    assert net.balance(d.address) == 10_000 - 302 + 200
    assert net.pages("/staking/delegations", d.address) == [{"validator": val.address, "amount": 100, "shares": 100, "rewards": 0}]


def test_undelegate_errors(net):
    val, d = net.ops[0], net.ops[3]
    r = net.block([
        net.tx(d, tx.MsgUndelegate(validator=val.address, amount=1)),
        net.tx(d, tx.MsgDelegate(validator=net.ops[4].address, amount=1)),
        net.tx(d, tx.MsgDelegate(validator="gc1bogus", amount=1)),
        net.tx(d, tx.MsgDelegate(validator=val.address, amount=0)),
    ])
    assert codes(r) == [("staking", 6), ("staking", 1), ("staking", 1), ("staking", 9)]


def test_undelegating_everything_empties_the_validator(net):
    val = net.ops[1]
    r = net.block([net.tx(val, tx.MsgUndelegate(validator=val.address, amount=1_000))])
    assert updates(r) == [(cons_key(1), 0)]
    left = validator(net, val)
    assert (left.tokens, left.shares, left.jailed_until) == (0, 0, net.height)  # kept, with power 0
    # The consensus key stays bound to its operator; the operator may come back with it.
    r = net.block([net.tx(net.ops[2], create_msg(net.ops[2], 1, 200, "reuse")), net.tx(val, create_msg(val, 1, 200, "back"))])
    assert codes(r) == [("staking", 3), ("", 0)]
    assert updates(r) == [(cons_key(1), 2)]


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
    net.block([net.tx(d, tx.MsgDelegate(validator=val.address, amount=1_000))])  # val: 1000 self + 1000 from d; its fee waits
    before_val, before_d = net.balance(val.address), net.balance(d.address)
    net.block([net.send_tx(net.ops[4], net.ops[2].address, 1, fee=12)], proposer=proposer)
    assert net.balance(bank.FEE_COLLECTOR) == 0 and net.balance(staking.DISTRIBUTION) == 13
    assert net.pages("/staking/delegations", d.address)[0]["rewards"] == 13 * 1000 // 2000
    r = net.block([net.tx(d, tx.MsgWithdrawRewards(validator=val.address)), net.tx(val, tx.MsgWithdrawRewards(validator=val.address))])
    assert codes(r) == [("", 0), ("", 0)]
    assert net.balance(d.address) - before_d == 13 * 1000 // 2000 - 1
    assert net.balance(val.address) - before_val == 13 * 1000 // 2000 - 1
    assert net.balance(staking.DISTRIBUTION) == 1  # the rounding remainder waits for the validator's last leaver
    r = net.block([net.tx(net.ops[4], tx.MsgWithdrawRewards(validator=val.address))])
    assert codes(r) == [("staking", 15)]


def test_a_slash_lowers_every_delegation_in_proportion(net):
    val, d = net.ops[0], net.ops[3]
    net.block([net.tx(d, tx.MsgDelegate(validator=val.address, amount=1_000))])
    net.block([], misbehavior=[staking.consensus_address(cons_key(0))])  # 5% of 2000 tokens, one write
    assert (validator(net, val).tokens, validator(net, val).shares) == (1_900, 2_000)
    listed = net.pages("/staking/delegations", d.address)
    assert [(e["amount"], e["shares"]) for e in listed] == [(950, 1_000)]
    r = net.block([net.tx(d, tx.MsgUndelegate(validator=val.address, amount=951)), net.tx(d, tx.MsgUndelegate(validator=val.address, amount=950))])
    assert codes(r) == [("staking", 6), ("", 0)]
    assert staking.delegation(net.app.store.begin_block(), val.address, val.address) == 950


def test_fees_wait_when_the_proposer_is_unknown(net):
    net.block([net.send_tx(net.ops[4], net.ops[2].address, 1, fee=7)], proposer=b"\x00" * 20)
    assert net.balance(bank.FEE_COLLECTOR) == 7


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
