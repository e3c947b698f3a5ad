"""Issue 11, staking: attacks with some stake and an RPC endpoint, each a regression test.

The chain here replays every block's validator updates the way CometBFT
applies them, and fails a block that CometBFT would refuse (two updates for
one pubkey, removing a key it does not hold) or whose resulting set differs
from staking's bonded, unjailed set by pubkey.
"""

from __future__ import annotations

import json

import pytest

from abci_app import crypto, tx
from abci_app.context import Context
from abci_app.modules import staking
from abci_app.state import overlay
from tests.unit.conftest import CHAIN_ID, Chain, fixed_key
from tests.unit.test_staking import PARAMS, check_invariants, cons_key, create_msg

FUNDS = 10_000
BOND = 1_000


def cons_addr(i: int) -> bytes:
    return crypto.address_bytes(cons_key(i))


def create(operator: crypto.PrivateKey, i: int, amount: int = BOND, moniker: str = "node", signer: crypto.PrivateKey | None = None):
    """MsgCreateValidator for consensus key i, with a proof of possession signed by `signer` (default: key i)."""
    msg = create_msg(operator, i, amount, moniker)
    if signer is not None:
        msg.pubkey_signature = signer.sign(staking.pop_message(CHAIN_ID, operator.address))
    return msg


def undelegate(validator: crypto.PrivateKey, amount: int):
    return tx.MsgUndelegate(validator=validator.address, amount=amount)


def delegate(validator: crypto.PrivateKey, amount: int):
    return tx.MsgDelegate(validator=validator.address, amount=amount)


class Net(Chain):
    """A Chain that keeps CometBFT's view of the validator set and checks every block against it."""

    def __init__(self, home, n_validators: int = 2, params: dict | None = None):
        self.ops = [fixed_key(i) for i in range(1, 7)]  # ops[:n_validators] are genesis validators
        genesis = [{"operator": self.ops[i].address, "pubkey": cons_key(i).hex(), "moniker": f"val{i}", "self_bond": BOND} for i in range(n_validators)]
        super().__init__(home, {k.address: FUNDS for k in self.ops}, staking={"params": PARAMS | (params or {}), "validators": genesis})

    def block(self, txs, **kwargs):
        response = super().block(txs, **kwargs)
        if self.height == 1:  # the genesis block, inside __init__
            self.cometbft = {u.pub_key.ed25519: u.power for u in self.init.validators}
        keys = [u.pub_key.ed25519 for u in response.validator_updates]
        assert len(keys) == len(set(keys)), f"CometBFT refuses duplicate updates for one pubkey: {keys}"
        for update in response.validator_updates:
            if update.power == 0:
                assert update.pub_key.ed25519 in self.cometbft, "CometBFT refuses to remove a validator it does not hold"
                del self.cometbft[update.pub_key.ed25519]
            else:
                self.cometbft[update.pub_key.ed25519] = update.power
        assert self.cometbft, "CometBFT halts on an empty validator set"
        bonded = {bytes.fromhex(v["pubkey"]): v["power"] for v in self.pages("/staking/validators") if v["power"] > 0}
        # With every validator jailed, staking keeps CometBFT's last set rather than send an empty one (a halt).
        assert self.cometbft == bonded or (not bonded and not response.validator_updates), "CometBFT's set differs from staking's bonded set"
        check_invariants(self)  # supply, pools, shares, rewards
        return response

    def validator(self, op) -> dict | None:
        raw = self.query("/staking/validator", op.address).value
        return json.loads(raw) if raw else None

    def ctx(self) -> Context:
        """A context over the next block's state, as a module hook would see it."""
        return Context(self.app.store.begin_block(), CHAIN_ID, self.height + 1, 0)


@pytest.fixture
def net(tmp_path):
    chain = Net(tmp_path / "app")
    yield chain
    chain.app.close()


def codes(response):
    return [(r.codespace, r.code) for r in response.tx_results]


def updates(response):
    return sorted((u.pub_key.ed25519, u.power) for u in response.validator_updates)


