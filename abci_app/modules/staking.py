"""staking: bonded validators drive CometBFT's validator set; slashing, jailing, rewards.

A validator's voting power is its bonded tokens divided by `power_unit`.
Bonded tokens sit in module accounts (bonded, unbonding and distribution) so
the bank's supply invariant keeps holding: supply = sum of all balances.

Delegations are shares of a validator's tokens (as in the Cosmos SDK): a
slash lowers the validator's tokens once and every delegation loses its part,
with no walk over delegations. Fees and block rewards go to the block's
proposer's delegators through a per-share reward index; each delegation is
paid what the index gained since it last settled, when it changes or on
MsgWithdrawRewards. Unpaid rewards sit in the distribution account.

Stake that leaves a validator stays slashable while it unbonds (the Cosmos
rule): the tokens that leave it at one height form a leaving pool that the
unbonding entries hold shares of. An infraction at height h burns the same
fraction of the bonded tokens and of every live pool made at h - 1 or later
(CometBFT applies validator updates two blocks late); a training penalty
reaches only the pools made since its round opened.
State changes only in blocks that carry txs, misbehavior or missed
signatures, so an idle chain stays idle with `create_empty_blocks = false`.

CometBFT's validator set is keyed by consensus pubkey: staking remembers the
power it last reported per pubkey and sends the difference, so the set
CometBFT holds always equals the bonded, unjailed top `max_validators`;
the one exception: an empty set would halt CometBFT, so when every validator
is jailed or gone the last set stays until someone bonds again.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

from abci_app import crypto, paging
from abci_app.context import (
    Context,
    EventType,
    ModuleError,
    ValidatorUpdate,
    decode_int,
    decode_json,
    due_entries,
    encode_int,
    encode_json,
    enqueue,
    is_printable_ascii,
    load_params,
    store_params,
)
from abci_app.modules import bank
from abci_app.state import Overlay
from abci_app.tx import tx_pb2

# --- Params ---------------------------------------------------------------------

BPS = 10_000  # fractions are integer basis points: no floats in consensus code
REWARD_SCALE = 10**18  # reward index precision: rewards per share are stored times this
MAX_PARAM = 2**62  # every param fits an int64 (heights, keys of 8 bytes) with room to add
MAX_VALIDATORS = 10_000
MAX_BLOCKS = 10_000_000  # ~4 months at 1 s blocks: the longest unbonding, jail or downtime window (a longer unbonding would freeze stake for good, as it may never shrink)
MAX_MONIKER = 64
# A self-bond floor above 1000 units of voting power only shuts operators out: creating, unjailing and
# reducing a self-bond all need it (a raise is also refused above what most active power holds: check_params_change).
MAX_SELF_BOND_UNITS = 1_000
MAX_BLOCK_REWARD = 10**9  # ugrad minted per block with txs (1000 GRAD): one proposal may not vote unbounded inflation
# A proposer can leave any precommit out of LastCommit: a downtime jail must take many of its turns (half the
# window) and cost a victim's delegators little (Cosmos's min_signed_per_window and slash_fraction_downtime).
MAX_DOWNTIME_SLASH_BPS = 1_000
# CometBFT refuses a set whose total power exceeds MaxTotalVotingPower (int64 max / 8): cap each member
# so that even max_validators of them stay below it.
MAX_POWER = (2**63 - 1) // 8 // MAX_VALIDATORS


@dataclass(frozen=True)
class Params:
    max_validators: int = 100  # size of CometBFT's validator set: the top validators by power
    min_self_bond: int = 1_000_000  # an operator keeps at least this bonded to itself, or exits
    power_unit: int = 1_000_000  # bonded tokens per unit of CometBFT voting power
    unbonding_blocks: int = 20  # heights undelegated tokens stay slashable before they are paid out
    jail_blocks: int = 20  # heights a validator jailed for downtime stays jailed
    double_sign_slash_bps: int = 500  # share of stake burned for a double sign (5%)
    double_sign_jail_blocks: int = 1_000  # heights a double signer stays jailed
    downtime_window: int = 20  # heights looked back for missed signatures
    downtime_max_missed: int = 10  # jailed once it misses this many in the window
    downtime_slash_bps: int = 10  # share of stake burned for downtime (0.1%)
    block_reward: int = 0  # minted per block that carries txs, to the proposer's delegators

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_PARAM:
                raise ValueError(f"staking.params.{name} must be an integer from 0 to 2^62")
        if min(self.power_unit, self.downtime_window, self.max_validators, self.min_self_bond, self.downtime_max_missed) == 0:
            raise ValueError("staking.params power_unit, downtime_window, max_validators, min_self_bond and downtime_max_missed must be positive")
        if self.max_validators > MAX_VALIDATORS:
            raise ValueError(f"staking.params.max_validators is at most {MAX_VALIDATORS}")
        if self.double_sign_slash_bps > BPS or self.downtime_slash_bps > BPS:
            raise ValueError("staking slash fractions are basis points: at most 10000")
        if self.downtime_slash_bps > MAX_DOWNTIME_SLASH_BPS:
            raise ValueError(f"staking.params.downtime_slash_bps is at most {MAX_DOWNTIME_SLASH_BPS}: a proposer can forge downtime")
        if self.downtime_max_missed < self.downtime_window // 2:
            raise ValueError("staking.params.downtime_max_missed must be at least half of downtime_window: a proposer can "
                             "leave out a victim's signatures")
        if self.min_self_bond > MAX_SELF_BOND_UNITS * self.power_unit:
            raise ValueError(f"staking.params.min_self_bond is at most {MAX_SELF_BOND_UNITS} x power_unit "
                             f"({MAX_SELF_BOND_UNITS * self.power_unit})")
        if self.block_reward > MAX_BLOCK_REWARD:
            raise ValueError(f"staking.params.block_reward is at most {MAX_BLOCK_REWARD}")
        for name in ("unbonding_blocks", "jail_blocks", "double_sign_jail_blocks", "downtime_window"):
            if getattr(self, name) > MAX_BLOCKS:
                raise ValueError(f"staking.params.{name} must be at most {MAX_BLOCKS}")
        if self.unbonding_blocks <= EVIDENCE_AGE_MARGIN:
            # CometBFT needs max_age_num_blocks >= 1, and evidence must find the stake that left (check_evidence_age).
            raise ValueError(f"staking.params.unbonding_blocks must be at least {EVIDENCE_AGE_MARGIN + 1}")


def check_params_change(current: Params, new: Params, state: Overlay | None = None) -> None:
    """What a governance MsgUpdateParams may not do to valid staking params (ValueError says why); the rules that
    read the validators run when the caller passes the state."""
    if state is not None and new.min_self_bond > current.min_self_bond:
        # Operators below the floor can neither unjail nor create again: if they held a third of the power, downtime
        # jails could empty the set, and with no bonded power gov never reaches quorum to lower the floor back.
        active = active_set(state)
        total = sum(p for _, p in active)
        kept = sum(p for v, p in active if delegation(state, v.operator, v.operator) >= new.min_self_bond)
        if 3 * kept < 2 * total:
            raise ValueError(f"staking.params.min_self_bond may rise only to what validators with 2/3 of the active power "
                             f"have self-bonded: {new.min_self_bond} leaves {kept} of {total} power")
    if new.power_unit != current.power_unit:
        # Power ranks are stored as tokens // power_unit: a new unit would strand every rank key (the Cosmos SDK's
        # PowerReduction is a constant too).
        raise ValueError("staking.params.power_unit is set at genesis only")
    if new.unbonding_blocks < current.unbonding_blocks:
        # Genesis checked it against CometBFT's evidence max age (check_evidence_age), which the app does not see later.
        raise ValueError("staking.params.unbonding_blocks may only grow: evidence must still find the stake that left")


BONDED_POOL = bank.module_address("bonded_pool")
UNBONDING_POOL = bank.module_address("unbonding_pool")
DISTRIBUTION = bank.module_address("distribution")  # rewards credited to delegators and not paid out yet

# --- Storage --------------------------------------------------------------------

PREFIX = b"staking/"
PARAMS_KEY = PREFIX + b"params"  # Params as canonical JSON
UNBONDING_SEQ_KEY = PREFIX + b"unbonding_seq"  # next sequence number in UNBONDING_PREFIX
VALIDATOR_PREFIX = PREFIX + b"validator/"  # <operator 20> -> Validator JSON (kept after it empties: jail and keys stay)
CONSENSUS_PREFIX = PREFIX + b"cons/"  # <consensus address 20> -> operator 20 bytes (a key stays bound to its first operator)
DELEGATION_PREFIX = PREFIX + b"delegation/"  # <operator 20><delegator 20> -> {"shares", "index", "since"}
DELEGATOR_PREFIX = PREFIX + b"delegator/"  # <delegator 20><operator 20> -> b"1": one delegator's delegations, for queries
RANK_PREFIX = PREFIX + b"rank/"  # <RANK_TOP - power 8 BE><operator 20> -> b"1": validators with power > 0, strongest first
POWER_PREFIX = PREFIX + b"power/"  # <consensus pubkey 32> -> power last sent to CometBFT
UNBONDING_PREFIX = PREFIX + b"unbonding/"  # <completion height 8 BE><seq 8 BE> -> Unbonding JSON
HOLD_PREFIX = PREFIX + b"hold/"  # <operator 20> -> {"until"}: stake that leaves before then unbonds until after it
# <operator 20><height left 8 BE> -> {"tokens", "shares"}: the stake that left a validator at one height and is
# still unbonding, as a pool its unbonding entries hold shares of, so a slash of it is one write. A pool lives
# until its last entry completes: at most max(unbonding_blocks, the longest training hold + 1) heights after
# it was made, so a validator has at most that many (both are params) and a slash reads no more.
LEAVING_PREFIX = PREFIX + b"leaving/"
MISSED_PREFIX = PREFIX + b"missed/"  # <consensus address 20> -> heights of missed signatures

_RANK_TOP = 2**64 - 1  # above MAX_POWER: rank keys are RANK_TOP - power, 8 bytes
# CometBFT applies the validator updates of block H from block H + 2: stake that left at h - 1 still
# signed at h, so an infraction at h reaches the stake that left at h - 1 or later.
SIGNED_AFTER_LEAVING = 1
# Evidence CometBFT accepts in block n is at most max_age_num_blocks + 1 older (it measures from n - 1), and
# stake that left at h - 1 unbonds until h - 1 + unbonding_blocks: every piece of evidence still finds it when
# max_age_num_blocks + EVIDENCE_AGE_MARGIN <= unbonding_blocks (app.init_chain refuses a genesis that breaks it).
EVIDENCE_AGE_MARGIN = 2


_raw = crypto.address_raw


def _addr(raw: bytes) -> str:
    return crypto.bech32_encode(crypto.ADDRESS_HRP, raw)


def consensus_address(pubkey: bytes) -> bytes:
    """CometBFT's validator address: sha256(ed25519 pubkey)[:20]."""
    return crypto.address_bytes(pubkey)


