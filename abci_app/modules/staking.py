"""staking: bonded validators drive CometBFT's validator set; trainer bonds; slashing, jailing, rewards.

A validator's voting power is its bonded tokens divided by `power_unit`.
Bonded tokens sit in module accounts (bonded, unbonding and trainer pools) so
the bank's supply invariant keeps holding: supply = sum of all balances.

Fees and block rewards go to the block's proposer and are split among its
delegators pro rata (integer division; the remainder to the operator), so
stake earns in proportion to the blocks it proposes, i.e. to its power.
State changes only in blocks that carry txs, misbehavior or missed
signatures, so an idle chain stays idle with `create_empty_blocks = false`.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, replace

from abci_app import crypto
from abci_app.context import (
    Context,
    ModuleError,
    ValidatorUpdate,
    decode_int,
    decode_json,
    encode_int,
    encode_json,
)
from abci_app.modules import bank
from abci_app.state import Overlay
from abci_app.tx import tx_pb2

# --- Params ---------------------------------------------------------------------

BPS = 10_000  # fractions are integer basis points: no floats in consensus code


@dataclass(frozen=True)
class Params:
    max_validators: int = 100
    min_self_bond: int = 1_000_000
    power_unit: int = 1_000_000  # bonded tokens per unit of CometBFT voting power
    unbonding_blocks: int = 20
    trainer_unbonding_blocks: int = 20
    jail_blocks: int = 20
    double_sign_slash_bps: int = 500  # 5%
    double_sign_jail_blocks: int = 1_000
    downtime_window: int = 20  # heights looked back for missed signatures
    downtime_max_missed: int = 10  # jailed once it misses this many in the window
    downtime_slash_bps: int = 10  # 0.1%
    block_reward: int = 0  # minted per block that carries txs, to the proposer's delegators

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"staking.params.{name} must be a non-negative integer")
        if self.power_unit == 0 or self.downtime_window == 0 or self.max_validators == 0:
            raise ValueError("staking.params power_unit, downtime_window and max_validators must be positive")
        if self.double_sign_slash_bps > BPS or self.downtime_slash_bps > BPS:
            raise ValueError("staking slash fractions are basis points: at most 10000")


BONDED_POOL = bank.module_address("bonded_pool")
UNBONDING_POOL = bank.module_address("unbonding_pool")
TRAINER_POOL = bank.module_address("trainer_pool")

# --- Storage --------------------------------------------------------------------

PREFIX = b"staking/"
PARAMS_KEY = PREFIX + b"params"
UNBONDING_SEQ_KEY = PREFIX + b"unbonding_seq"
VALIDATOR_PREFIX = PREFIX + b"validator/"  # <operator 20> -> Validator JSON
CONSENSUS_PREFIX = PREFIX + b"cons/"  # <consensus address 20> -> operator 20 bytes
DELEGATION_PREFIX = PREFIX + b"delegation/"  # <operator 20><delegator 20> -> amount
POWER_PREFIX = PREFIX + b"power/"  # <operator 20> -> {"pubkey", "power"} last sent to CometBFT
UNBONDING_PREFIX = PREFIX + b"unbonding/"  # <completion height 8 BE><seq 8 BE> -> Unbonding JSON
TRAINER_PREFIX = PREFIX + b"trainer/"  # <trainer 20> -> bonded amount
MISSED_PREFIX = PREFIX + b"missed/"  # <consensus address 20> -> heights of missed signatures


_raw = crypto.address_raw


def _addr(raw: bytes) -> str:
    return crypto.bech32_encode(crypto.ADDRESS_HRP, raw)


def consensus_address(pubkey: bytes) -> bytes:
    """CometBFT's validator address: sha256(ed25519 pubkey)[:20]."""
    return crypto.address_bytes(pubkey)


@dataclass(frozen=True)
class Validator:
    operator: str
    pubkey: str  # hex of the ed25519 consensus key
    moniker: str
    tokens: int  # sum of its delegations
    jailed_until: int = 0  # height from which unjail is allowed; 0 = not jailed

    @property
    def jailed(self) -> bool:
        return self.jailed_until > 0


