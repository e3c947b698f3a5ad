"""bank: balances, transfers, fees, mint and burn.

Other modules move tokens only through the public functions below
(transfer, mint, burn, balance), never through bank's storage keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from abci_app import crypto
from abci_app.context import Context, EventType, ModuleError, decode_int, encode_int, load_params, store_params
from abci_app.state import Overlay
from abci_app.tx import MsgSend

# --- Params ---------------------------------------------------------------------

DENOM = "ugrad"
MAX_MIN_FEE = 10**9  # ugrad (1,000 GRAD)
MAX_BYTE_FEE = 10**6  # ugrad per byte
MAX_FREE_BYTES = 64 * 1024  # a tx's size limit: more would make a big write free


@dataclass(frozen=True)
class Params:
    # State is stored by every node forever, so bytes written are priced: a tx's fee
    # must cover min_fee + byte_fee per byte its message adds beyond free_bytes (runtime.bytes_added).
    min_fee: int = 1  # every tx pays at least this, so spam costs something (enough for a small write: a transfer's two balances)
    byte_fee: int = 10  # per byte of state a message adds beyond free_bytes
    free_bytes: int = 2048  # bytes of state a message may add for min_fee alone

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"bank.params.{name} must be an integer >= 0, got {value!r}")
        # Free txs or free bytes let anyone fill blocks and state at no cost; fees nobody can pay stop every tx,
        # the votes that could lower them included.
        if not 1 <= self.min_fee <= MAX_MIN_FEE:
            raise ValueError(f"bank.params.min_fee must be 1 to {MAX_MIN_FEE}")
        if not 1 <= self.byte_fee <= MAX_BYTE_FEE:
            raise ValueError(f"bank.params.byte_fee must be 1 to {MAX_BYTE_FEE}")
        if self.free_bytes > MAX_FREE_BYTES:
            raise ValueError(f"bank.params.free_bytes must be at most {MAX_FREE_BYTES}")


MAX_FEE_RISE = 10  # one params change may multiply min_fee or byte_fee by at most this (and halve free_bytes at most)


def check_params_change(current: Params, new: Params, state: Overlay | None = None) -> None:
    """What a governance MsgUpdateParams may not do to valid bank params (ValueError says why)."""
    # Fees priced far above what holders can pay would also price out the votes that could lower them again:
    # a rise is gradual, so each step is seen, and voted on, at fees people still pay.
    for name in ("min_fee", "byte_fee"):
        if getattr(new, name) > MAX_FEE_RISE * getattr(current, name):
            raise ValueError(f"bank.params.{name} may rise at most {MAX_FEE_RISE}x in one change: "
                             f"{getattr(current, name)} -> at most {MAX_FEE_RISE * getattr(current, name)}")
    if new.free_bytes < current.free_bytes // 2:  # fewer free bytes raise every larger tx's fee too
        raise ValueError(f"bank.params.free_bytes may fall at most by half in one change: {current.free_bytes} -> at least {current.free_bytes // 2}")


def required_fee(params: Params, bytes_written: int) -> int:
    """The least fee a tx whose message writes `bytes_written` bytes of state must carry."""
    return params.min_fee + params.byte_fee * max(0, bytes_written - params.free_bytes)


_MODULE_ACCOUNTS: set[str] = set()  # every module_address(): MsgSend may not pay them (membership tests only)


def module_address(name: str) -> str:
    """A keyless account owned by a module: no private key can sign for it, and MsgSend cannot pay it."""
    address = crypto.bech32_encode(crypto.ADDRESS_HRP, hashlib.sha256(b"module/" + name.encode()).digest()[:20])
    _MODULE_ACCOUNTS.add(address)
    return address


FEE_COLLECTOR = module_address("fee_collector")

# --- Storage --------------------------------------------------------------------

PREFIX = b"bank/"
SUPPLY_KEY = PREFIX + b"supply"  # total tokens in existence
PARAMS_KEY = PREFIX + b"params"  # Params as canonical JSON


def balance_key(address: str) -> bytes:
    """bank/balance/<20-byte address> -> amount (decimal); absent means 0."""
    return PREFIX + b"balance/" + crypto.address_raw(address)


def balance(state: Overlay, address: str) -> int:
    return decode_int(state.get(balance_key(address)))


def _set_balance(state: Overlay, address: str, amount: int) -> None:
    # Zero balances are deleted so an emptied account leaves no trace in the app hash.
    if amount == 0:
        state.delete(balance_key(address))
    else:
        state.set(balance_key(address), encode_int(amount))


def supply(state: Overlay) -> int:
    return decode_int(state.get(SUPPLY_KEY))


def get_params(state: Overlay) -> Params:
    return load_params(state, PARAMS_KEY, Params)


# --- Events ---------------------------------------------------------------------


@dataclass(frozen=True)
class Transfer(EventType):
    """Tokens moved between accounts."""

    type = "transfer"
    sender: str
    recipient: str
    amount: int


@dataclass(frozen=True)
class FeePaid(EventType):
    """A tx's fee went to the fee collector."""

    type = "fee_paid"
    payer: str
    amount: int


@dataclass(frozen=True)
class Minted(EventType):
    """New tokens were created."""

    type = "minted"
    recipient: str
    amount: int