def pop_message(chain_id: str, operator: str) -> bytes:
    """What a consensus key signs to prove its holder asked to validate for `operator` on `chain_id`."""
    return b"gradchain/pop/v1" + chain_id.encode() + _raw(operator)


@dataclass(frozen=True)
class Validator:
    operator: str
    pubkey: str  # hex of the ed25519 consensus key
    moniker: str
    tokens: int  # bonded tokens behind it; slashes lower them for every delegation at once
    shares: int = 0  # delegation shares outstanding: a delegation of s shares is worth s * tokens // shares
    jailed_until: int = 0  # height from which unjail is allowed; 0 = not jailed
    reward_index: int = 0  # rewards per share ever credited, times REWARD_SCALE
    rewards_outstanding: int = 0  # credited to its delegators, not paid yet (held by DISTRIBUTION)

    @property
    def jailed(self) -> bool:
        return self.jailed_until > 0

    def value_of(self, shares: int) -> int:
        """Tokens `shares` of this validator are worth; the last shares out take the rounding remainder."""
        return self.tokens if shares >= self.shares else shares * self.tokens // self.shares


@dataclass(frozen=True)
class Delegation:
    shares: int
    index: int  # the validator's reward_index when this delegation last settled
    since: int = 0  # height it last grew: gov counts it only in votes that opened later (0: at genesis)