def get_params(state: Overlay) -> Params:
    raw = decode_json(state.get(PARAMS_KEY))
    return Params(**raw) if raw else Params()


def get_validator(state: Overlay, operator: str) -> Validator | None:
    raw = decode_json(state.get(VALIDATOR_PREFIX + _raw(operator)))
    return Validator(**raw) if raw else None


def _put_validator(state: Overlay, validator: Validator) -> None:
    state.set(VALIDATOR_PREFIX + _raw(validator.operator), encode_json(asdict(validator)))


def validators(state: Overlay) -> list[Validator]:
    """All validators, ordered by operator address bytes."""
    return [Validator(**decode_json(v)) for _, v in state.iter_prefix(VALIDATOR_PREFIX)]


def operator_of(state: Overlay, consensus_addr: bytes) -> str | None:
    raw = state.get(CONSENSUS_PREFIX + consensus_addr)
    return _addr(raw) if raw else None


def delegation(state: Overlay, operator: str, delegator: str) -> int:
    return decode_int(state.get(DELEGATION_PREFIX + _raw(operator) + _raw(delegator)))


def _set_delegation(state: Overlay, operator: str, delegator: str, amount: int) -> None:
    key = DELEGATION_PREFIX + _raw(operator) + _raw(delegator)
    state.set(key, encode_int(amount)) if amount else state.delete(key)


def delegations_to(state: Overlay, operator: str) -> list[tuple[str, int]]:
    """(delegator, amount) of one validator, in delegator byte order."""
    prefix = DELEGATION_PREFIX + _raw(operator)
    return [(_addr(k[len(prefix) :]), int(v)) for k, v in state.iter_prefix(prefix)]


def trainer_bond(state: Overlay, trainer: str) -> int:
    """Collateral the training module may slash."""
    return decode_int(state.get(TRAINER_PREFIX + _raw(trainer)))


def _set_trainer_bond(state: Overlay, trainer: str, amount: int) -> None:
    key = TRAINER_PREFIX + _raw(trainer)
    state.set(key, encode_int(amount)) if amount else state.delete(key)


def power(params: Params, validator: Validator) -> int:
    return 0 if validator.jailed else validator.tokens // params.power_unit


def active_set(state: Overlay) -> list[tuple[Validator, int]]:
    """The validators CometBFT should have: top max_validators by power (ties by operator)."""
    params = get_params(state)
    ranked = [(v, power(params, v)) for v in validators(state)]
    ranked = sorted((vp for vp in ranked if vp[1] > 0), key=lambda vp: (-vp[1], _raw(vp[0].operator)))
    return ranked[: params.max_validators]


def total_power(state: Overlay) -> int:
    return sum(p for _, p in active_set(state))


def active_powers(state: Overlay) -> dict[str, int]:
    """Operator -> voting power of the active set: who may attest, and with what weight."""
    return {v.operator: p for v, p in active_set(state)}


# --- Events ---------------------------------------------------------------------
# validator_created(operator, pubkey, moniker, amount)
# delegated(delegator, validator, amount)
# unbonding_started(owner, validator, amount, completion_height, kind)
# unbonding_completed(owner, amount, kind)
# validator_edited(operator, moniker)
# unjailed(operator)
# trainer_bonded(trainer, amount)
# slashed(validator, amount, reason)          reason: double_sign | downtime | training penalties
# jailed(validator, until, reason)
# trainer_slashed(trainer, amount, recipient)
# rewarded(validator, amount)                 fees + block reward shared by its delegators
# power_changed(validator, power)             sent to CometBFT as a validator update

# --- Errors ---------------------------------------------------------------------


class StakingError(ModuleError):
    codespace = "staking"


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


class InsufficientTrainerBond(StakingError):
    """Unbonding more trainer collateral than is bonded."""

    code = 11


# --- Guards -----------------------------------------------------------------------


def _positive(amount: int) -> None:
    if amount <= 0:
        raise InvalidAmount(f"invalid amount {amount}: must be a positive integer of {bank.DENOM}")


