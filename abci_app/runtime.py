"""The runtime composes the modules: tx decode -> verify -> fee and nonce -> route -> events.

Modules never see raw bytes: the runtime owns decoding, signatures, chain id,
nonces and fees, then calls one module function with the decoded message.
Every rule here is deterministic: integer arithmetic on state, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from abci_app import tx as txcodec
from abci_app.context import Context, Event, EventType, ModuleError, events_encodable
from abci_app.modules import auth, bank, datasets, gov, registry, staking, training
from abci_app.state import Overlay
from abci_app.state.cache import BoundedCache

# Module name -> module, in the fixed order genesis and block hooks run.
# gov runs last: its end_block tallies on the stake after every other hook, and params it changes apply from the next block.
MODULES = {
    "auth": auth, "bank": bank, "staking": staking, "datasets": datasets, "registry": registry, "training": training, "gov": gov,
}

# TxBody oneof field -> (module name, call). Field numbers in tx.proto are the
# stable call indices.
CALLS: dict[str, tuple[str, Callable[[Context, str, Message], None]]] = {
    name: (module_name, call)
    for module_name, module in MODULES.items()
    for name, call in getattr(module, "CALLS", {}).items()
}

CHAIN_ID_KEY = b"runtime/chain_id"  # the chain id from InitChain, which every tx must carry

log = logging.getLogger("runtime")

# --- Events ---------------------------------------------------------------------


@dataclass(frozen=True)
class TxMessage(EventType):
    """Every tx that paid its fee: the call it was routed to, its signer and nonce (kept when the message fails)."""

    type = "message"
    action: str
    module: str
    sender: str
    nonce: int


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


class StateFeeTooLow(ModuleError):
    """The fee does not cover the bytes of state the message writes (bank.required_fee)."""

    code = 11


class Internal(ModuleError):
    """An unexpected exception: a bug, never a user error. A tx's message that raises one
    fails alone (fee paid, writes rolled back), as the Cosmos SDK recovers panics."""

    code = 12


# auth.BadNonce (code 5) and bank.CannotPayFee (code 7) complete the runtime table;
# UnknownQuery (9) and BadQuery (10) are below.

# --- Results --------------------------------------------------------------------


@dataclass
class TxResult:
    code: int = 0
    codespace: str = ""
    log: str = ""
    events: list[Event] = field(default_factory=list)
    paid: bool = False  # passed ante: the fee was charged and the nonce used
    admitted: bool = False  # may stay where admit's mode puts it (mempool, proposal, block)
    bytes_written: int = 0  # bytes of state the message added (bytes_added; before any rollback)
    fee_needed: int = 0  # bank.required_fee for those bytes

    def fail(self, error: ModuleError) -> "TxResult":
        self.code, self.codespace = error.code, error.codespace
        self.log = error.log.encode("utf-8", "backslashreplace").decode("utf-8")  # logs from user input stay encodable
        return self

    @classmethod
    def failed(cls, error: ModuleError, events: list[Event] | None = None) -> "TxResult":
        return cls(events=events or []).fail(error)


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


class VerifiedTxs(BoundedCache):
    """sha256 of the raw txs this node has seen decode canonically and verify, so that a
    tx is verified once per node, in CheckTx, and not again in PrepareProposal,
    ProcessProposal and FinalizeBlock (or RECHECK). Both facts are pure functions of
    the raw bytes, so a hit can only skip work: a miss (evicted, restarted node, a tx
    first seen in a proposal) checks again and reaches the same answer. Only passes
    are remembered; bounded, oldest out first."""

    def __init__(self, max_entries: int = 1 << 17) -> None:  # 128 Ki entries, ~15 MB
        super().__init__(max_entries)

    def add(self, tx_hash: bytes) -> None:
        self.put(tx_hash, None)


VERIFIED = VerifiedTxs()


def decode_and_verify(state: Overlay, raw: bytes, check_signature: bool = True) -> txcodec.SignedTx:
    """Stateless checks plus chain id: size, decoding, message type, signature."""
    if len(raw) > txcodec.MAX_TX_BYTES:
        raise TxTooLarge(f"tx is {len(raw)} bytes, limit is {txcodec.MAX_TX_BYTES}")
    tx_hash = hashlib.sha256(raw).digest()
    verified = tx_hash in VERIFIED
    try:
        signed = txcodec.decode(raw, check_canonical=not verified)
    except txcodec.TxDecodeError as exc:
        raise MalformedTx(str(exc)) from None
    if signed.msg_name not in CALLS:
        raise UnknownMessage(f"unknown message type '{signed.msg_name}'")
    expected_chain = chain_id(state)
    if signed.body.chain_id != expected_chain:
        raise WrongChainId(f"wrong chain id: tx is for '{signed.body.chain_id}', this chain is '{expected_chain}'")
    if check_signature and not verified:
        if not signed.signature_valid():
            raise BadSignature("bad signature: it does not match the tx body, chain id and public key")
        VERIFIED.add(tx_hash)
    return signed


def ante(state: Overlay, raw: bytes, check_signature: bool = True) -> txcodec.SignedTx:
    """Every check a tx must pass before it may pay a fee; writes nothing."""
    signed = decode_and_verify(state, raw, check_signature)
    auth.check_nonce(state, signed.signer_id, signed.body.nonce)
    min_fee = bank.get_params(state).min_fee
    if signed.body.fee < min_fee:
        raise FeeTooLow(f"fee {signed.body.fee}{bank.DENOM} is below the minimum {min_fee}{bank.DENOM}")
    if bank.balance(state, signed.signer) < signed.body.fee:
        have = bank.balance(state, signed.signer)
        raise bank.CannotPayFee(f"insufficient funds for fee: {signed.signer} has {have}{bank.DENOM}, fee is {signed.body.fee}{bank.DENOM}")
    return signed


# Where admit() runs a tx: the mempool (CheckTx, including RECHECK), a proposal we
# build (PrepareProposal), a proposal we vote on (ProcessProposal), a decided block,
# or a scratch copy for /app/simulate (the only mode that checks no signature).
CHECK, PREPARE, PROCESS, DELIVER, SIMULATE = "check", "prepare", "process", "deliver", "simulate"


def admit(ctx: Context, raw: bytes, mode: str) -> TxResult:
    """The one admission rule of CheckTx, PrepareProposal, ProcessProposal and FinalizeBlock.

    Runs ante, then executes the tx on ctx as FinalizeBlock does (fee, nonce,
    message), so each tx is judged after the ones before it, in order. A tx that
    fails ante may be in no mempool and no proposal: it pays nothing, so
    admitting it would give a proposer free block space. In CHECK mode a tx
    whose message fails is refused as well and leaves ctx unchanged; elsewhere
    it stays (it pays its fee). `result.admitted` says whether the tx may stay.
    """
    assert mode in (CHECK, PREPARE, PROCESS, DELIVER, SIMULATE), mode
    try:
        signed = ante(ctx.state, raw, check_signature=mode != SIMULATE)
    except ModuleError as exc:
        return TxResult(admitted=mode == DELIVER).fail(exc)
    except Exception as exc:  # a bug in ante: the tx is refused everywhere alike, nothing written
        log.exception("internal error in ante")
        return TxResult(admitted=mode == DELIVER).fail(Internal(f"internal error before execution: {type(exc).__name__}"))
    if mode != CHECK:
        result = _run(ctx, signed)
        result.admitted = True
        return result
    # The mempool keeps nothing of a tx it refuses, not even its fee; and CheckTx answers carry no events.
    result = _run(ctx, signed, keep_failed=False, record_events=False)
    result.admitted = result.code == 0
    return result


def execute(block: Context, raw: bytes) -> TxResult:
    """Apply one tx of a decided block. A tx that passes ante pays its fee and uses its
    nonce even when its message fails; the message's own writes are all-or-nothing."""
    return admit(block, raw, DELIVER)


