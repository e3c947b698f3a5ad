"""Transaction envelope: build, sign, encode and decode.

The runtime decodes and verifies; clients (CLI, workers, tests) build and sign
with the same code, so both sides agree on the signed bytes by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message

from abci_app import crypto
from abci_app.pb.gradchain.tx.v1 import tx_pb2

MAX_TX_BYTES = 64 * 1024  # far below CometBFT's 1 MiB mempool limit; weights never go on chain

Tx = tx_pb2.Tx
TxBody = tx_pb2.TxBody
MsgSend = tx_pb2.MsgSend
MsgCreateValidator = tx_pb2.MsgCreateValidator
MsgDelegate = tx_pb2.MsgDelegate
MsgUndelegate = tx_pb2.MsgUndelegate
MsgEditValidator = tx_pb2.MsgEditValidator
MsgUnjail = tx_pb2.MsgUnjail
MsgWithdrawRewards = tx_pb2.MsgWithdrawRewards
MsgBondTrainer = tx_pb2.MsgBondTrainer
MsgUnbondTrainer = tx_pb2.MsgUnbondTrainer
MsgRegisterDataset = tx_pb2.MsgRegisterDataset
MsgSetDatasetWeight = tx_pb2.MsgSetDatasetWeight
MsgSetDatasetOwner = tx_pb2.MsgSetDatasetOwner
MsgRegisterVersion = tx_pb2.MsgRegisterVersion
MsgSubmitDelta = tx_pb2.MsgSubmitDelta
MsgCommitVerdicts = tx_pb2.MsgCommitVerdicts
MsgRevealVerdicts = tx_pb2.MsgRevealVerdicts
AuditVerdict = tx_pb2.AuditVerdict
MsgJudgeClaims = tx_pb2.MsgJudgeClaims
ClaimJudgement = tx_pb2.ClaimJudgement
MsgAttestMerge = tx_pb2.MsgAttestMerge
MsgCommitMerge = tx_pb2.MsgCommitMerge
MsgSubmitProposal = tx_pb2.MsgSubmitProposal
MsgDeposit = tx_pb2.MsgDeposit
MsgVote = tx_pb2.MsgVote
MsgUpdateParams = tx_pb2.MsgUpdateParams


class _once:
    """functools.cached_property without the lock Python 3.11 takes on each first access: a SignedTx is
    decoded afresh in every ABCI call, so first accesses are most accesses. Stored in the instance's
    __dict__, which then answers (a frozen dataclass forbids setattr, not that)."""

    def __init__(self, func) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


class TxDecodeError(ValueError):
    """Bytes that are not a well-formed GradientChain transaction."""


@dataclass(frozen=True)
class SignedTx:
    """A decoded, not yet verified transaction."""

    body: TxBody
    body_bytes: bytes
    pubkey: bytes
    signature: bytes

    @_once
    def signer_id(self) -> bytes:
        """The signer's 20-byte account id: what auth and the fee path key state by."""
        return crypto.address_bytes(self.pubkey)

    @_once
    def signer(self) -> str:
        """The signer's address as text, for modules and events."""
        return crypto.address_of(self.pubkey)

    @_once
    def msg_name(self) -> str | None:
        return self.body.WhichOneof("msg")

    @_once
    def msg(self) -> Message:
        return getattr(self.body, self.msg_name)

    def signature_valid(self) -> bool:
        message = crypto.sign_bytes(self.body.chain_id, self.body_bytes)
        return crypto.verify(self.pubkey, message, self.signature)


def build(key: crypto.PrivateKey, chain_id: str, nonce: int, fee: int, msg: Message, memo: str = "") -> bytes:
    """Sign `msg` with `key` and return the wire bytes."""
    body_bytes = _body_bytes(chain_id, nonce, fee, msg, memo)
    signature = key.sign(crypto.sign_bytes(chain_id, body_bytes))
    return Tx(body=body_bytes, pubkey=key.pubkey, signature=signature).SerializeToString(deterministic=True)


def build_unsigned(pubkey: bytes, chain_id: str, nonce: int, fee: int, msg: Message, memo: str = "") -> bytes:
    """The tx `build` would make, with an all-zero signature: for /app/simulate, which
    checks no signature, so a client never hands a node a tx it could broadcast."""
    body_bytes = _body_bytes(chain_id, nonce, fee, msg, memo)
    return Tx(body=body_bytes, pubkey=pubkey, signature=bytes(crypto.SIGNATURE_BYTES)).SerializeToString(deterministic=True)


def _body_bytes(chain_id: str, nonce: int, fee: int, msg: Message, memo: str) -> bytes:
    body = TxBody(chain_id=chain_id, nonce=nonce, fee=fee, memo=memo)
    getattr(body, _msg_field(msg)).CopyFrom(msg)
    return body.SerializeToString(deterministic=True)


def decode(raw: bytes, check_canonical: bool = True) -> SignedTx:
    """Parse wire bytes; raise TxDecodeError on anything malformed. check_canonical=False
    is for bytes already known canonical (runtime's verified-tx cache) or for reading only."""
    if len(raw) > MAX_TX_BYTES:
        raise TxDecodeError(f"tx is {len(raw)} bytes, limit is {MAX_TX_BYTES}")
    try:
        envelope = Tx.FromString(raw)
        body = TxBody.FromString(envelope.body)
    except DecodeError as exc:
        raise TxDecodeError(f"malformed tx: {exc}") from None
    # One encoding per tx: otherwise a relayer could re-wrap a signed tx (an
    # unknown or repeated field, a longer varint) into new bytes with a new hash.
    if check_canonical and (not _is_canonical(envelope, raw) or not _is_canonical(body, envelope.body)):
        raise TxDecodeError("malformed tx: not in canonical encoding (unknown or repeated fields, or non-minimal integers)")
    if len(envelope.pubkey) != crypto.PUBKEY_BYTES:
        raise TxDecodeError(f"pubkey must be {crypto.PUBKEY_BYTES} bytes, got {len(envelope.pubkey)}")
    if len(envelope.signature) != crypto.SIGNATURE_BYTES:
        raise TxDecodeError(f"signature must be {crypto.SIGNATURE_BYTES} bytes, got {len(envelope.signature)}")
    if body.WhichOneof("msg") is None:
        raise TxDecodeError("tx carries no message")
    return SignedTx(body=body, body_bytes=envelope.body, pubkey=envelope.pubkey, signature=envelope.signature)


def _is_canonical(message: Message, raw: bytes) -> bool:
    """Whether `raw` is exactly the deterministic encoding of `message`, without unknown fields."""
    known = type(message)()
    known.CopyFrom(message)
    known.DiscardUnknownFields()  # python protobuf keeps unknown fields when re-encoding
    return known.SerializeToString(deterministic=True) == raw


def _msg_field(msg: Message) -> str:
    """The TxBody oneof field that carries messages of msg's type."""
    for field in TxBody.DESCRIPTOR.oneofs_by_name["msg"].fields:
        if field.message_type is msg.DESCRIPTOR:
            return field.name
    raise TypeError(f"{type(msg).__name__} is not a transaction message")