def _moniker(text: str) -> str:
    if not 1 <= len(text) <= 64 or not text.isprintable():
        raise InvalidMoniker(f"invalid moniker {text!r}: use 1 to 64 printable characters")
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
        raise UnknownValidator(f"invalid validator address '{text}': {exc}") from None


# --- Calls ------------------------------------------------------------------------


def create_validator(ctx: Context, signer: str, msg: tx_pb2.MsgCreateValidator) -> None:
    """MsgCreateValidator: the signer becomes an operator with a self-bond."""
    params = get_params(ctx.state)
    if len(msg.pubkey) != crypto.PUBKEY_BYTES:
        raise InvalidPubkey(f"invalid consensus pubkey: {len(msg.pubkey)} bytes, expected a 32-byte ed25519 key")
    moniker = _moniker(msg.moniker)
    if get_validator(ctx.state, signer) is not None:
        raise DuplicateValidator(f"{signer} already operates a validator")
    if operator_of(ctx.state, consensus_address(msg.pubkey)) is not None:
        raise DuplicatePubkey("that consensus pubkey is already used by another validator")
    if msg.amount < params.min_self_bond:
        raise BelowMinSelfBond(f"self-bond {msg.amount}{bank.DENOM} is below the minimum {params.min_self_bond}{bank.DENOM}")
    bank.transfer(ctx, signer, BONDED_POOL, msg.amount)
    _put_validator(ctx.state, Validator(signer, msg.pubkey.hex(), moniker, msg.amount))
    ctx.state.set(CONSENSUS_PREFIX + consensus_address(msg.pubkey), _raw(signer))
    _set_delegation(ctx.state, signer, signer, msg.amount)
    ctx.emit("validator_created", operator=signer, pubkey=msg.pubkey.hex(), moniker=moniker, amount=msg.amount)


def delegate(ctx: Context, signer: str, msg: tx_pb2.MsgDelegate) -> None:
    """MsgDelegate: bond tokens to a validator, raising its power."""
    _positive(msg.amount)
    validator = _existing(ctx.state, _operator_address(msg.validator))
    bank.transfer(ctx, signer, BONDED_POOL, msg.amount)
    _set_delegation(ctx.state, validator.operator, signer, delegation(ctx.state, validator.operator, signer) + msg.amount)
    _put_validator(ctx.state, replace(validator, tokens=validator.tokens + msg.amount))
    ctx.emit("delegated", delegator=signer, validator=validator.operator, amount=msg.amount)


def undelegate(ctx: Context, signer: str, msg: tx_pb2.MsgUndelegate) -> None:
    """MsgUndelegate: unbond tokens; they return after unbonding_blocks."""
    _positive(msg.amount)
    validator = _existing(ctx.state, _operator_address(msg.validator))
    bonded = delegation(ctx.state, validator.operator, signer)
    if bonded < msg.amount:
        raise InsufficientDelegation(f"cannot undelegate {msg.amount}{bank.DENOM}: {signer} has {bonded}{bank.DENOM} delegated to {validator.operator}")
    params = get_params(ctx.state)
    bank.transfer(ctx, BONDED_POOL, UNBONDING_POOL, msg.amount)
    _set_delegation(ctx.state, validator.operator, signer, bonded - msg.amount)
    _reduce_tokens(ctx.state, validator, msg.amount)
    _queue_unbonding(ctx, signer, msg.amount, params.unbonding_blocks, "delegation", validator.operator)


def edit_validator(ctx: Context, signer: str, msg: tx_pb2.MsgEditValidator) -> None:
    """MsgEditValidator: change the signer's moniker."""
    validator = _existing(ctx.state, signer)
    moniker = _moniker(msg.moniker)
    _put_validator(ctx.state, replace(validator, moniker=moniker))
    ctx.emit("validator_edited", operator=signer, moniker=moniker)


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
    ctx.emit("unjailed", operator=signer)


def bond_trainer(ctx: Context, signer: str, msg: tx_pb2.MsgBondTrainer) -> None:
    """MsgBondTrainer: put up collateral for training work."""
    _positive(msg.amount)
    bank.transfer(ctx, signer, TRAINER_POOL, msg.amount)
    _set_trainer_bond(ctx.state, signer, trainer_bond(ctx.state, signer) + msg.amount)
    ctx.emit("trainer_bonded", trainer=signer, amount=msg.amount)