def _run(block: Context, signed: txcodec.SignedTx, keep_failed: bool = True, record_events: bool = True) -> TxResult:
    """Charge the fee, use the nonce, run the message on a child context kept only on success. A failed
    message still pays and uses its nonce, unless `keep_failed` is False: then block gets nothing of it."""
    tx_ctx = block.child()
    tx_ctx.record_events = record_events
    bank.charge_fee(tx_ctx, signed.signer, signed.body.fee)
    auth.bump_nonce(tx_ctx.state, signed.signer_id)
    module, call = CALLS[signed.msg_name]
    tx_ctx.emit(TxMessage(action=signed.msg_name, module=module, sender=signed.signer, nonce=signed.body.nonce))
    msg_ctx = tx_ctx.child()
    result = TxResult(paid=True)
    try:
        call(msg_ctx, signed.signer, signed.msg)
        result.bytes_written = bytes_added(tx_ctx.state, msg_ctx.state.writes())
        result.fee_needed = bank.required_fee(bank.get_params(block.state), result.bytes_written)
        if signed.body.fee < result.fee_needed:
            raise StateFeeTooLow(
                f"fee too low for {result.bytes_written} bytes of state: need {result.fee_needed}{bank.DENOM}, "
                f"got {signed.body.fee}{bank.DENOM}"
            )
        if not events_encodable(msg_ctx.events):
            raise Internal(f"internal error in {signed.msg_name}: an event is not valid UTF-8")
        tx_ctx.merge(msg_ctx)
    except ModuleError as exc:
        result.fail(exc)
    except Exception as exc:  # a bug in a message handler: this tx fails alone, the same way on every node
        log.exception("internal error in %s", signed.msg_name)
        result.fail(Internal(f"internal error in {signed.msg_name}: {type(exc).__name__}"))
    if keep_failed or result.code == 0:
        tx_ctx.state.write()  # the fee and nonce stay, and the message's writes when it succeeded
    result.events = tx_ctx.events  # the tx's result carries its events; the block's own are begin/end-block facts
    return result