# --- defect 1: the validator set is keyed by consensus pubkey -----------------------


def test_exit_and_recreate_with_a_new_key_removes_the_old_key(net):
    """issue 11 defect 1: exit + create with a new key in one block must not leave the old key's power in CometBFT."""
    val = net.ops[1]
    r = net.block([net.tx(val, undelegate(val, BOND)), net.tx(val, create(val, 2, 500))])
    assert codes(r) == [("", 0), ("", 0)]
    assert updates(r) == sorted([(cons_key(1), 0), (cons_key(2), 5)])
    assert cons_key(1) not in net.cometbft


def test_key_of_an_exiting_operator_cannot_be_claimed_in_the_same_block(net):
    """issue 11 defect 1: A exits, B names A's key in the same block: one update for that key, never two."""
    a, b = net.ops[1], net.ops[2]
    r = net.block([net.tx(a, undelegate(a, BOND)), net.tx(b, create(b, 1, 500))])
    assert codes(r)[0] == ("", 0) and codes(r)[1] != ("", 0)
    assert updates(r) == [(cons_key(1), 0)]


def test_two_operators_naming_one_new_key_in_one_block(net):
    """issue 11 defect 1: the second claim of a pubkey is refused; one update."""
    r = net.block([net.tx(net.ops[2], create(net.ops[2], 3, 500)), net.tx(net.ops[3], create(net.ops[3], 3, 700))])
    assert codes(r) == [("", 0), ("staking", 3)]
    assert updates(r) == [(cons_key(3), 5)]


def test_exit_and_recreate_with_the_same_key_in_one_block(net):
    """issue 11 defect 1: one update for the key, with the new power."""
    val = net.ops[1]
    r = net.block([net.tx(val, undelegate(val, BOND)), net.tx(val, create(val, 1, 300))])
    assert codes(r) == [("", 0), ("", 0)]
    assert updates(r) == [(cons_key(1), 3)]


# --- defect 2: the operator's self-bond and the proposer reward -----------------------


def test_operator_exit_leaves_power_0_and_its_blocks_still_pay(net):
    """issue 11 defect 2: an operator undelegates its whole self-bond while a delegator stays: the validator
    has power 0, and a fee-paying block it still proposes does not halt the chain (no transfer of 0)."""
    val, d = net.ops[1], net.ops[3]
    net.block([net.tx(d, delegate(val, 500))])
    r = net.block([net.tx(val, undelegate(val, BOND))])
    assert codes(r) == [("", 0)]
    assert updates(r) == [(cons_key(1), 0)]  # d's 500 alone gives no power: the validator has no operator bond
    for _ in range(3):  # CometBFT may still let it propose for a couple of blocks
        r = net.block([net.send_tx(net.ops[4], net.ops[5].address, 1, fee=7)], proposer=cons_addr(1))
        assert codes(r) == [("", 0)]


def test_operator_keeps_min_self_bond(net):
    """issue 11 defect 2: min_self_bond holds on undelegate too: keep it, or leave entirely."""
    val, d = net.ops[1], net.ops[3]
    net.block([net.tx(d, delegate(val, 500))])
    r = net.block([net.tx(val, undelegate(val, BOND - 50)), net.tx(val, undelegate(val, BOND - PARAMS["min_self_bond"]))])
    assert codes(r) == [("staking", 5), ("", 0)]


# --- defect 9: jail escape --------------------------------------------------------------


def test_jailed_validator_cannot_escape_by_exit_and_recreate(net):
    """issue 11 defect 9: a jailed operator that undelegates everything and re-creates stays jailed."""
    val = net.ops[1]
    r = net.block([], misbehavior=[cons_addr(1)])
    assert updates(r) == [(cons_key(1), 0)]
    bonded = net.validator(val)["tokens"]
    r = net.block([net.tx(val, undelegate(val, bonded)), net.tx(val, create(val, 1, 2_000))])
    assert updates(r) == []
    assert net.validator(val)["jailed_until"] > net.height
    r = net.block([net.tx(val, create(val, 2, 2_000)), net.tx(val, tx.MsgUnjail())])
    assert cons_key(1) not in net.cometbft and cons_key(2) not in net.cometbft
    assert updates(r) == []


