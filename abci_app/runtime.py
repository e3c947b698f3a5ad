"""The runtime composes the modules: tx decode -> verify -> fee and nonce -> route -> events.

Modules never see raw bytes: the runtime owns decoding, signatures, chain id,
nonces and fees, then calls one module function with the decoded message.
Every rule here is deterministic: integer arithmetic on state, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from abci_app import tx as txcodec
from abci_app.context import Context, Event, ModuleError
from abci_app.modules import auth, bank, datasets, registry, staking, training
from abci_app.state import Overlay

# Module name -> module, in the fixed order genesis and block hooks run.
MODULES = {"auth": auth, "bank": bank, "staking": staking, "datasets": datasets, "registry": registry, "training": training}

# TxBody oneof field -> (module name, call). Field numbers in tx.proto are the
# stable call indices.
CALLS: dict[str, tuple[str, Callable[[Context, str, Message], None]]] = {
    name: (module_name, call)
    for module_name, module in MODULES.items()
    for name, call in getattr(module, "CALLS", {}).items()
}

CHAIN_ID_KEY = b"runtime/chain_id"

# --- Errors ---------------------------------------------------------------------


class MalformedTx(ModuleError):
    """Bytes that do not decode as a GradientChain tx."""

    code = 1


class TxTooLarge(ModuleError):
    """A tx over MAX_TX_BYTES."""

    code = 2


class BadSignature(ModuleError):
    """The signature does not verify for the body, chain id and pubkey."""

    code = 3


class WrongChainId(ModuleError):
    """A tx signed for another chain."""

    code = 4


class FeeTooLow(ModuleError):
    """The fee is below the chain's minimum."""

    code = 6


class UnknownMessage(ModuleError):
    """A message type this chain does not route."""

    code = 8


# auth.BadNonce (code 5) and bank.CannotPayFee (code 7) complete the runtime table.

# --- Results --------------------------------------------------------------------


@dataclass
class TxResult:
    code: int = 0
    codespace: str = ""
    log: str = ""
    events: list[Event] = field(default_factory=list)

    @classmethod
    def failed(cls, error: ModuleError, events: list[Event] | None = None) -> "TxResult":
        return cls(code=error.code, codespace=error.codespace, log=error.log, events=events or [])


# --- Genesis --------------------------------------------------------------------


def genesis(ctx: Context, app_state: dict) -> None:
    """Write every module's genesis; unknown sections are an error, not silently ignored."""
    unknown = sorted(set(app_state) - set(MODULES))
    if unknown:
        raise ValueError(f"genesis app_state has unknown modules: {', '.join(unknown)}")
    ctx.state.set(CHAIN_ID_KEY, ctx.chain_id.encode())
    for name, module in MODULES.items():
        if hasattr(module, "genesis"):
            module.genesis(ctx, app_state.get(name, {}))


def chain_id(state: Overlay) -> str:
    raw = state.get(CHAIN_ID_KEY)
    return raw.decode() if raw else ""


# --- Transactions ---------------------------------------------------------------


def decode_and_verify(state: Overlay, raw: bytes) -> txcodec.SignedTx:
    """Stateless checks plus chain id: size, decoding, message type, signature."""
    if len(raw) > txcodec.MAX_TX_BYTES:
        raise TxTooLarge(f"tx is {len(raw)} bytes, limit is {txcodec.MAX_TX_BYTES}")
    try:
        signed = txcodec.decode(raw)
    except txcodec.TxDecodeError as exc:
        raise MalformedTx(str(exc)) from None
    if signed.msg_name not in CALLS:
        raise UnknownMessage(f"unknown message type '{signed.msg_name}'")
    expected_chain = chain_id(state)
    if signed.body.chain_id != expected_chain:
        raise WrongChainId(f"wrong chain id: tx is for '{signed.body.chain_id}', this chain is '{expected_chain}'")
    if not signed.signature_valid():
        raise BadSignature("bad signature: it does not match the tx body, chain id and public key")
    return signed