def bytes_added(before: Overlay, writes: list[tuple[bytes, bytes | None]]) -> int:
    """Bytes of state `writes` add to `before`: a new key costs its key and value, an overwrite only what
    it grows by, a delete nothing. Rewriting a record (a round's power snapshot, a validator) stores no new
    bytes, so it is not charged again: otherwise the fee of a vote would depend on whose vote lands first."""
    added = 0
    for key, value in writes:
        if value is not None:
            old = before.get(key)
            added += len(key) + len(value) if old is None else max(0, len(value) - len(old))
    return added


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
            signed = txcodec.decode(raw, check_canonical=False)  # only reads pubkey and nonce; admit judges the tx
        except txcodec.TxDecodeError:
            continue
        slots.setdefault(signed.pubkey, []).append(index)
        by_sender.setdefault(signed.pubkey, []).append((signed.body.nonce, index, raw))
    ordered = list(raws)
    for pubkey, indices in slots.items():
        for slot, (_, _, raw) in zip(indices, sorted(by_sender[pubkey])):
            ordered[slot] = raw
    return ordered


# --- Messages of a module account (gov) ---------------------------------------------

MAX_REASON = 512  # characters of a failure reason kept on chain


def execute_as(ctx: Context, signer: str, bodies: list[txcodec.TxBody]) -> str:
    """Run each body's message as `signer` (the gov module account), in order, all or none: "" when every one
    succeeded (their writes and events join ctx), else why the first one failed (ctx unchanged). Never raises:
    a message that hits an unexpected exception fails the batch, as it would fail a tx."""
    batch = ctx.child()
    batch.record_events = True  # the UTF-8 check below needs them, also in CheckTx's dry run of a proposal
    for index, body in enumerate(bodies):
        name = body.WhichOneof("msg")
        route = CALLS.get(name) if name else None
        try:
            if route is None:
                raise UnknownMessage(f"unknown message type '{name}'")
            route[1](batch, signer, getattr(body, name))
        except ModuleError as exc:
            return _reason(f"message {index} ({name}) failed ({exc.codespace} code {exc.code}): {exc.log}")
        except Exception as exc:  # a bug in a handler: the batch fails alone, the same way on every node
            log.exception("internal error in %s executed by %s", name, signer)
            return _reason(f"message {index} ({name}) failed (runtime code {Internal.code}): internal error {type(exc).__name__}")
    if not events_encodable(batch.events):
        return "an event of the messages is not valid UTF-8"
    ctx.merge(batch)
    return ""


def _reason(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:MAX_REASON]


@dataclass(frozen=True)
class ModuleParams:
    """What MsgUpdateParams needs of a module: its Params type, where they live, and the module's rule on changing
    valid params (check_params_change(current, new) raises ValueError; None: any valid set may replace any other)."""

    params_type: type
    key: bytes
    check_change: Callable[[object, object, Overlay], None] | None