# --- defect 12: no walk over delegations or the whole unbonding queue ---------------------


@pytest.fixture
def reads(monkeypatch):
    """Counts the entries every iter_prefix call yields, per prefix."""
    counted: dict[bytes, int] = {}
    original = overlay.Overlay.iter_prefix

    def counting(self, prefix, after=b""):
        for item in original(self, prefix, after):
            counted[prefix] = counted.get(prefix, 0) + 1
            yield item

    monkeypatch.setattr(overlay.Overlay, "iter_prefix", counting)
    return counted


def test_rewards_and_slashes_do_not_walk_delegations(net, reads):
    """issue 11 defect 12: a proposer reward and a stake burn cost the same with 1 or 40 delegators."""
    val = net.ops[0]
    net.block([net.tx(d, delegate(val, 100 + i)) for i, d in enumerate(net.ops[2:]) for _ in range(10)])
    reads.clear()
    Chain.block(net, [net.send_tx(net.ops[5], net.ops[4].address, 1, fee=13)], proposer=cons_addr(0))  # unchecked: count the block only
    ctx = net.ctx()
    staking.penalize(ctx, val.address, 1_000, "training_wrong", since_height=0)
    staking.slash_validator(ctx, staking.get_validator(ctx.state, val.address), 500, 5, "double_sign", infraction_height=0)
    delegation_prefix = staking.DELEGATION_PREFIX
    assert sum(n for prefix, n in reads.items() if prefix.startswith(delegation_prefix)) == 0


def test_completing_unbondings_reads_only_due_entries(net, reads):
    """issue 11 defect 12: end_block reads the due unbonding entries and one more, not the whole queue."""
    val, d = net.ops[0], net.ops[3]
    net.block([net.tx(d, delegate(val, 1_000))])
    net.block([net.tx(d, undelegate(val, 1))])  # due first
    first_due = net.height + PARAMS["unbonding_blocks"]
    net.block([net.tx(d, undelegate(val, 1)) for _ in range(40)])  # due one block later
    while net.height < first_due - 1:
        net.block([])
    reads.clear()
    Chain.block(net, [])  # the first entry completes here (unchecked: count the block only)
    assert reads.get(staking.UNBONDING_PREFIX, 0) <= 2
    assert len(net.pages("/staking/unbondings", d.address)) == 40


def test_rewards_settle_exactly_and_the_last_leaver_takes_the_dust(net):
    """issue 11 defect 12: rewards by a per-share index: nothing minted or lost, the distribution account empties."""
    val, ds = net.ops[0], net.ops[2:5]
    net.block([net.tx(d, delegate(val, 333 + 111 * i)) for i, d in enumerate(ds)])
    for fee in (7, 11, 13):
        net.block([net.send_tx(net.ops[5], net.ops[1].address, 1, fee=fee)], proposer=cons_addr(0))
        net.block([net.tx(ds[fee % 3], tx.MsgWithdrawRewards(validator=val.address))])
    net.block([net.tx(d, undelegate(val, net.pages("/staking/delegations", d.address)[0]["amount"])) for d in ds])
    net.block([net.send_tx(net.ops[5], net.ops[1].address, 1, fee=5)], proposer=cons_addr(0))
    assert codes(net.block([net.tx(val, undelegate(val, BOND))])) == [("", 0)]
    assert net.balance(staking.DISTRIBUTION) == 0
    left = net.validator(val)
    assert (left["tokens"], left["shares"], left["rewards_outstanding"]) == (0, 0, 0)


def test_stored_fields_are_bounded(net):
    """issue 11 defect 12: monikers are at most 64 characters, on create and on edit."""
    r = net.block([net.tx(net.ops[2], create(net.ops[2], 2, 500, "x" * 65)), net.tx(net.ops[0], tx.MsgEditValidator(moniker="y" * 65))])
    assert codes(r) == [("staking", 10), ("staking", 10)]