def ante(state: Overlay, raw: bytes, nonce_window: int = 0) -> txcodec.SignedTx:
    """Every check a tx must pass before it may pay a fee; writes nothing."""
    signed = decode_and_verify(state, raw)
    auth.check_nonce(state, signed.signer, signed.body.nonce, nonce_window)
    min_fee = bank.get_params(state).min_fee
    if signed.body.fee < min_fee:
        raise FeeTooLow(f"fee {signed.body.fee}{bank.DENOM} is below the minimum {min_fee}{bank.DENOM}")
    if bank.balance(state, signed.signer) < signed.body.fee:
        have = bank.balance(state, signed.signer)
        raise bank.CannotPayFee(f"insufficient funds for fee: {signed.signer} has {have}{bank.DENOM}, fee is {signed.body.fee}{bank.DENOM}")
    return signed


def execute(block: Context, raw: bytes) -> TxResult:
    """Apply one tx to the block. A tx that passes ante pays its fee and uses its
    nonce even when its message fails; the message's own writes are all-or-nothing."""
    try:
        signed = ante(block.state, raw)
    except ModuleError as exc:
        return TxResult.failed(exc)
    tx_ctx = block.child()
    bank.charge_fee(tx_ctx, signed.signer, signed.body.fee)
    auth.bump_nonce(tx_ctx.state, signed.signer)
    module, call = CALLS[signed.msg_name]
    tx_ctx.emit("message", action=signed.msg_name, module=module, sender=signed.signer, nonce=signed.body.nonce)
    msg_ctx = tx_ctx.child()
    result = TxResult()
    try:
        call(msg_ctx, signed.signer, signed.msg)
        tx_ctx.merge(msg_ctx)
    except ModuleError as exc:
        result = TxResult.failed(exc)
    block.merge(tx_ctx)
    result.events = tx_ctx.events
    return result


def order_by_nonce(raws: list[bytes]) -> list[bytes]:
    """Reorder each sender's txs by nonce, keeping the slots each sender had.

    The mempool keeps arrival order, and a sender's nonce n+1 may arrive first;
    sorting within the sender's own slots makes such a block valid without
    moving anyone else's txs. Undecodable txs keep their place (and fail later).
    """
    slots: dict[bytes, list[int]] = {}
    by_sender: dict[bytes, list[tuple[int, int, bytes]]] = {}
    for index, raw in enumerate(raws):
        try:
            signed = txcodec.decode(raw)
        except txcodec.TxDecodeError:
            continue
        slots.setdefault(signed.pubkey, []).append(index)
        by_sender.setdefault(signed.pubkey, []).append((signed.body.nonce, index, raw))
    ordered = list(raws)
    for pubkey, indices in slots.items():
        for slot, (_, _, raw) in zip(indices, sorted(by_sender[pubkey])):
            ordered[slot] = raw
    return ordered


# --- Block hooks ----------------------------------------------------------------


def begin_block(ctx: Context) -> None:
    for module in MODULES.values():
        if hasattr(module, "begin_block"):
            module.begin_block(ctx)


def end_block(ctx: Context) -> None:
    for module in MODULES.values():
        if hasattr(module, "end_block"):
            module.end_block(ctx)


# --- Queries --------------------------------------------------------------------


class UnknownQuery(ModuleError):
    """A query path no module serves."""

    code = 9


class BadQuery(ModuleError):
    """A query whose argument is invalid (e.g. a malformed address)."""

    code = 10


def resolve_query(path: str, data: bytes, state: Overlay) -> tuple[bytes | None, bytes | None]:
    """Answer `/module/name` + argument: (state key, None) for a provable single-key
    query (QUERIES: the caller reads the key at the asked height), or (None, value)
    for a computed view of the latest state (VIEWS, e.g. lists)."""
    parts = path.strip("/").split("/")
    if parts == ["app", "params"]:
        return None, all_params(state)
    module = MODULES.get(parts[0]) if len(parts) == 2 else None
    key_query = getattr(module, "QUERIES", {}).get(parts[-1]) if module else None
    view = getattr(module, "VIEWS", {}).get(parts[-1]) if module else None
    if key_query is None and view is None:
        raise UnknownQuery(f"unknown query path '{path}' (try /bank/balance, /auth/nonce, /staking/validators, /app/params)")
    try:
        return (key_query(data), None) if key_query else (None, view(state, data))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadQuery(f"bad query argument for {path}: {exc}") from None


def all_params(state: Overlay) -> bytes:
    """/app/params: every module's params as one JSON object."""
    params = {name: json.loads(state.get(module.PARAMS_KEY) or b"{}") for name, module in MODULES.items() if hasattr(module, "PARAMS_KEY")}
    return json.dumps(params, sort_keys=True).encode()