@dataclass(frozen=True)
class Burned(EventType):
    """Tokens were destroyed."""

    type = "burned"
    account: str
    amount: int


# --- Errors ---------------------------------------------------------------------


class BankError(ModuleError):
    codespace = "bank"


class InsufficientBalance(BankError):
    """The sender's balance is below the amount it tries to move."""

    code = 1


class InvalidAddress(BankError):
    """The recipient is not a valid gc1… address, or is a module account (which only its module pays)."""

    code = 2


class InvalidAmount(BankError):
    """Amounts are positive integers in the smallest unit."""

    code = 3


class CannotPayFee(ModuleError):
    """The signer cannot cover the tx's fee (a runtime code: fees are checked before any msg)."""

    codespace = "runtime"
    code = 7


# --- Public API for other modules ---------------------------------------------------


def transfer(ctx: Context, sender: str, recipient: str, amount: int) -> None:
    """Move `amount` from sender to recipient, or raise without writing anything."""
    if amount <= 0:
        raise InvalidAmount(f"invalid amount {amount}: must be a positive integer of {DENOM}")
    available = balance(ctx.state, sender)
    if available < amount:
        raise InsufficientBalance(f"insufficient balance: {sender} has {available}{DENOM}, needs {amount}{DENOM}")
    _set_balance(ctx.state, sender, available - amount)
    _set_balance(ctx.state, recipient, balance(ctx.state, recipient) + amount)
    ctx.emit(Transfer(sender=sender, recipient=recipient, amount=amount))


def is_module_account(address: str) -> bool:
    """Whether `address` is a module's keyless account (only its module may pay it)."""
    return address in _MODULE_ACCOUNTS


def mint(ctx: Context, recipient: str, amount: int) -> None:
    assert amount > 0
    _set_balance(ctx.state, recipient, balance(ctx.state, recipient) + amount)
    ctx.state.set(SUPPLY_KEY, encode_int(supply(ctx.state) + amount))
    ctx.emit(Minted(recipient=recipient, amount=amount))


def burn(ctx: Context, account: str, amount: int) -> None:
    available = balance(ctx.state, account)
    if available < amount:
        raise InsufficientBalance(f"insufficient balance: {account} has {available}{DENOM}, cannot burn {amount}{DENOM}")
    _set_balance(ctx.state, account, available - amount)
    ctx.state.set(SUPPLY_KEY, encode_int(supply(ctx.state) - amount))
    ctx.emit(Burned(account=account, amount=amount))


def charge_fee(ctx: Context, payer: str, fee: int) -> None:
    """Move a tx's fee to the fee collector (the runtime calls this before the msg)."""
    available = balance(ctx.state, payer)
    if available < fee:
        raise CannotPayFee(f"insufficient funds for fee: {payer} has {available}{DENOM}, fee is {fee}{DENOM}")
    if fee:
        _set_balance(ctx.state, payer, available - fee)
        _set_balance(ctx.state, FEE_COLLECTOR, balance(ctx.state, FEE_COLLECTOR) + fee)
        ctx.emit(FeePaid(payer=payer, amount=fee))


# --- Calls ------------------------------------------------------------------------


def send(ctx: Context, signer: str, msg: MsgSend) -> None:
    """MsgSend: the signer pays `amount` to `recipient`."""
    try:
        recipient = crypto.parse_address(msg.recipient)
    except crypto.AddressError as exc:
        raise InvalidAddress(f"invalid recipient address '{msg.recipient}': {exc}") from None
    if recipient in _MODULE_ACCOUNTS:  # as the Cosmos SDK blocks them: tokens there would break the module's books
        raise InvalidAddress(f"invalid recipient address '{recipient}': a module account, which only its module pays")
    transfer(ctx, signer, recipient, msg.amount)


CALLS = {"send": send}  # TxBody oneof field -> call

# --- Genesis ----------------------------------------------------------------------


def genesis(ctx: Context, config: dict) -> None:
    """bank genesis: {"params": {...}, "balances": [{"address", "amount"}]}."""
    state = ctx.state
    params = Params(**config.get("params", {}))
    params.validate()
    store_params(state, PARAMS_KEY, params)
    total = 0
    seen: set[str] = set()
    for entry in config.get("balances", []):
        address = crypto.parse_address(entry["address"])
        amount = entry["amount"]
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ValueError(f"genesis balance of {address} must be a positive integer, got {amount!r}")
        if address in seen:
            raise ValueError(f"genesis lists {address} twice")
        seen.add(address)
        _set_balance(state, address, amount)
        total += amount
    state.set(SUPPLY_KEY, encode_int(supply(state) + total))


# --- Queries ----------------------------------------------------------------------
# Each query maps its argument to one state key; the app reads the value at the
# asked height from the store, with a Merkle proof when asked.


def query_balance(data: bytes) -> bytes:
    """/bank/balance ADDRESS -> amount (decimal; empty = 0)."""
    return balance_key(crypto.parse_address(data.decode()))


def query_supply(data: bytes) -> bytes:
    """/bank/supply -> total supply (decimal)."""
    return SUPPLY_KEY


def query_params(data: bytes) -> bytes:
    """/bank/params -> Params as JSON."""
    return PARAMS_KEY


QUERIES = {"balance": query_balance, "supply": query_supply, "params": query_params}