def get_params(state: Overlay) -> Params:
    return load_params(state, PARAMS_KEY, Params)


def get_validator(state: Overlay, operator: str) -> Validator | None:
    raw = decode_json(state.get(VALIDATOR_PREFIX + _raw(operator)))
    return Validator(**raw) if raw else None


def _rank_key(params: Params, validator: Validator) -> bytes | None:
    strength = power(params, validator)
    if strength == 0:
        return None
    return RANK_PREFIX + (_RANK_TOP - strength).to_bytes(8, "big") + _raw(validator.operator)


def _put_validator(state: Overlay, validator: Validator) -> None:
    """Store a validator and keep the power ranking in step with it."""
    params = get_params(state)
    old = get_validator(state, validator.operator)
    old_rank = _rank_key(params, old) if old else None
    new_rank = _rank_key(params, validator)
    if old_rank is not None and old_rank != new_rank:
        state.delete(old_rank)
    if new_rank is not None:
        state.set(new_rank, b"1")
    state.set(VALIDATOR_PREFIX + _raw(validator.operator), encode_json(asdict(validator)))


def validators(state: Overlay, after: str = "") -> Iterator[Validator]:
    """Validators by operator address bytes, from the first after operator `after`, read lazily (a page of a
    query reads only its own; every one of them only in tests and invariant checks)."""
    for _, raw in state.iter_prefix(VALIDATOR_PREFIX, VALIDATOR_PREFIX + _raw(after) if after else b""):
        yield Validator(**decode_json(raw))


def operator_of(state: Overlay, consensus_addr: bytes) -> str | None:
    raw = state.get(CONSENSUS_PREFIX + consensus_addr)
    return _addr(raw) if raw else None


def _get_delegation(state: Overlay, operator: str, delegator: str) -> Delegation | None:
    raw = decode_json(state.get(DELEGATION_PREFIX + _raw(operator) + _raw(delegator)))
    return Delegation(**raw) if raw else None


def _set_delegation(state: Overlay, operator: str, delegator: str, record: Delegation) -> None:
    key = DELEGATION_PREFIX + _raw(operator) + _raw(delegator)
    index = DELEGATOR_PREFIX + _raw(delegator) + _raw(operator)
    if record.shares:
        state.set(key, encode_json(asdict(record)))
        state.set(index, b"1")
    else:
        state.delete(key)
        state.delete(index)


def delegation(state: Overlay, operator: str, delegator: str) -> int:
    """Tokens `delegator` has bonded to `operator` (what its shares are worth now)."""
    record = _get_delegation(state, operator, delegator)
    validator = get_validator(state, operator) if record else None
    return validator.value_of(record.shares) if record and validator else 0


def delegations_to(state: Overlay, operator: str) -> list[tuple[str, int]]:
    """(delegator, tokens) of one validator, in delegator byte order (for queries and tests)."""
    validator = get_validator(state, operator)
    prefix = DELEGATION_PREFIX + _raw(operator)
    if validator is None:
        return []
    return [(_addr(k[len(prefix) :]), validator.value_of(decode_json(v)["shares"])) for k, v in state.iter_prefix(prefix)]


def delegations_of(state: Overlay, delegator: str) -> list[tuple[str, int]]:
    """(operator, tokens) of one delegator's delegations, in operator byte order (for queries and tests: it reads them all)."""
    prefix = DELEGATOR_PREFIX + _raw(delegator)
    out = []
    for key, _ in state.iter_prefix(prefix):
        operator = _addr(key[len(prefix) :])
        out.append((operator, delegation(state, operator, delegator)))
    return out


def voting_delegations(state: Overlay, delegator: str, limit: int) -> list[tuple[str, int, int]]:
    """(operator, tokens, since) of one delegator's delegations, in operator byte order: at most limit + 1 of them
    read, so a caller that gets more than `limit` knows there are too many (gov's votes)."""
    prefix = DELEGATOR_PREFIX + _raw(delegator)
    out = []
    for key, _ in state.iter_prefix(prefix):
        operator = _addr(key[len(prefix) :])
        record = _get_delegation(state, operator, delegator)
        validator = get_validator(state, operator) if record else None
        if record and validator:
            out.append((operator, validator.value_of(record.shares), record.since))
        if len(out) > limit:
            break
    return out


def pending_rewards(validator: Validator, record: Delegation) -> int:
    return record.shares * (validator.reward_index - record.index) // REWARD_SCALE