def unbond_trainer(ctx: Context, signer: str, msg: tx_pb2.MsgUnbondTrainer) -> None:
    """MsgUnbondTrainer: start returning collateral after trainer_unbonding_blocks."""
    _positive(msg.amount)
    bonded = trainer_bond(ctx.state, signer)
    if bonded < msg.amount:
        raise InsufficientTrainerBond(f"cannot unbond {msg.amount}{bank.DENOM}: {signer} has {bonded}{bank.DENOM} trainer bond")
    bank.transfer(ctx, TRAINER_POOL, UNBONDING_POOL, msg.amount)
    _set_trainer_bond(ctx.state, signer, bonded - msg.amount)
    _queue_unbonding(ctx, signer, msg.amount, get_params(ctx.state).trainer_unbonding_blocks, "trainer", "")


CALLS = {
    "create_validator": create_validator,
    "delegate": delegate,
    "undelegate": undelegate,
    "edit_validator": edit_validator,
    "unjail": unjail,
    "bond_trainer": bond_trainer,
    "unbond_trainer": unbond_trainer,
}

# --- Internal state transitions ---------------------------------------------------


def _reduce_tokens(state: Overlay, validator: Validator, amount: int) -> None:
    """Lower a validator's tokens; a validator with none left is removed (power 0 is sent in end_block)."""
    remaining = validator.tokens - amount
    if remaining > 0:
        _put_validator(state, replace(validator, tokens=remaining))
        return
    cons = consensus_address(bytes.fromhex(validator.pubkey))
    state.delete(VALIDATOR_PREFIX + _raw(validator.operator))
    state.delete(CONSENSUS_PREFIX + cons)
    state.delete(MISSED_PREFIX + cons)


def _queue_unbonding(ctx: Context, owner: str, amount: int, delay: int, kind: str, validator: str) -> None:
    completion = ctx.height + delay
    seq = decode_int(ctx.state.get(UNBONDING_SEQ_KEY))
    ctx.state.set(UNBONDING_SEQ_KEY, encode_int(seq + 1))
    key = UNBONDING_PREFIX + completion.to_bytes(8, "big") + seq.to_bytes(8, "big")
    ctx.state.set(key, encode_json({"owner": owner, "amount": amount, "kind": kind, "validator": validator, "completion_height": completion}))
    ctx.emit("unbonding_started", owner=owner, validator=validator, amount=amount, completion_height=completion, kind=kind)


def unbondings(state: Overlay) -> list[dict]:
    return [decode_json(v) for _, v in state.iter_prefix(UNBONDING_PREFIX)]


def _burn_stake(ctx: Context, validator: Validator, bps: int, reason: str) -> int:
    """Burn `bps` of every delegation to `validator`; returns the amount burned."""
    burned = 0
    for delegator, amount in delegations_to(ctx.state, validator.operator):
        cut = amount * bps // BPS
        if cut:
            _set_delegation(ctx.state, validator.operator, delegator, amount - cut)
            burned += cut
    if burned:
        bank.burn(ctx, BONDED_POOL, burned)
        current = get_validator(ctx.state, validator.operator)
        _put_validator(ctx.state, replace(current, tokens=current.tokens - burned))
        ctx.emit("slashed", validator=validator.operator, amount=burned, reason=reason)
    return burned


def slash_validator(ctx: Context, validator: Validator, bps: int, jail_blocks: int, reason: str) -> int:
    """Burn `bps` of the validator's stake and jail it; returns the amount burned."""
    burned = _burn_stake(ctx, validator, bps, reason)
    until = ctx.height + jail_blocks
    current = get_validator(ctx.state, validator.operator)
    _put_validator(ctx.state, replace(current, jailed_until=max(until, current.jailed_until)))
    ctx.emit("jailed", validator=validator.operator, until=until, reason=reason)
    return burned


def penalize(ctx: Context, operator: str, bps: int, reason: str) -> int:
    """For the training module: a small burn without jail (e.g. a lazy or wrong verifier)."""
    validator = get_validator(ctx.state, operator)
    return _burn_stake(ctx, validator, bps, reason) if validator else 0