# --- defect 8: no Unicode database in consensus ---------------------------------------------


@pytest.mark.parametrize("moniker", ["caf\u00e9", "\u00a0", "tab\there", "\u4e2d\u6587", "del\x7f"])
def test_moniker_is_printable_ascii(net, moniker):
    """issue 11 defect 8: the moniker rule is printable ASCII, not str.isprintable() (which changes between Pythons)."""
    r = net.block([net.tx(net.ops[2], create(net.ops[2], 2, 500, moniker)), net.tx(net.ops[0], tx.MsgEditValidator(moniker=moniker))])
    assert codes(r) == [("staking", 10), ("staking", 10)]


# --- defect 14: proof of possession, the last validator, a 100% slash -------------------------


def test_consensus_key_needs_proof_of_possession(net):
    """issue 11 defect 14: an attacker who saw a node's pubkey cannot claim it first."""
    victim, attacker = net.ops[2], net.ops[3]
    forged = create(attacker, 2, 500, signer=fixed_key(9))
    replayed = create(victim, 2, 500)  # the victim's proof names the victim, not the attacker
    replayed_pop = getattr(replayed, "pubkey_signature", b"")
    stolen = tx.MsgCreateValidator(pubkey=cons_key(2), amount=500, moniker="mine")
    if replayed_pop:
        stolen.pubkey_signature = replayed_pop
    r = net.block([net.tx(attacker, forged), net.tx(attacker, stolen), net.tx(victim, create(victim, 2, 500))])
    assert codes(r) == [("staking", 12), ("staking", 12), ("", 0)]
    assert updates(r) == [(cons_key(2), 5)]


def test_the_last_validator_cannot_exit(tmp_path):
    """issue 11 defect 14: the only validator's exit would leave CometBFT with no power (a halt)."""
    net = Net(tmp_path / "app", n_validators=1)
    val, d = net.ops[0], net.ops[3]
    net.block([net.tx(d, delegate(val, 500))])
    r = net.block([net.tx(val, undelegate(val, BOND)), net.tx(val, undelegate(val, BOND - 50))])
    assert codes(r) == [("staking", 14), ("staking", 5)]
    assert codes(net.block([net.tx(d, undelegate(val, 500))])) == [("", 0)]  # leaving power behind is fine
    net.app.close()


def test_a_full_slash_divides_nothing_by_zero(tmp_path):
    """issue 11 defect 14: double_sign_slash_bps = 10000 wipes a validator; every later path stays total."""
    net = Net(tmp_path / "app", n_validators=3, params={"double_sign_slash_bps": 10_000})
    val, d = net.ops[1], net.ops[3]
    net.block([net.tx(d, delegate(val, 500))])
    r = net.block([], misbehavior=[cons_addr(1)])
    assert updates(r) == [(cons_key(1), 0)]
    assert net.validator(val)["tokens"] == 0
    r = net.block([net.tx(d, delegate(val, 500)), net.tx(d, undelegate(val, 1)), net.tx(val, undelegate(val, 1)), net.tx(val, tx.MsgUnjail())],
                  proposer=cons_addr(1))
    assert all(code != 0 for _, code in codes(r))
    staking.penalize(net.ctx(), val.address, 10_000, "training_wrong", since_height=0)
    for _ in range(3):
        net.block([net.send_tx(net.ops[5], net.ops[4].address, 1, fee=3)], proposer=cons_addr(1), votes=[(cons_addr(1), False)])
    net.app.close()


@pytest.mark.parametrize("bad", [
    {"min_self_bond": 0}, {"max_validators": 0}, {"max_validators": 1_000_000}, {"downtime_max_missed": 0},
    {"unbonding_blocks": 2**70}, {"downtime_slash_bps": 10_001}, {"power_unit": True},
])
def test_params_that_break_invariants_are_refused(tmp_path, bad):
    """issue 11 defect 14: Params.validate refuses values that would divide by zero, overflow a key or break a rule."""
    with pytest.raises(ValueError):
        Chain(tmp_path / "app", {}, staking={"params": PARAMS | bad})