def module_params(name: str) -> ModuleParams | None:
    """The params of module `name`, or None when it has none (or no such module)."""
    module = MODULES.get(name)
    if module is None or not hasattr(module, "Params") or not hasattr(module, "PARAMS_KEY"):
        return None
    return ModuleParams(module.Params, module.PARAMS_KEY, getattr(module, "check_params_change", None))


# --- Block hooks ----------------------------------------------------------------


def begin_block(ctx: Context) -> None:
    for module in MODULES.values():
        if hasattr(module, "begin_block"):
            module.begin_block(ctx)


def end_block(ctx: Context) -> None:
    for module in MODULES.values():
        if hasattr(module, "end_block"):
            module.end_block(ctx)
    # Last, so that stake moved by any module's end_block (training penalizes verifiers) reaches CometBFT in this block.
    staking.update_validator_set(ctx)


# --- Queries --------------------------------------------------------------------


class UnknownQuery(ModuleError):
    """A query path no module serves."""

    code = 9


class BadQuery(ModuleError):
    """A query whose argument is invalid (e.g. a malformed address), or a height with no committed state."""

    code = 10


MAX_QUERY_PATH = 128
MAX_QUERY_DATA = txcodec.MAX_TX_BYTES  # the largest argument is a tx, for /app/simulate


def key_builder(path: str) -> Callable[[bytes], bytes] | None:
    """The state-key builder of a provable single-key query path (a module's QUERIES), or None:
    the app reads that key, and `--prove` builds the same key itself instead of trusting the node."""
    parts = path.strip("/").split("/")
    module = MODULES.get(parts[0]) if len(parts) == 2 else None
    return getattr(module, "QUERIES", {}).get(parts[1]) if module else None


def resolve_query(path: str, data: bytes, state: Overlay, next_height: int = 0) -> tuple[bytes | None, bytes | None]:
    """Answer `/module/name` + argument: (state key, None) for a provable single-key
    query (QUERIES: the caller reads the key at the asked height), or (None, value)
    for a computed view of the latest state (VIEWS, e.g. lists). Every bad argument
    is a BadQuery, never another exception."""
    if len(path) > MAX_QUERY_PATH:
        raise BadQuery(f"query path is {len(path)} characters, limit is {MAX_QUERY_PATH}")
    if len(data) > MAX_QUERY_DATA:
        raise BadQuery(f"query data is {len(data)} bytes, limit is {MAX_QUERY_DATA}")
    parts = path.strip("/").split("/")
    if parts == ["app", "params"]:
        return None, all_params(state)
    if parts == ["app", "simulate"]:
        return None, simulate(state, data, next_height)
    module = MODULES.get(parts[0]) if len(parts) == 2 else None
    key_query = key_builder(path)
    view = getattr(module, "VIEWS", {}).get(parts[-1]) if module else None
    if key_query is None and view is None:
        raise UnknownQuery(f"unknown query path '{path}' (try /bank/balance, /auth/nonce, /staking/validators, /app/params)")
    try:
        return (key_query(data), None) if key_query else (None, view(state, data))
    except (ValueError, OverflowError) as exc:  # ValueError covers UnicodeError and AddressError
        raise BadQuery(f"bad query argument for {path}: {exc}") from None


def all_params(state: Overlay) -> bytes:
    """/app/params: every module's params as one JSON object."""
    params = {name: json.loads(state.get(module.PARAMS_KEY) or b"{}") for name, module in MODULES.items() if hasattr(module, "PARAMS_KEY")}
    return json.dumps(params, sort_keys=True).encode()


def simulate(state: Overlay, raw: bytes, height: int) -> bytes:
    """/app/simulate TX -> what the tx would do on the latest state, as JSON: its result
    code and log, the bytes of state its message writes and the fee that needs, so a
    client can sign with a fee that covers them. The signature is not checked (send
    tx.build_unsigned's bytes); runs on a scratch overlay and writes nothing."""
    result = admit(Context(state.child(), chain_id(state), height, 0), raw, SIMULATE)
    return json.dumps({
        "code": result.code, "codespace": result.codespace, "log": result.log,
        "bytes_written": result.bytes_written, "fee_needed": result.fee_needed,
    }, sort_keys=True).encode()