def slash_trainer(ctx: Context, trainer: str, bps: int, recipient: str | None = None) -> int:
    """For the training module: take `bps` of a trainer's bond, to `recipient` or burned."""
    bonded = trainer_bond(ctx.state, trainer)
    amount = bonded * bps // BPS
    if amount == 0:
        return 0
    _set_trainer_bond(ctx.state, trainer, bonded - amount)
    if recipient is None:
        bank.burn(ctx, TRAINER_POOL, amount)
    else:
        bank.transfer(ctx, TRAINER_POOL, recipient, amount)
    ctx.emit("trainer_slashed", trainer=trainer, amount=amount, recipient=recipient or "burned")
    return amount


# --- Genesis ----------------------------------------------------------------------


def genesis(ctx: Context, config: dict) -> None:
    """staking genesis: {"params": {...}, "validators": [{"operator", "pubkey" (hex or base64), "moniker", "self_bond"}]}.

    Genesis self-bonds are minted into the bonded pool (they count in the supply).
    """
    params = Params(**config.get("params", {}))
    params.validate()
    ctx.state.set(PARAMS_KEY, encode_json(asdict(params)))
    for entry in config.get("validators", []):
        operator = crypto.parse_address(entry["operator"])
        pubkey = _decode_pubkey(entry["pubkey"])
        self_bond = entry["self_bond"]
        if get_validator(ctx.state, operator) is not None or operator_of(ctx.state, consensus_address(pubkey)):
            raise ValueError(f"genesis validator {operator} is listed twice (or shares a pubkey)")
        if not isinstance(self_bond, int) or self_bond < max(params.min_self_bond, params.power_unit):
            raise ValueError(f"genesis validator {operator}: self_bond must be an integer >= min_self_bond and power_unit")
        bank.mint(ctx, BONDED_POOL, self_bond)
        _put_validator(ctx.state, Validator(operator, pubkey.hex(), _moniker(entry.get("moniker", operator[:12])), self_bond))
        ctx.state.set(CONSENSUS_PREFIX + consensus_address(pubkey), _raw(operator))
        _set_delegation(ctx.state, operator, operator, self_bond)
    _sync_validator_set(ctx)


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
        if operator is None:
            continue  # already unbonded and removed: nothing left to slash
        slash_validator(ctx, _existing(ctx.state, operator), params.double_sign_slash_bps, params.double_sign_jail_blocks, "double_sign")
    for vote in ctx.block.votes:
        if not vote.signed:
            _record_missed(ctx, params, vote.validator)


def _record_missed(ctx: Context, params: Params, consensus_addr: bytes) -> None:
    """Keep the heights of recent misses; jail once there are downtime_max_missed in the window."""
    operator = operator_of(ctx.state, consensus_addr)
    if operator is None:
        return
    validator = _existing(ctx.state, operator)
    if validator.jailed:
        return
    oldest = ctx.height - params.downtime_window
    missed = [h for h in decode_json(ctx.state.get(MISSED_PREFIX + consensus_addr)) or [] if h > oldest] + [ctx.height]
    if len(missed) >= params.downtime_max_missed:
        ctx.state.delete(MISSED_PREFIX + consensus_addr)
        slash_validator(ctx, validator, params.downtime_slash_bps, params.jail_blocks, "downtime")
    else:
        ctx.state.set(MISSED_PREFIX + consensus_addr, encode_json(missed))


def end_block(ctx: Context) -> None:
    _complete_unbondings(ctx)
    _reward_proposer(ctx)
    _sync_validator_set(ctx)


def _complete_unbondings(ctx: Context) -> None:
    due = [(k, decode_json(v)) for k, v in ctx.state.iter_prefix(UNBONDING_PREFIX) if int.from_bytes(k[len(UNBONDING_PREFIX) : len(UNBONDING_PREFIX) + 8], "big") <= ctx.height]
    for key, entry in due:
        ctx.state.delete(key)
        bank.transfer(ctx, UNBONDING_POOL, entry["owner"], entry["amount"])
        ctx.emit("unbonding_completed", owner=entry["owner"], amount=entry["amount"], kind=entry["kind"])