# --- hold_stake: what the training module keeps slashable while a round is open -------------------


def test_hold_stake_through_blocks(tmp_path, monkeypatch):
    """hold_stake: undelegation from a held validator completes at until + 1 and penalize burns its share."""
    until = 20
    holds: list[int] = []
    original = staking.end_block

    def end_block(ctx):
        if ctx.height == 3:
            staking.hold_stake(ctx, [fixed_key(1).address], until)
            holds.append(ctx.height)
        if ctx.height == 8:
            staking.penalize(ctx, fixed_key(1).address, 5_000, "training_wrong", since_height=4)
        original(ctx)

    monkeypatch.setattr(staking, "end_block", end_block)
    net = Net(tmp_path / "app")
    val, d, early = net.ops[0], net.ops[3], net.ops[4]
    net.block([net.tx(d, delegate(val, 1_000)), net.tx(early, delegate(val, 1_000))])  # height 2
    net.block([net.tx(early, undelegate(val, 1_000))])  # height 3: before the hold starts (end of this block)
    net.block([net.tx(d, undelegate(val, 600))])  # height 4: held
    assert holds == [3]
    pending = {u["owner"]: u for u in net.pages("/staking/unbondings")}
    assert pending[early.address]["completion_height"] == 3 + PARAMS["unbonding_blocks"]
    assert pending[d.address]["completion_height"] == until + 1
    while net.height < 8:
        net.block([])
    pending = {u["owner"]: u for u in net.pages("/staking/unbondings")}
    assert pending[d.address]["amount"] == 300  # half burned with the bonded stake
    assert net.validator(val)["tokens"] == (BOND + 1_000 + 1_000 - 1_000 - 600) // 2
    before = net.balance(d.address)
    while net.height < until:
        net.block([])
    assert net.balance(d.address) == before
    net.block([])
    assert net.balance(d.address) == before + 300
    state = net.app.store.begin_block()
    assert list(state.iter_prefix(staking.LEAVING_PREFIX)) == []
    net.app.close()


def test_hold_ends_and_later_leavers_are_not_held(tmp_path, monkeypatch):
    """A hold lasts until its height: later undelegations unbond normally, a later round's penalty leaves them alone."""
    original = staking.end_block
    burned: list[int] = []

    def end_block(ctx):
        if ctx.height == 2:
            staking.hold_stake(ctx, [fixed_key(1).address], 6)
        if ctx.height == 8:
            burned.append(staking.penalize(ctx, fixed_key(1).address, 10_000, "training_wrong", since_height=8))
        original(ctx)

    monkeypatch.setattr(staking, "end_block", end_block)
    net = Net(tmp_path / "app", n_validators=2, params={"unbonding_blocks": 3})
    val, d = net.ops[0], net.ops[3]
    net.block([net.tx(d, delegate(val, 1_000))])  # height 2: the hold starts at its end
    net.block([net.tx(d, undelegate(val, 100))])  # height 3: held until 6, completes at 7 (not 3 + 3)
    for _ in range(3):
        net.block([])
    net.block([net.tx(d, undelegate(val, 100))])  # height 7: the hold is over, completes at 7 + 3
    pending = {u["completion_height"]: u["amount"] for u in net.pages("/staking/unbondings")}
    assert pending == {10: 100}  # the held entry completed at 7, after the hold
    before = net.balance(d.address)
    net.block([])  # height 8: a full penalty of a round opened at 8 burns the bonded stake only
    assert burned == [BOND + 800]
    net.block([])
    net.block([])  # height 10: the later leaver is paid in full
    assert net.balance(d.address) == before + 100
    net.app.close()