def power(params: Params, validator: Validator) -> int:
    return 0 if validator.jailed else min(validator.tokens // params.power_unit, MAX_POWER)


def active_set(state: Overlay) -> list[tuple[Validator, int]]:
    """The validators CometBFT should have: top max_validators by power (ties by operator).

    Reads the power ranking only as far as max_validators: never every validator.
    """
    params = get_params(state)
    ranked: list[tuple[Validator, int]] = []
    for key, _ in state.iter_prefix(RANK_PREFIX):
        if len(ranked) == params.max_validators:
            break
        validator = get_validator(state, _addr(key[-20:]))
        ranked.append((validator, power(params, validator)))
    return ranked


def total_power(state: Overlay) -> int:
    return sum(p for _, p in active_set(state))


def active_powers(state: Overlay) -> dict[str, int]:
    """Operator -> voting power of the active set: who may attest, and with what weight."""
    return {v.operator: p for v, p in active_set(state)}


def _hold(state: Overlay, operator: str) -> dict | None:
    return decode_json(state.get(HOLD_PREFIX + _raw(operator)))


def _leaving_key(operator: str, height: int) -> bytes:
    return LEAVING_PREFIX + _raw(operator) + height.to_bytes(8, "big")


def _leaving_pool(state: Overlay, operator: str, height: int) -> dict:
    return decode_json(state.get(_leaving_key(operator, height))) or {"tokens": 0, "shares": 0}


def _set_leaving_pool(state: Overlay, operator: str, height: int, pool: dict) -> None:
    key = _leaving_key(operator, height)
    state.set(key, encode_json(pool)) if pool["shares"] else state.delete(key)


def _active_hold(state: Overlay, operator: str, height: int) -> dict | None:
    hold = _hold(state, operator)
    return hold if hold is not None and hold["until"] >= height else None


# --- Events ---------------------------------------------------------------------


@dataclass(frozen=True)
class ValidatorCreated(EventType):
    """An operator bonded itself and became a validator (or re-created its exited one)."""

    type = "validator_created"
    operator: str
    pubkey: str
    moniker: str
    amount: int


@dataclass(frozen=True)
class Delegated(EventType):
    """Tokens were bonded to a validator, raising its power."""

    type = "delegated"
    delegator: str
    validator: str
    amount: int


@dataclass(frozen=True)
class UnbondingStarted(EventType):
    """Tokens left a validator; they are paid out at completion_height (kind: delegation)."""

    type = "unbonding_started"
    owner: str
    validator: str
    amount: int
    completion_height: int
    kind: str


@dataclass(frozen=True)
class UnbondingCompleted(EventType):
    """An unbonding entry was paid out (what is left of it after slashes)."""

    type = "unbonding_completed"
    owner: str
    amount: int
    kind: str


@dataclass(frozen=True)
class ValidatorEdited(EventType):
    """An operator changed its moniker."""

    type = "validator_edited"
    operator: str
    moniker: str


@dataclass(frozen=True)
class Unjailed(EventType):
    """A jailed validator signs again."""

    type = "unjailed"
    operator: str


@dataclass(frozen=True)
class Slashed(EventType):
    """Stake was burned; reason: double_sign, downtime or training_<penalty>."""

    type = "slashed"
    validator: str
    amount: int
    reason: str


@dataclass(frozen=True)
class Jailed(EventType):
    """A validator lost its power until height `until`; reason: double_sign, downtime or operator_exit."""

    type = "jailed"
    validator: str
    until: int
    reason: str


@dataclass(frozen=True)
class Rewarded(EventType):
    """A block's fees and block reward were credited to the proposer's delegators."""

    type = "rewarded"
    validator: str
    amount: int


@dataclass(frozen=True)
class RewardsPaid(EventType):
    """A delegation's rewards were settled into the delegator's balance."""

    type = "rewards_paid"
    delegator: str
    validator: str
    amount: int


@dataclass(frozen=True)
class PowerChanged(EventType):
    """A validator update was sent to CometBFT (power 0 removes the key)."""

    type = "power_changed"
    validator: str
    pubkey: str
    power: int


# --- Errors ---------------------------------------------------------------------


class StakingError(ModuleError):
    codespace = "staking"


RETIRED_CODES = {11: "trainer bond, now training 12"}  # codes once used: never given to another error


class UnknownValidator(StakingError):
    """No validator is operated by that address."""

    code = 1


class DuplicateValidator(StakingError):
    """The signer already operates a validator."""

    code = 2


class DuplicatePubkey(StakingError):
    """Another validator already uses that consensus key."""

    code = 3


class InvalidPubkey(StakingError):
    """A consensus key must be a 32-byte ed25519 public key."""

    code = 4


class BelowMinSelfBond(StakingError):
    """The operator's own bond would be below min_self_bond."""

    code = 5


class InsufficientDelegation(StakingError):
    """Undelegating more than is delegated."""

    code = 6


class NotJailed(StakingError):
    """Unjail of a validator that is not jailed."""

    code = 7


class StillJailed(StakingError):
    """Unjail before the jail time is over."""

    code = 8


class InvalidAmount(StakingError):
    """Amounts are positive integers."""

    code = 9


class InvalidMoniker(StakingError):
    """Monikers are 1 to 64 printable characters."""

    code = 10


class InvalidPossessionProof(StakingError):
    """MsgCreateValidator must carry the consensus key's signature over the chain id and operator."""

    code = 12


class ValidatorWipedOut(StakingError):
    """A validator whose stake was slashed to zero takes no new delegations."""

    code = 13


class LastValidator(StakingError):
    """The move would leave CometBFT with no voting power: the chain would halt."""

    code = 14


class NoDelegation(StakingError):
    """Withdrawing rewards from a validator the signer has no delegation to."""

    code = 15


# --- Guards -----------------------------------------------------------------------


def _positive(amount: int) -> None:
    if amount <= 0:
        raise InvalidAmount(f"invalid amount {amount}: must be a positive integer of {bank.DENOM}")


def _moniker(text: str) -> str:
    if not is_printable_ascii(text, MAX_MONIKER):
        raise InvalidMoniker(f"invalid moniker {text[:MAX_MONIKER + 1]!r}: use 1 to {MAX_MONIKER} printable ASCII characters")
    return text


def _existing(state: Overlay, operator: str) -> Validator:
    validator = get_validator(state, operator)
    if validator is None:
        raise UnknownValidator(f"unknown validator {operator} (see `gradchain query staking validators`)")
    return validator


def _operator_address(text: str) -> str:
    try:
        return crypto.parse_address(text)
    except crypto.AddressError as exc:
        raise UnknownValidator(f"invalid validator address '{text[:100]}': {exc}") from None


def _others_have_power(state: Overlay, operator: str) -> bool:
    """Whether some validator other than `operator` ranks with power > 0 (reads at most two rank entries)."""
    for key, _ in state.iter_prefix(RANK_PREFIX):
        if key[-20:] != _raw(operator):
            return True
    return False


# --- Calls ------------------------------------------------------------------------


def create_validator(ctx: Context, signer: str, msg: tx_pb2.MsgCreateValidator) -> None:
    """MsgCreateValidator: the signer becomes an operator with a self-bond.

    An operator that exited keeps its record: creating again re-uses it, jail included.
    """
    params = get_params(ctx.state)
    if len(msg.pubkey) != crypto.PUBKEY_BYTES:
        raise InvalidPubkey(f"invalid consensus pubkey: {len(msg.pubkey)} bytes, expected a 32-byte ed25519 key")
    moniker = _moniker(msg.moniker)
    if not crypto.verify(msg.pubkey, pop_message(ctx.chain_id, signer), msg.pubkey_signature):
        raise InvalidPossessionProof("pubkey_signature is not the consensus key's signature over b'gradchain/pop/v1' || chain id || operator address")
    existing = get_validator(ctx.state, signer)
    if existing is not None and existing.shares > 0:
        hint = ": it still has delegators, so delegate to it and unjail instead" if existing.jailed else ""
        raise DuplicateValidator(f"{signer} already operates a validator{hint}")
    if operator_of(ctx.state, consensus_address(msg.pubkey)) not in (None, signer):
        raise DuplicatePubkey("that consensus pubkey is already used by another validator")
    if msg.amount < params.min_self_bond:
        raise BelowMinSelfBond(f"self-bond {msg.amount}{bank.DENOM} is below the minimum {params.min_self_bond}{bank.DENOM}")
    bank.transfer(ctx, signer, BONDED_POOL, msg.amount)
    base = existing or Validator(signer, msg.pubkey.hex(), moniker, 0)
    # A jail whose time is over ends here, as MsgUnjail would end it: the new self-bond meets the minimum.
    jailed_until = base.jailed_until if ctx.height < base.jailed_until else 0
    validator = replace(base, pubkey=msg.pubkey.hex(), moniker=moniker, tokens=msg.amount, shares=msg.amount, jailed_until=jailed_until)
    _put_validator(ctx.state, validator)
    ctx.state.set(CONSENSUS_PREFIX + consensus_address(msg.pubkey), _raw(signer))
    if existing is not None and existing.pubkey != validator.pubkey:
        # The missed signatures follow the validator to its new key: rotating keys must not reset the downtime count.
        old_missed = MISSED_PREFIX + consensus_address(bytes.fromhex(existing.pubkey))
        missed = ctx.state.get(old_missed)
        if missed is not None:
            ctx.state.set(MISSED_PREFIX + consensus_address(msg.pubkey), missed)
            ctx.state.delete(old_missed)
    _set_delegation(ctx.state, signer, signer, Delegation(msg.amount, validator.reward_index, ctx.height))
    ctx.emit(ValidatorCreated(operator=signer, pubkey=msg.pubkey.hex(), moniker=moniker, amount=msg.amount))


def delegate(ctx: Context, signer: str, msg: tx_pb2.MsgDelegate) -> None:
    """MsgDelegate: bond tokens to a validator, raising its power."""
    _positive(msg.amount)
    validator = _existing(ctx.state, _operator_address(msg.validator))
    if validator.shares > 0 and validator.tokens == 0:
        raise ValidatorWipedOut(f"validator {validator.operator} lost all its stake to slashing: its shares have no price")
    new_shares = msg.amount if validator.shares == 0 else msg.amount * validator.shares // validator.tokens
    if new_shares == 0:
        raise InvalidAmount(f"{msg.amount}{bank.DENOM} buys no share of validator {validator.operator}")
    record = _get_delegation(ctx.state, validator.operator, signer) or Delegation(0, validator.reward_index)
    bank.transfer(ctx, signer, BONDED_POOL, msg.amount)
    validator = _settle(ctx, validator, signer, record)
    _set_delegation(ctx.state, validator.operator, signer, Delegation(record.shares + new_shares, validator.reward_index, ctx.height))
    _put_validator(ctx.state, replace(validator, tokens=validator.tokens + msg.amount, shares=validator.shares + new_shares))
    ctx.emit(Delegated(delegator=signer, validator=validator.operator, amount=msg.amount))


def undelegate(ctx: Context, signer: str, msg: tx_pb2.MsgUndelegate) -> None:
    """MsgUndelegate: unbond tokens; they return after unbonding_blocks (later while the validator is held).

    The operator keeps at least min_self_bond or leaves entirely; leaving jails
    the validator (power 0) until it bonds the minimum again. Nobody may take
    the last voting power out of the chain.
    """
    _positive(msg.amount)
    validator = _existing(ctx.state, _operator_address(msg.validator))
    record = _get_delegation(ctx.state, validator.operator, signer)
    bonded = validator.value_of(record.shares) if record else 0
    if bonded < msg.amount:
        raise InsufficientDelegation(f"cannot undelegate {msg.amount}{bank.DENOM}: {signer} has {bonded}{bank.DENOM} delegated to {validator.operator}")
    params = get_params(ctx.state)
    # Round the shares up: what stays behind is never worth less than before.
    removed = record.shares if msg.amount == bonded else min(record.shares, -(-msg.amount * validator.shares // validator.tokens))
    amount = bonded if removed == record.shares else msg.amount
    left = replace(validator, tokens=validator.tokens - amount, shares=validator.shares - removed)
    is_operator = signer == validator.operator
    if is_operator and removed < record.shares and left.value_of(record.shares - removed) < params.min_self_bond:
        raise BelowMinSelfBond(
            f"the operator's self-bond would fall below the minimum {params.min_self_bond}{bank.DENOM}: keep it or undelegate all {bonded}{bank.DENOM} to exit"
        )
    exiting = is_operator and removed == record.shares
    if exiting:
        left = replace(left, jailed_until=max(left.jailed_until, ctx.height))
    if power(params, validator) > 0 and power(params, left) == 0 and not _others_have_power(ctx.state, validator.operator):
        raise LastValidator(f"validator {validator.operator} holds the chain's only voting power: it cannot leave")
    pool = _leaving_pool(ctx.state, validator.operator, ctx.height)
    if pool["shares"] and pool["tokens"] == 0:
        # Unreachable while slashes run only in begin/end block, but a pool's shares need a price.
        raise ValidatorWipedOut(f"validator {validator.operator}'s unbonding stake of this block was slashed to zero")
    bank.transfer(ctx, BONDED_POOL, UNBONDING_POOL, amount)
    left = _settle(ctx, left, signer, record)
    _set_delegation(ctx.state, validator.operator, signer, Delegation(record.shares - removed, left.reward_index, record.since))
    if left.shares == 0 and left.rewards_outstanding:
        # The last shares out take the rewards' rounding remainder: nothing is stranded in DISTRIBUTION.
        bank.transfer(ctx, DISTRIBUTION, signer, left.rewards_outstanding)
        ctx.emit(RewardsPaid(delegator=signer, validator=validator.operator, amount=left.rewards_outstanding))
        left = replace(left, rewards_outstanding=0)
    _put_validator(ctx.state, left)
    _queue_delegation_unbonding(ctx, params, signer, validator.operator, amount)
    if exiting and not validator.jailed:
        ctx.emit(Jailed(validator=validator.operator, until=ctx.height, reason="operator_exit"))


def withdraw_rewards(ctx: Context, signer: str, msg: tx_pb2.MsgWithdrawRewards) -> None:
    """MsgWithdrawRewards: pay the signer the rewards its delegation to `validator` has earned."""
    validator = _existing(ctx.state, _operator_address(msg.validator))
    record = _get_delegation(ctx.state, validator.operator, signer)
    if record is None:
        raise NoDelegation(f"{signer} has no delegation to {validator.operator}")
    validator = _settle(ctx, validator, signer, record)
    _set_delegation(ctx.state, validator.operator, signer, replace(record, index=validator.reward_index))
    _put_validator(ctx.state, validator)


def edit_validator(ctx: Context, signer: str, msg: tx_pb2.MsgEditValidator) -> None:
    """MsgEditValidator: change the signer's moniker."""
    validator = _existing(ctx.state, signer)
    moniker = _moniker(msg.moniker)
    _put_validator(ctx.state, replace(validator, moniker=moniker))
    ctx.emit(ValidatorEdited(operator=signer, moniker=moniker))


def unjail(ctx: Context, signer: str, msg: tx_pb2.MsgUnjail) -> None:
    """MsgUnjail: the signer's validator signs again after its jail time."""
    validator = _existing(ctx.state, signer)
    if not validator.jailed:
        raise NotJailed(f"validator {signer} is not jailed")
    if ctx.height < validator.jailed_until:
        raise StillJailed(f"validator {signer} is jailed until height {validator.jailed_until} (now {ctx.height})")
    params = get_params(ctx.state)
    if delegation(ctx.state, signer, signer) < params.min_self_bond:
        raise BelowMinSelfBond(f"self-bond is below the minimum {params.min_self_bond}{bank.DENOM}: delegate to yourself first")
    _put_validator(ctx.state, replace(validator, jailed_until=0))
    ctx.state.delete(MISSED_PREFIX + consensus_address(bytes.fromhex(validator.pubkey)))
    ctx.emit(Unjailed(operator=signer))



CALLS = {
    "create_validator": create_validator,
    "delegate": delegate,
    "undelegate": undelegate,
    "edit_validator": edit_validator,
    "unjail": unjail,
    "withdraw_rewards": withdraw_rewards,
}

# --- Internal state transitions ---------------------------------------------------


def _settle(ctx: Context, validator: Validator, delegator: str, record: Delegation) -> Validator:
    """Pay `delegator` what its delegation earned since it last settled; the caller stores both records."""
    owed = min(pending_rewards(validator, record), validator.rewards_outstanding)
    if owed == 0:
        return validator
    bank.transfer(ctx, DISTRIBUTION, delegator, owed)
    ctx.emit(RewardsPaid(delegator=delegator, validator=validator.operator, amount=owed))
    return replace(validator, rewards_outstanding=validator.rewards_outstanding - owed)


def _queue_delegation_unbonding(ctx: Context, params: Params, owner: str, operator: str, amount: int) -> None:
    """Tokens leaving `operator` now join its leaving pool of this height: slashable for what it did while they
    were bonded, until they complete. The completion height is fixed here: a later hold cannot move it."""
    hold = _active_hold(ctx.state, operator, ctx.height)
    completion = ctx.height + params.unbonding_blocks
    if hold is not None:
        completion = max(completion, hold["until"] + 1)  # still there for the penalties of the round it left
    pool = _leaving_pool(ctx.state, operator, ctx.height)
    # tokens <= shares (slashes only lower tokens), so a positive amount always buys at least one share.
    shares = amount if pool["shares"] == 0 else amount * pool["shares"] // pool["tokens"]
    _set_leaving_pool(ctx.state, operator, ctx.height, {"tokens": pool["tokens"] + amount, "shares": pool["shares"] + shares})
    entry = {"owner": owner, "kind": "delegation", "validator": operator, "completion_height": completion, "left_height": ctx.height, "shares": shares}
    enqueue(ctx.state, UNBONDING_PREFIX, UNBONDING_SEQ_KEY, completion, entry)
    ctx.emit(UnbondingStarted(owner=owner, validator=operator, amount=amount, completion_height=completion, kind="delegation"))


def _entry_amount(state: Overlay, entry: dict) -> int:
    """What an unbonding entry pays now: its shares of its leaving pool (the last shares out take the remainder)."""
    pool = _leaving_pool(state, entry["validator"], entry["left_height"])
    return pool["tokens"] if entry["shares"] >= pool["shares"] else entry["shares"] * pool["tokens"] // pool["shares"]


def unbondings(state: Overlay) -> list[dict]:
    """Every pending unbonding by completion height, with what it pays now (tests and invariant checks)."""
    return [_unbonding_view(state, entry) for _, _, entry in _unbonding_records(state)]


def _unbonding_records(state: Overlay, after: bytes = b"") -> Iterator[tuple[bytes, int, dict]]:
    """(key after the prefix, stored bytes, entry) of pending unbondings by completion height, from the first
    after key suffix `after`, read lazily."""
    for key, raw in state.iter_prefix(UNBONDING_PREFIX, UNBONDING_PREFIX + after if after else b""):
        yield key[len(UNBONDING_PREFIX) :], len(raw), decode_json(raw)


def _unbonding_view(state: Overlay, entry: dict) -> dict:
    return {k: entry[k] for k in ("owner", "kind", "validator", "completion_height")} | {"amount": _entry_amount(state, entry)}


def hold_stake(ctx: Context, operators: list[str], until_height: int) -> None:
    """For the training module: stake leaving these validators stays slashable until `until_height`.

    Tokens undelegated from a held validator complete unbonding no earlier than
    until_height + 1, fixed when they leave: a later, longer hold does not move
    them, so back-to-back rounds cannot keep an undelegation from completing.
    """
    for operator in operators:
        hold = _active_hold(ctx.state, operator, ctx.height)
        if until_height >= ctx.height and (hold is None or until_height > hold["until"]):
            ctx.state.set(HOLD_PREFIX + _raw(operator), encode_json({"until": until_height}))


def _cut(tokens: int, bps: int) -> int:
    return tokens * min(max(bps, 0), BPS) // BPS


def _burn_stake(ctx: Context, operator: str, bps: int, since_height: int) -> int:
    """Burn `bps` of the validator's bonded tokens (every delegation loses its share at once) and of each of its
    leaving pools made at `since_height` or later (every entry in it at once). Returns the amount burned."""
    validator = get_validator(ctx.state, operator)
    burned = _cut(validator.tokens, bps) if validator else 0
    if burned:
        bank.burn(ctx, BONDED_POOL, burned)
        _put_validator(ctx.state, replace(validator, tokens=validator.tokens - burned))
    prefix = LEAVING_PREFIX + _raw(operator)
    for key, raw in ctx.state.iter_prefix(prefix):  # its live pools only: bounded, see LEAVING_PREFIX
        height = int.from_bytes(key[len(prefix) :], "big")
        pool = decode_json(raw)
        cut = _cut(pool["tokens"], bps) if height >= since_height else 0
        if cut:
            bank.burn(ctx, UNBONDING_POOL, cut)
            _set_leaving_pool(ctx.state, operator, height, pool | {"tokens": pool["tokens"] - cut})
            burned += cut
    return burned


def slash_validator(ctx: Context, validator: Validator, bps: int, jail_blocks: int, reason: str, infraction_height: int) -> int:
    """Burn `bps` of the validator's stake, including what left it after it signed at `infraction_height`
    and is still unbonding, and jail it; returns the amount burned."""
    burned = _burn_stake(ctx, validator.operator, bps, infraction_height - SIGNED_AFTER_LEAVING)
    if burned:
        ctx.emit(Slashed(validator=validator.operator, amount=burned, reason=reason))
    until = ctx.height + jail_blocks
    current = _existing(ctx.state, validator.operator)
    _put_validator(ctx.state, replace(current, jailed_until=max(until, current.jailed_until)))
    ctx.emit(Jailed(validator=validator.operator, until=until, reason=reason))
    return burned


def penalize(ctx: Context, operator: str, bps: int, reason: str, since_height: int) -> int:
    """For the training module: burn `bps` of a validator's stake without jail (e.g. a lazy or wrong verifier).

    The stake that left it at `since_height` (the round's open height) or later loses the
    same fraction; stake that left before the round was not part of it. Returns the amount burned.
    """
    burned = _burn_stake(ctx, operator, bps, since_height)
    if burned:
        ctx.emit(Slashed(validator=operator, amount=burned, reason=reason))
    return burned


# --- Genesis ----------------------------------------------------------------------


def genesis(ctx: Context, config: dict) -> None:
    """staking genesis: {"params": {...}, "validators": [{"operator", "pubkey" (hex or base64), "moniker", "self_bond"}]}.

    Genesis self-bonds are minted into the bonded pool (they count in the supply).
    """
    params = Params(**config.get("params", {}))
    params.validate()
    store_params(ctx.state, PARAMS_KEY, params)
    for entry in config.get("validators", []):
        operator = crypto.parse_address(entry["operator"])
        pubkey = _decode_pubkey(entry["pubkey"])
        self_bond = entry["self_bond"]
        if get_validator(ctx.state, operator) is not None or operator_of(ctx.state, consensus_address(pubkey)):
            raise ValueError(f"genesis validator {operator} is listed twice (or shares a pubkey)")
        if not isinstance(self_bond, int) or isinstance(self_bond, bool) or self_bond < max(params.min_self_bond, params.power_unit):
            raise ValueError(f"genesis validator {operator}: self_bond must be an integer >= min_self_bond and power_unit")
        bank.mint(ctx, BONDED_POOL, self_bond)
        _put_validator(ctx.state, Validator(operator, pubkey.hex(), _moniker(entry.get("moniker", operator[:12])), self_bond, self_bond))
        ctx.state.set(CONSENSUS_PREFIX + consensus_address(pubkey), _raw(operator))
        _set_delegation(ctx.state, operator, operator, Delegation(self_bond, 0))
    update_validator_set(ctx)


def check_evidence_age(state: Overlay, max_age_num_blocks: int) -> None:
    """InitChain: refuse consensus params under which CometBFT would accept evidence older than the unbonding
    period: the stake that left after the infraction would have been paid out, out of the slash's reach."""
    params = get_params(state)
    if max_age_num_blocks + EVIDENCE_AGE_MARGIN > params.unbonding_blocks:
        raise ValueError(
            f"consensus_params.evidence.max_age_num_blocks is {max_age_num_blocks}: it must be at most "
            f"staking.params.unbonding_blocks - {EVIDENCE_AGE_MARGIN} = {params.unbonding_blocks - EVIDENCE_AGE_MARGIN}"
        )


def _decode_pubkey(text: str) -> bytes:
    raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text)
    if len(raw) != crypto.PUBKEY_BYTES:
        raise ValueError(f"validator pubkey must be 32 bytes of ed25519, got {len(raw)}")
    return raw


# --- Hooks ------------------------------------------------------------------------


def begin_block(ctx: Context) -> None:
    """Punish evidence, then record missed signatures of the last commit."""
    params = get_params(ctx.state)
    for evidence in ctx.block.misbehavior:
        operator = operator_of(ctx.state, evidence.validator)
        validator = get_validator(ctx.state, operator) if operator else None
        if validator is None:
            continue  # not a key of ours: nothing to slash
        slash_validator(ctx, validator, params.double_sign_slash_bps, params.double_sign_jail_blocks, "double_sign", evidence.height)
    for vote in ctx.block.votes:
        if not vote.signed:
            _record_missed(ctx, params, vote.validator)


def _record_missed(ctx: Context, params: Params, consensus_addr: bytes) -> None:
    """Keep the heights of recent misses; jail once there are downtime_max_missed in the window."""
    operator = operator_of(ctx.state, consensus_addr)
    validator = get_validator(ctx.state, operator) if operator else None
    if validator is None or validator.jailed or consensus_address(bytes.fromhex(validator.pubkey)) != consensus_addr:
        return  # a key the operator has replaced stops counting against it
    oldest = ctx.height - params.downtime_window
    missed = [h for h in decode_json(ctx.state.get(MISSED_PREFIX + consensus_addr)) or [] if h > oldest] + [ctx.height]
    if len(missed) >= params.downtime_max_missed:
        ctx.state.delete(MISSED_PREFIX + consensus_addr)
        # The signature it missed last is of the previous block's commit.
        slash_validator(ctx, validator, params.downtime_slash_bps, params.jail_blocks, "downtime", ctx.height - 1)
    else:
        ctx.state.set(MISSED_PREFIX + consensus_addr, encode_json(missed))


def end_block(ctx: Context) -> None:
    """Pay out the unbondings due, then credit the block's fees (and block_reward) to the proposer's delegators."""
    _complete_unbondings(ctx)
    _reward_proposer(ctx)


def _complete_unbondings(ctx: Context) -> None:
    """Pay out the entries due by now (the queue is ordered by completion height)."""
    for key, entry in due_entries(ctx.state, UNBONDING_PREFIX, ctx.height):
        amount = _entry_amount(ctx.state, entry)
        pool = _leaving_pool(ctx.state, entry["validator"], entry["left_height"])
        # The last entry out takes the remainder and deletes the pool.
        _set_leaving_pool(ctx.state, entry["validator"], entry["left_height"], {"tokens": pool["tokens"] - amount, "shares": max(pool["shares"] - entry["shares"], 0)})
        ctx.state.delete(key)
        if amount:
            bank.transfer(ctx, UNBONDING_POOL, entry["owner"], amount)
        ctx.emit(UnbondingCompleted(owner=entry["owner"], amount=amount, kind=entry["kind"]))


def _reward_proposer(ctx: Context) -> None:
    """Fees collected in this block (+ block_reward if it carried txs) to the proposer's delegators, per share."""
    fees = bank.balance(ctx.state, bank.FEE_COLLECTOR)
    if fees == 0:
        return  # no txs paid fees: an idle block changes nothing
    operator = operator_of(ctx.state, ctx.block.proposer)
    validator = get_validator(ctx.state, operator) if operator else None
    if validator is None or validator.shares == 0:
        return  # proposer not ours, or nobody bonded to it any more: fees wait for the next block
    params = get_params(ctx.state)
    if params.block_reward:
        bank.mint(ctx, bank.FEE_COLLECTOR, params.block_reward)
    total = fees + params.block_reward
    bank.transfer(ctx, bank.FEE_COLLECTOR, DISTRIBUTION, total)
    # The index rounds down; what it leaves stays in rewards_outstanding for the validator's last leaver.
    index = validator.reward_index + total * REWARD_SCALE // validator.shares
    _put_validator(ctx.state, replace(validator, reward_index=index, rewards_outstanding=validator.rewards_outstanding + total))
    ctx.emit(Rewarded(validator=validator.operator, amount=total))


def update_validator_set(ctx: Context) -> None:
    """Send CometBFT one update per consensus pubkey whose power changed (0 removes), in pubkey order."""
    wanted = {bytes.fromhex(v.pubkey): p for v, p in active_set(ctx.state)}
    if not wanted:
        return  # CometBFT halts on an empty set: keep the last one until someone bonds again
    reported = {k[len(POWER_PREFIX) :]: decode_int(v) for k, v in ctx.state.iter_prefix(POWER_PREFIX)}
    for pubkey in sorted(wanted.keys() | reported.keys()):
        new_power, old_power = wanted.get(pubkey, 0), reported.get(pubkey, 0)
        if new_power == old_power:
            continue
        key = POWER_PREFIX + pubkey
        ctx.state.set(key, encode_int(new_power)) if new_power else ctx.state.delete(key)
        ctx.validator_updates.append(ValidatorUpdate(pubkey, new_power))
        ctx.emit(PowerChanged(validator=operator_of(ctx.state, consensus_address(pubkey)) or "", pubkey=pubkey.hex(), power=new_power))


# --- Queries ----------------------------------------------------------------------


def query_validator(data: bytes) -> bytes:
    """/staking/validator OPERATOR -> Validator JSON."""
    return VALIDATOR_PREFIX + _raw(crypto.parse_address(data.decode()))


def query_params(data: bytes) -> bytes:
    """/staking/params -> Params JSON."""
    return PARAMS_KEY


QUERIES = {"validator": query_validator, "params": query_params}


def view_validators(state: Overlay, data: bytes) -> bytes:
    """/staking/validators [/AFTER] -> a page (abci_app.paging) of validators with their power, in operator address
    order, from the first after operator AFTER."""
    arg, after = paging.split(data)
    if arg:
        raise ValueError("/staking/validators takes no argument but its page cursor (/AFTER)")
    if after:
        crypto.parse_address(after)
    params = get_params(state)
    return paging.page((v.operator, 0, asdict(v) | {"power": power(params, v)}) for v in validators(state, after))


def view_delegations(state: Overlay, data: bytes) -> bytes:
    """/staking/delegations DELEGATOR[/AFTER] -> a page (abci_app.paging) of [{validator, amount (tokens), shares,
    rewards (pending)}] by validator address, from the first after validator AFTER."""
    delegator_text, after = paging.split(data)
    delegator = crypto.parse_address(delegator_text)
    prefix = DELEGATOR_PREFIX + _raw(delegator)

    def records():
        for key, _ in state.iter_prefix(prefix, prefix + _raw(after) if after else b""):
            validator = get_validator(state, _addr(key[len(prefix) :]))
            record = _get_delegation(state, validator.operator, delegator)
            yield validator.operator, 0, {"validator": validator.operator, "amount": validator.value_of(record.shares),
                                          "shares": record.shares, "rewards": pending_rewards(validator, record)}
    return paging.page(records())


def view_unbondings(state: Overlay, data: bytes) -> bytes:
    """/staking/unbondings [OWNER][/AFTER] -> a page (abci_app.paging) of pending unbonding entries, of OWNER if
    given, by completion height, from the first after cursor AFTER (a page's `next`: hex of the entry's key)."""
    owner_text, after = paging.split(data)
    owner = crypto.parse_address(owner_text) if owner_text else None
    start = bytes.fromhex(after)  # ValueError on garbage
    return paging.page((suffix.hex(), size, _unbonding_view(state, entry) if owner is None or entry["owner"] == owner else None)
                       for suffix, size, entry in _unbonding_records(state, start))


VIEWS = {"validators": view_validators, "delegations": view_delegations, "unbondings": view_unbondings}