def _reward_proposer(ctx: Context) -> None:
    """Fees collected in this block (+ block_reward if it carried txs) to the proposer's delegators."""
    fees = bank.balance(ctx.state, bank.FEE_COLLECTOR)
    if fees == 0:
        return  # no txs paid fees: an idle block changes nothing
    operator = operator_of(ctx.state, ctx.block.proposer)
    if operator is None:
        return  # proposer not (or no longer) ours: fees wait for the next block
    params = get_params(ctx.state)
    if params.block_reward:
        bank.mint(ctx, bank.FEE_COLLECTOR, params.block_reward)
    total = fees + params.block_reward
    validator = _existing(ctx.state, operator)
    shares = delegations_to(ctx.state, operator)
    paid = 0
    for delegator, amount in shares:
        cut = total * amount // validator.tokens
        if cut and delegator != operator:
            bank.transfer(ctx, bank.FEE_COLLECTOR, delegator, cut)
            paid += cut
    bank.transfer(ctx, bank.FEE_COLLECTOR, operator, total - paid)  # operator's share + rounding remainder
    ctx.emit("rewarded", validator=operator, amount=total)


def _sync_validator_set(ctx: Context) -> None:
    """Send CometBFT a validator update for every power that changed (0 removes)."""
    wanted = {_raw(v.operator): (v.pubkey, p) for v, p in active_set(ctx.state)}
    reported = {k[len(POWER_PREFIX) :]: decode_json(v) for k, v in ctx.state.iter_prefix(POWER_PREFIX)}
    for operator_raw in sorted(set(wanted) | set(reported)):
        pubkey, new_power = wanted.get(operator_raw, (reported.get(operator_raw, {}).get("pubkey"), 0))
        old_power = reported.get(operator_raw, {}).get("power", 0)
        if new_power == old_power:
            continue
        key = POWER_PREFIX + operator_raw
        ctx.state.set(key, encode_json({"pubkey": pubkey, "power": new_power})) if new_power else ctx.state.delete(key)
        ctx.validator_updates.append(ValidatorUpdate(bytes.fromhex(pubkey), new_power))
        ctx.emit("power_changed", validator=_addr(operator_raw), power=new_power)


# --- Queries ----------------------------------------------------------------------


def query_validator(data: bytes) -> bytes:
    """/staking/validator OPERATOR -> Validator JSON."""
    return VALIDATOR_PREFIX + _raw(crypto.parse_address(data.decode()))


def query_trainer_bond(data: bytes) -> bytes:
    """/staking/trainer_bond ADDRESS -> amount."""
    return TRAINER_PREFIX + _raw(crypto.parse_address(data.decode()))


def query_params(data: bytes) -> bytes:
    """/staking/params -> Params JSON."""
    return PARAMS_KEY


QUERIES = {"validator": query_validator, "trainer_bond": query_trainer_bond, "params": query_params}


def view_validators(state: Overlay, data: bytes) -> bytes:
    """/staking/validators -> every validator with its power, operator order."""
    params = get_params(state)
    return encode_json([asdict(v) | {"power": power(params, v)} for v in validators(state)])


def view_delegations(state: Overlay, data: bytes) -> bytes:
    """/staking/delegations DELEGATOR -> [{validator, amount}]."""
    delegator = _raw(crypto.parse_address(data.decode()))
    out = []
    for key, value in state.iter_prefix(DELEGATION_PREFIX):
        operator_raw, delegator_raw = key[len(DELEGATION_PREFIX) : -20], key[-20:]
        if delegator_raw == delegator:
            out.append({"validator": _addr(operator_raw), "amount": int(value)})
    return encode_json(out)


def view_unbondings(state: Overlay, data: bytes) -> bytes:
    """/staking/unbondings [OWNER] -> pending unbonding entries, by completion height."""
    owner = crypto.parse_address(data.decode()) if data else None
    return encode_json([u for u in unbondings(state) if owner is None or u["owner"] == owner])


VIEWS = {"validators": view_validators, "delegations": view_delegations, "unbondings": view_unbondings}