def test_jailing_every_validator_keeps_cometbfts_last_set(tmp_path):
    """CometBFT halts on an empty validator set: when evidence jails the only validator, no update is sent."""
    net = Net(tmp_path / "app", n_validators=1)
    r = net.block([], misbehavior=[cons_addr(0)])
    assert updates(r) == [] and net.cometbft == {cons_key(0): BOND // PARAMS["power_unit"]}
    net.block([net.tx(net.ops[1], create(net.ops[1], 1, 300))])  # someone bonds: the set moves to it
    assert net.cometbft == {cons_key(1): 3}
    net.app.close()


def test_module_accounts_take_no_sends(net):
    """issue 11 (found by the stateful fuzzer): a MsgSend into the bonded pool broke bonded pool = sum of tokens."""
    r = net.block([net.send_tx(net.ops[2], pool, 5) for pool in (staking.BONDED_POOL, staking.UNBONDING_POOL)])
    assert codes(r) == [("bank", 2)] * 2


# --- stake that has left stays slashable: double sign, downtime, training rounds ---------------


def pending_of(net, owner) -> list[tuple[int, int]]:
    """(completion height, amount it pays now) of owner's unbonding entries."""
    return [(u["completion_height"], u["amount"]) for u in net.pages("/staking/unbondings", owner.address)]


@pytest.mark.parametrize("evidence_after", [0, 1])
def test_double_sign_slashes_the_stake_that_left_after_the_infraction(tmp_path, evidence_after):
    """issue 11 (Cosmos rule, defect 3 family): CometBFT applies updates two blocks late, so stake undelegated at H
    still signs at H + 1. Evidence for H or H + 1 arriving later slashes that unbonding stake by the same
    fraction; stake that left before the infraction's signing set (an earlier leaver) keeps all of it."""
    net = Net(tmp_path / "app", params={"unbonding_blocks": 10})
    val, d, early = net.ops[1], net.ops[3], net.ops[4]
    net.block([net.tx(d, delegate(val, 1_000)), net.tx(early, delegate(val, 1_000))])  # height 2
    net.block([net.tx(early, undelegate(val, 1_000))])  # height 3: gone from CometBFT's set from height 5
    net.block([])
    net.block([])
    net.block([net.tx(d, undelegate(val, 1_000))])  # height 6: still signs at 6 and 7
    left_at = net.height
    net.block([])
    infraction = left_at + evidence_after
    net.block([], misbehavior=[(cons_addr(1), infraction)])  # height 8
    assert pending_of(net, d) == [(left_at + 10, 950)]
    assert pending_of(net, early) == [(3 + 10, 1_000)]
    assert net.validator(val)["tokens"] == BOND * 95 // 100
    before = net.balance(d.address)
    while net.height < left_at + 10:
        net.block([])
    assert net.balance(d.address) == before + 950
    assert list(net.app.store.begin_block().iter_prefix(staking.LEAVING_PREFIX)) == []  # the last entry out deletes its pool
    net.app.close()


def test_double_sign_after_the_stake_stopped_signing_leaves_it_alone(tmp_path):
    """issue 11 (Cosmos rule): evidence for a height at which the undelegated stake no longer signed
    (H + 2 and later) burns the bonded stake only."""
    net = Net(tmp_path / "app", params={"unbonding_blocks": 10})
    val, d = net.ops[1], net.ops[3]
    net.block([net.tx(d, delegate(val, 1_000))])
    net.block([net.tx(d, undelegate(val, 1_000))])  # height 3
    net.block([])
    net.block([])
    net.block([], misbehavior=[(cons_addr(1), 5)])  # height 6: evidence for 5 = 3 + 2
    assert pending_of(net, d) == [(13, 1_000)]
    assert net.validator(val)["tokens"] == BOND * 95 // 100
    net.app.close()


def test_old_evidence_still_finds_the_stake_within_the_unbonding_period(tmp_path):
    """issue 11 (Cosmos rule): evidence as old as the localnet accepts (unbonding_blocks - 2 after
    CometBFT's own lag) still reaches stake that left right after the infraction."""
    ub = 10
    net = Net(tmp_path / "app", params={"unbonding_blocks": ub})
    val, d = net.ops[1], net.ops[3]
    net.block([net.tx(d, delegate(val, 1_000))])
    infraction = net.height + 1
    net.block([net.tx(d, undelegate(val, 1_000))])  # height 3 = infraction: left during it
    max_age = ub - staking.EVIDENCE_AGE_MARGIN
    while net.height < infraction + max_age:  # CometBFT accepts it in block n while n - 1 - h <= max_age
        net.block([])
    net.block([], misbehavior=[(cons_addr(1), infraction)])
    assert net.height == infraction + max_age + 1 and pending_of(net, d) == [(infraction + ub, 950)]
    net.app.close()


def test_downtime_slashes_the_stake_that_left_while_it_was_missing(tmp_path):
    """issue 11 (Cosmos rule): the downtime slash reaches stake that still signed for the commit whose
    signature was missed; stake that left before then is untouched."""
    net = Net(tmp_path / "app", params={"unbonding_blocks": 10})
    val, d, early = net.ops[1], net.ops[3], net.ops[4]
    net.block([net.tx(d, delegate(val, 1_000)), net.tx(early, delegate(val, 1_000))])  # height 2
    net.block([net.tx(early, undelegate(val, 1_000))], votes=[(cons_addr(1), False)])  # height 3: miss 1
    net.block([], votes=[(cons_addr(1), True)])
    net.block([net.tx(d, undelegate(val, 1_000))], votes=[(cons_addr(1), False)])  # height 5: miss 2
    net.block([], votes=[(cons_addr(1), False)])  # height 6: miss 3 (of block 5's commit): jailed and slashed 10%
    assert net.validator(val)["jailed_until"] > 0
    assert pending_of(net, d) == [(15, 900)]
    assert pending_of(net, early) == [(13, 1_000)]
    net.app.close()


def rounds(monkeypatch, schedule: dict[int, tuple]):
    """Drive hold_stake / penalize from staking's end_block, as training does: {height: ("hold", until) | ("penalize", bps, since)}."""
    original = staking.end_block
    burned: dict[int, int] = {}

    def end_block(ctx):
        action = schedule.get(ctx.height)
        if action and action[0] == "hold":
            staking.hold_stake(ctx, [fixed_key(1).address], action[1])
        elif action:
            burned[ctx.height] = staking.penalize(ctx, fixed_key(1).address, action[1], "training_wrong", since_height=action[2])
        original(ctx)

    monkeypatch.setattr(staking, "end_block", end_block)
    return burned


def test_back_to_back_rounds_cut_a_leaver_only_for_its_own_round(tmp_path, monkeypatch):
    """issue 11 defect 3: a delegator that left during round r pays round r's penalty and not round r + 1's,
    although r + 1's hold extends the validator's hold; a leaver of round r + 1 pays r + 1's."""
    # round r opens at 3 (hold until 6), penalty at 5; round r + 1 opens at 7 (hold until 10), penalty at 9
    burned = rounds(monkeypatch, {2: ("hold", 6), 5: ("penalize", 5_000, 3), 6: ("hold", 10), 9: ("penalize", 5_000, 7)})
    net = Net(tmp_path / "app", params={"unbonding_blocks": 8})
    val, d, late = net.ops[0], net.ops[3], net.ops[4]
    net.block([net.tx(d, delegate(val, 1_000)), net.tx(late, delegate(val, 1_000))])  # height 2
    net.block([])
    net.block([net.tx(d, undelegate(val, 600))])  # height 4: during round r
    net.block([])  # height 5: round r's penalty halves the bonded stake and d's 600
    assert pending_of(net, d) == [(12, 300)]
    net.block([])
    net.block([])
    net.block([net.tx(late, undelegate(val, 400))])  # height 8: during round r + 1
    net.block([])  # height 9: round r + 1's penalty
    assert pending_of(net, d) == [(12, 300)]
    assert pending_of(net, late) == [(max(8 + 8, 10 + 1), 200)]
    assert burned[9] == ((BOND + 2_000 - 600) // 2 - 400) // 2 + 200  # half the bonded stake and half of late's 400 only
    before = net.balance(d.address)
    while net.height < 12:
        net.block([])
    assert net.balance(d.address) == before + 300
    net.app.close()


def test_a_hold_renewed_every_block_cannot_keep_an_undelegation_from_completing(tmp_path, monkeypatch):
    """issue 11 defect 3: on a chain that trains without pause the hold is extended at every block; an
    undelegation still completes at the height fixed when it left."""
    schedule = {h: ("hold", h + 6) for h in range(2, 40)}
    rounds(monkeypatch, schedule)
    net = Net(tmp_path / "app", params={"unbonding_blocks": 3})
    val, d = net.ops[0], net.ops[3]
    net.block([net.tx(d, delegate(val, 1_000))])  # height 2: held until 8
    net.block([net.tx(d, undelegate(val, 1_000))])  # height 3: completes at 9, whatever holds follow
    assert pending_of(net, d) == [(9, 1_000)]
    before = net.balance(d.address)
    while net.height < 9:
        net.block([])
    assert net.balance(d.address) == before + 1_000 and pending_of(net, d) == []
    net.app.close()


def test_pools_of_many_leavers_settle_exactly(tmp_path, monkeypatch):
    """issue 11: many leavers of one height share one pool; slashes cut it in one write; the last one out takes
    the rounding remainder and the pool is deleted (the unbonding account ends empty)."""
    burned = rounds(monkeypatch, {2: ("hold", 9), 6: ("penalize", 3_333, 3)})
    net = Net(tmp_path / "app", params={"unbonding_blocks": 4})
    val, ds = net.ops[0], net.ops[2:6]
    net.block([net.tx(d, delegate(val, 333 + 7 * i)) for i, d in enumerate(ds)])  # height 2
    net.block([net.tx(d, undelegate(val, 101 + 13 * i)) for i, d in enumerate(ds)])  # height 3: one pool
    net.block([net.tx(d, undelegate(val, 5)) for d in ds[:2]])  # height 4: another
    net.block([], misbehavior=[(cons_addr(0), 4)])  # height 5: reaches both pools (left at 3 and 4 >= 4 - 1)
    net.block([])  # height 6: penalty of a round opened at 3
    assert burned[6] > 0
    while net.height < 11:
        net.block([])
    state = net.app.store.begin_block()
    assert list(state.iter_prefix(staking.LEAVING_PREFIX)) == [] and list(state.iter_prefix(staking.UNBONDING_PREFIX)) == []
    assert net.balance(staking.UNBONDING_POOL) == 0
    net.app.close()


def test_genesis_refuses_evidence_older_than_the_unbonding_period(tmp_path):
    """issue 11 (Cosmos rule): CometBFT must not accept evidence so old that the stake that left after it has been paid out."""
    from abci_app.app import Application
    from abci_app.pb.tendermint.abci import types_pb2 as abci
    from tests.unit.conftest import CHAIN_ID as chain_id

    app_state = json.dumps({"staking": {"params": PARAMS | {"unbonding_blocks": 20}}}).encode()
    for max_age, ok in ((18, True), (19, False), (100_000, False)):
        app = Application(tmp_path / f"app{max_age}")
        req = abci.RequestInitChain(chain_id=chain_id, app_state_bytes=app_state, initial_height=1)
        req.consensus_params.evidence.max_age_num_blocks = max_age
        if ok:
            app.init_chain(req)
        else:
            with pytest.raises(ValueError, match="max_age_num_blocks"):
                app.init_chain(req)
        app.close()


def test_localnet_genesis_bounds_the_evidence_age():
    """issue 11 (Cosmos rule): the localnet's genesis limits evidence age by blocks alone, below unbonding_blocks."""
    from abci_app import localnet

    state = localnet.localnet_app_state()
    evidence = localnet.evidence_params(state, {"max_age_num_blocks": "100000", "max_age_duration": "172800000000000", "max_bytes": "1048576"})
    assert evidence == {"max_age_num_blocks": str(staking.Params().unbonding_blocks - 2), "max_age_duration": "1", "max_bytes": "1048576"}
