"""A CometBFT light client: trust a header only when validators we already trust signed it.

`gradchain query ... --prove` checks a Merkle proof against an app hash; this module
is what makes that app hash worth checking against. The node is an untrusted
messenger: every header, commit and validator set it sends is re-hashed and
re-verified here, byte for byte as CometBFT v0.39 computes them:

- `header_hash`: types/block.go Header.Hash, a merkle tree (crypto/merkle, RFC 6962)
  over the 14 proto-encoded fields, scalars wrapped by cdcEncode in gogotypes values;
- `validator_set_hash`: types/validator_set.go Hash, a merkle tree over
  SimpleValidator{pub_key, voting_power};
- `vote_sign_bytes`: types/vote.go VoteSignBytes, a uvarint-length-prefixed
  CanonicalVote (proto/tendermint/types/canonical.proto);
- `verify_adjacent` / `verify_non_adjacent` / `LightClient.verify_to`: light/verifier.go
  and light/client.go's skipping verification (trust level 1/3, bisection).

The user trusts a root (the chain's genesis file, or one header hash they obtained
out of band); the latest header verified from it is kept in
`<home>/light/<chain-id>.json` so later calls start there. Not done: the trusting
period (the root does not expire with time), and evidence of misbehaviour is not
reported; a forked header signed by > 1/3 of a trusted set is trusted, as in CometBFT.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from abci_app import crypto
from abci_app.abci.framing import encode_varint

BLOCK_PROTOCOL = 11  # version.BlockProtocol: a header of another block protocol hashes differently
MAX_CHAIN_ID_LEN = 50
HASH_BYTES = 32
ADDRESS_BYTES = 20
FLAG_ABSENT, FLAG_COMMIT, FLAG_NIL = 1, 2, 3  # CommitSig.BlockIDFlag
PRECOMMIT = 2  # SignedMsgType
ED25519_TYPE = "tendermint/PubKeyEd25519"
TRUST_NUMERATOR, TRUST_DENOMINATOR = 1, 3  # light.DefaultTrustLevel
MAX_CLOCK_DRIFT_S = 10  # light client default
MAX_BISECTION_STEPS = 64


class LightError(Exception):
    """A header, commit or validator set that does not verify; one line saying why."""


# --- protobuf and merkle encoding, as CometBFT's gogoproto writes it -------------


def _uvarint(value: int) -> bytes:
    return encode_varint(value & ((1 << 64) - 1))  # negative int64 varints are their two's complement, ten bytes


def _varint_field(number: int, value: int) -> bytes:
    return _uvarint(number << 3) + _uvarint(value) if value else b""  # proto3: zero is not written


def _bytes_field(number: int, value: bytes) -> bytes:
    return _uvarint(number << 3 | 2) + _uvarint(len(value)) + value if value else b""


def _message_field(number: int, encoded: bytes) -> bytes:
    """A non-nullable embedded message: written even when empty (gogoproto nullable=false)."""
    return _uvarint(number << 3 | 2) + _uvarint(len(encoded)) + encoded


def _sfixed64_field(number: int, value: int) -> bytes:
    return _uvarint(number << 3 | 1) + struct.pack("<q", value) if value else b""


def merkle_root(items: Sequence[bytes]) -> bytes:
    """crypto/merkle HashFromByteSlices: RFC 6962 leaves (0x00) and inner nodes (0x01), split at the largest power of two below n."""
    if not items:
        return hashlib.sha256(b"").digest()
    if len(items) == 1:
        return hashlib.sha256(b"\x00" + items[0]).digest()
    split = 1 << (len(items) - 1).bit_length() - 1
    return hashlib.sha256(b"\x01" + merkle_root(items[:split]) + merkle_root(items[split:])).digest()


# --- the types, parsed from the node's JSON --------------------------------------


@dataclass(frozen=True)
class Timestamp:
    seconds: int
    nanos: int

    def encode(self) -> bytes:
        """gogoproto StdTimeMarshal: google.protobuf.Timestamp{seconds, nanos}."""
        return _varint_field(1, self.seconds) + _varint_field(2, self.nanos)

    def __str__(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.seconds)) + (f".{self.nanos:09d}".rstrip("0") if self.nanos else "") + "Z"


_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")


def parse_time(text: object) -> Timestamp:
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        raise ValueError(f"not a valid time: {text!r}")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if match[8] != "Z":
        sign = 1 if match[8][0] == "+" else -1
        seconds -= sign * (int(match[8][1:3]) * 3600 + int(match[8][4:6]) * 60)
    return Timestamp(seconds, int((match[7] or "").ljust(9, "0")))


def _hex(value: object, size: int | None = None, what: str = "hash") -> bytes:
    """Hex as the RPC writes it: empty, or exactly `size` bytes when a size is given."""
    if not isinstance(value, str) or len(value) % 2 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"{what} is not hex: {value!r}")
    raw = bytes.fromhex(value)
    if size is not None and raw and len(raw) != size:
        raise ValueError(f"{what} is {len(raw)} bytes, not {size}")
    return raw


def _int(value: object, what: str) -> int:
    """An integer the RPC writes as a string (int64) or a number (int32)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not re.fullmatch(r"-?[0-9]{1,19}", str(value)):
        raise ValueError(f"{what} is not an integer: {value!r}")
    number = int(value)
    if not -(1 << 63) <= number < 1 << 63:
        raise ValueError(f"{what} is out of range: {value!r}")
    return number


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string: {value!r}")
    return value


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not base64: {value!r}")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError(f"{what} is not base64: {value!r}") from None


@dataclass(frozen=True)
class BlockID:
    hash: bytes
    parts_total: int
    parts_hash: bytes

    @classmethod
    def from_json(cls, data: dict) -> "BlockID":
        parts = data["parts"]
        return cls(_hex(data["hash"], HASH_BYTES, "block id hash"), _int(parts["total"], "part set total"), _hex(parts["hash"], HASH_BYTES, "part set hash"))

    def encode(self) -> bytes:
        """proto BlockID (and CanonicalBlockID, the same bytes): hash, then the non-nullable part set header."""
        return _bytes_field(1, self.hash) + _message_field(2, _varint_field(1, self.parts_total) + _bytes_field(2, self.parts_hash))


@dataclass(frozen=True)
class Header:
    version_block: int
    version_app: int
    chain_id: str
    height: int
    time: Timestamp
    last_block_id: BlockID
    last_commit_hash: bytes
    data_hash: bytes
    validators_hash: bytes
    next_validators_hash: bytes
    consensus_hash: bytes
    app_hash: bytes
    last_results_hash: bytes
    evidence_hash: bytes
    proposer_address: bytes

    @classmethod
    def from_json(cls, data: dict) -> "Header":
        return cls(
            version_block=_int(data["version"]["block"], "version.block"),
            version_app=_int(data["version"].get("app", "0"), "version.app"),
            chain_id=_str(data["chain_id"], "chain_id"),
            height=_int(data["height"], "height"),
            time=parse_time(data["time"]),
            last_block_id=BlockID.from_json(data["last_block_id"]),
            last_commit_hash=_hex(data["last_commit_hash"], HASH_BYTES, "last_commit_hash"),
            data_hash=_hex(data["data_hash"], HASH_BYTES, "data_hash"),
            validators_hash=_hex(data["validators_hash"], HASH_BYTES, "validators_hash"),
            next_validators_hash=_hex(data["next_validators_hash"], HASH_BYTES, "next_validators_hash"),
            consensus_hash=_hex(data["consensus_hash"], HASH_BYTES, "consensus_hash"),
            app_hash=_hex(data["app_hash"], None, "app_hash"),
            last_results_hash=_hex(data["last_results_hash"], HASH_BYTES, "last_results_hash"),
            evidence_hash=_hex(data["evidence_hash"], HASH_BYTES, "evidence_hash"),
            proposer_address=_hex(data["proposer_address"], ADDRESS_BYTES, "proposer_address"),
        )

    def validate_basic(self, chain_id: str) -> None:
        """types.Header.ValidateBasic, plus the chain id we trust."""
        if self.chain_id != chain_id:
            raise LightError(f"header {self.height} belongs to chain '{self.chain_id}', not the trusted chain '{chain_id}'")
        if self.version_block != BLOCK_PROTOCOL:
            raise LightError(f"header {self.height} has block protocol {self.version_block}, not {BLOCK_PROTOCOL}")
        if self.height <= 0:
            raise LightError(f"header height {self.height} is not positive")
        if len(self.proposer_address) != ADDRESS_BYTES or len(self.validators_hash) != HASH_BYTES:
            raise LightError(f"header {self.height} has no proposer address or validators hash")


def _cdc_bytes(value: bytes) -> bytes:
    """cdcEncode of a string or bytes: a gogotypes StringValue/BytesValue; nothing at all for an empty value."""
    return _bytes_field(1, value)


def _cdc_int64(value: int) -> bytes:
    """cdcEncode of an int64: a gogotypes Int64Value; nothing for zero."""
    return _varint_field(1, value)


def header_hash(h: Header) -> bytes:
    """types.Header.Hash (CometBFT v0.39)."""
    return merkle_root([
        _varint_field(1, h.version_block) + _varint_field(2, h.version_app),
        _cdc_bytes(h.chain_id.encode()),
        _cdc_int64(h.height),
        h.time.encode(),
        h.last_block_id.encode(),
        _cdc_bytes(h.last_commit_hash),
        _cdc_bytes(h.data_hash),
        _cdc_bytes(h.validators_hash),
        _cdc_bytes(h.next_validators_hash),
        _cdc_bytes(h.consensus_hash),
        _cdc_bytes(h.app_hash),
        _cdc_bytes(h.last_results_hash),
        _cdc_bytes(h.evidence_hash),
        _cdc_bytes(h.proposer_address),
    ])


@dataclass(frozen=True)
class Validator:
    address: bytes
    pubkey: bytes  # ed25519, 32 bytes
    power: int

    @classmethod
    def from_json(cls, data: dict, power_field: str = "voting_power") -> "Validator":
        pub_key = data["pub_key"]
        if pub_key.get("type") != ED25519_TYPE:
            raise ValueError(f"validator key type {pub_key.get('type')!r} is not supported (only ed25519)")
        pubkey = _b64(pub_key["value"], "validator pub_key")
        if len(pubkey) != crypto.PUBKEY_BYTES:
            raise ValueError(f"validator pub_key is {len(pubkey)} bytes, not {crypto.PUBKEY_BYTES}")
        address = hashlib.sha256(pubkey).digest()[:ADDRESS_BYTES]
        if "address" in data and _hex(data["address"], ADDRESS_BYTES, "validator address") != address:
            raise ValueError(f"validator address {data['address']} is not its key's address {address.hex().upper()}")
        power = _int(data[power_field], "voting power")
        if power <= 0:
            raise ValueError(f"validator {address.hex().upper()} has voting power {power}")
        return cls(address, pubkey, power)

    def to_json(self) -> dict:
        return {"address": self.address.hex().upper(), "pub_key": {"type": ED25519_TYPE, "value": base64.b64encode(self.pubkey).decode()},
                "voting_power": str(self.power)}

    def encode(self) -> bytes:
        """proto SimpleValidator{pub_key: PublicKey{ed25519}, voting_power}."""
        return _message_field(1, _bytes_field(1, self.pubkey)) + _varint_field(2, self.power)


@dataclass(frozen=True)
class ValidatorSet:
    validators: tuple[Validator, ...]  # in the set's order: commit signatures are indexed by it

    def __post_init__(self) -> None:
        if not self.validators:
            raise ValueError("empty validator set")
        if len({v.address for v in self.validators}) != len(self.validators):
            raise ValueError("validator set names one validator twice")

    @classmethod
    def from_json(cls, items: list, power_field: str = "voting_power") -> "ValidatorSet":
        return cls(tuple(Validator.from_json(v, power_field) for v in items))

    def to_json(self) -> list[dict]:
        return [v.to_json() for v in self.validators]

    @property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    def hash(self) -> bytes:
        """types.ValidatorSet.Hash."""
        return merkle_root([v.encode() for v in self.validators])

    def by_address(self, address: bytes) -> Validator | None:
        return next((v for v in self.validators if v.address == address), None)


@dataclass(frozen=True)
class CommitSig:
    flag: int
    address: bytes
    timestamp: Timestamp | None
    signature: bytes

    @classmethod
    def from_json(cls, data: dict) -> "CommitSig":
        flag = _int(data["block_id_flag"], "block_id_flag")
        if flag == FLAG_ABSENT:
            return cls(flag, b"", None, b"")
        if flag not in (FLAG_COMMIT, FLAG_NIL):
            raise ValueError(f"unknown block_id_flag {flag}")
        signature = _b64(data["signature"], "signature")
        if not 0 < len(signature) <= crypto.SIGNATURE_BYTES:
            raise ValueError(f"signature is {len(signature)} bytes")
        return cls(flag, _hex(data["validator_address"], ADDRESS_BYTES, "validator_address"), parse_time(data["timestamp"]), signature)


@dataclass(frozen=True)
class Commit:
    height: int
    round: int
    block_id: BlockID
    signatures: tuple[CommitSig, ...]

    @classmethod
    def from_json(cls, data: dict) -> "Commit":
        return cls(_int(data["height"], "commit height"), _int(data["round"], "commit round"), BlockID.from_json(data["block_id"]),
                   tuple(CommitSig.from_json(s) for s in data["signatures"]))


def vote_sign_bytes(chain_id: str, commit: Commit, index: int) -> bytes:
    """types.VoteSignBytes of the precommit behind commit.signatures[index]: a delimited CanonicalVote."""
    sig = commit.signatures[index]
    assert sig.timestamp is not None, "an absent signature signs nothing"
    block_id = _message_field(4, commit.block_id.encode()) if sig.flag == FLAG_COMMIT else b""  # a nil vote has no block id
    vote = (_varint_field(1, PRECOMMIT) + _sfixed64_field(2, commit.height) + _sfixed64_field(3, commit.round) + block_id
            + _message_field(5, sig.timestamp.encode()) + _bytes_field(6, chain_id.encode()))
    return _uvarint(len(vote)) + vote


@dataclass(frozen=True)
class SignedHeader:
    header: Header
    commit: Commit
    validators: ValidatorSet  # the set at header.height, checked against header.validators_hash

    @property
    def height(self) -> int:
        return self.header.height

    def hash(self) -> bytes:
        return header_hash(self.header)


# --- verification ----------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """Who signed a commit, counted against one validator set."""

    signed_power: int
    total_power: int
    signatures: int  # valid signatures counted
    validators: int  # members of the set


def _verify_signature(chain_id: str, commit: Commit, index: int, validator: Validator) -> None:
    if not crypto.verify(validator.pubkey, vote_sign_bytes(chain_id, commit, index), commit.signatures[index].signature):
        raise LightError(f"commit {commit.height}: signature {index} by validator {validator.address.hex().upper()} is invalid")


def verify_commit_light(chain_id: str, vals: ValidatorSet, sh: SignedHeader) -> Tally:
    """types.VerifyCommitLight, checking every signature: > 2/3 of `vals` (the header's own set) signed this block."""
    commit = sh.commit
    if len(commit.signatures) != len(vals.validators):
        raise LightError(f"commit {commit.height} has {len(commit.signatures)} signatures for {len(vals.validators)} validators")
    power = signatures = 0
    for index, (sig, validator) in enumerate(zip(commit.signatures, vals.validators)):
        if sig.flag != FLAG_COMMIT:
            continue
        if sig.address != validator.address:
            raise LightError(f"commit {commit.height}: signature {index} is from {sig.address.hex().upper()}, expected {validator.address.hex().upper()}")
        _verify_signature(chain_id, commit, index, validator)
        power += validator.power
        signatures += 1
    tally = Tally(power, vals.total_power, signatures, len(vals.validators))
    if power <= vals.total_power * 2 // 3:
        raise LightError(f"header {commit.height}: only {power} of {vals.total_power} voting power signed, more than 2/3 is needed")
    return tally


class NotEnoughTrustedPower(LightError):
    """light.ErrNewValSetCantBeTrusted: too little of the trusted set signed; bisect."""


def verify_commit_trusting(chain_id: str, trusted: ValidatorSet, sh: SignedHeader) -> Tally:
    """types.VerifyCommitLightTrusting, every signature checked: > 1/3 of the trusted set's power signed this block."""
    commit = sh.commit
    power = signatures = 0
    seen: set[bytes] = set()
    for index, sig in enumerate(commit.signatures):
        if sig.flag != FLAG_COMMIT:
            continue
        validator = trusted.by_address(sig.address)
        if validator is None:
            continue
        if sig.address in seen:
            raise LightError(f"commit {commit.height}: validator {sig.address.hex().upper()} signed twice")
        seen.add(sig.address)
        _verify_signature(chain_id, commit, index, validator)
        power += validator.power
        signatures += 1
    needed = trusted.total_power * TRUST_NUMERATOR // TRUST_DENOMINATOR
    if power <= needed:
        raise NotEnoughTrustedPower(f"header {commit.height}: validators holding only {power} of {trusted.total_power} trusted power signed it, "
                                    f"more than {TRUST_NUMERATOR}/{TRUST_DENOMINATOR} is needed")
    return Tally(power, trusted.total_power, signatures, len(trusted.validators))


def check_signed_header(chain_id: str, sh: SignedHeader) -> bytes:
    """SignedHeader.ValidateBasic and the header's validator set: the header hash, which the commit must be for."""
    header, commit = sh.header, sh.commit
    header.validate_basic(chain_id)
    if commit.height != header.height:
        raise LightError(f"commit is for height {commit.height}, header for {header.height}")
    hashed = header_hash(header)
    if commit.block_id.hash != hashed:
        raise LightError(f"header {header.height} hashes to {hashed.hex().upper()} but the commit signs block {commit.block_id.hash.hex().upper()}")
    if sh.validators.hash() != header.validators_hash:
        raise LightError(f"header {header.height}: the validator set sent hashes to {sh.validators.hash().hex().upper()}, "
                         f"not the header's validators_hash {header.validators_hash.hex().upper()}")
    return hashed


@dataclass(frozen=True)
class TrustedState:
    """The latest header the user's root vouches for: height 0 with no header is the genesis itself."""

    chain_id: str
    height: int
    header_hash: bytes
    time: Timestamp | None
    next_validators_hash: bytes
    validators: ValidatorSet  # trusted to sign the headers after this one (at height 0: genesis validators)
    root: dict  # what the user trusted: {"genesis": sha256, "file": path} or {"height": h, "hash": hex}

    def to_json(self) -> dict:
        return {"chain_id": self.chain_id, "height": self.height, "header_hash": self.header_hash.hex().upper(),
                "time": str(self.time) if self.time else "", "next_validators_hash": self.next_validators_hash.hex().upper(),
                "validators": self.validators.to_json(), "root": self.root}

    @classmethod
    def from_json(cls, data: dict) -> "TrustedState":
        return cls(data["chain_id"], _int(data["height"], "height"), _hex(data["header_hash"]), parse_time(data["time"]) if data["time"] else None,
                   _hex(data["next_validators_hash"]), ValidatorSet.from_json(data["validators"]), data["root"])

    def describe_root(self) -> str:
        if "genesis" in self.root:
            return f"genesis file {self.root['file']} (sha256 {self.root['genesis'][:16]}...)"
        return f"header {self.root['height']} hash {self.root['hash']}"


@dataclass(frozen=True)
class Verified:
    """A header verified from the trusted state: what signed it, and against which set."""

    signed: SignedHeader
    hash: bytes
    own: Tally  # the header's own validator set: > 2/3 signed
    trusted: Tally  # the trusted set it was verified from (the same set for an adjacent header)
    adjacent: bool
    path: tuple[int, ...]  # heights verified on the way (bisection), the last one this header
    trusted_height: int  # the trusted header whose validators verified it (0: the genesis validators)


def verify(state: TrustedState, sh: SignedHeader, now: int | None = None) -> tuple[bytes, Tally, Tally, bool]:
    """light.Verify: (header hash, own-set tally, trusted-set tally, adjacent) or LightError."""
    hashed = check_signed_header(state.chain_id, sh)
    header = sh.header
    if header.height <= state.height:
        raise LightError(f"header {header.height} is not after the trusted height {state.height}")
    if state.time is not None and (header.time.seconds, header.time.nanos) <= (state.time.seconds, state.time.nanos):
        raise LightError(f"header {header.height} time {header.time} is not after the trusted header's time {state.time}")
    now = int(time.time()) if now is None else now
    if header.time.seconds >= now + MAX_CLOCK_DRIFT_S:
        raise LightError(f"header {header.height} has a time in the future ({header.time})")
    adjacent = state.height > 0 and header.height == state.height + 1
    if adjacent:
        if header.validators_hash != state.next_validators_hash:
            raise LightError(f"header {header.height}'s validators {header.validators_hash.hex().upper()} are not the ones "
                             f"the trusted header {state.height} named next ({state.next_validators_hash.hex().upper()})")
        own = verify_commit_light(state.chain_id, sh.validators, sh)
        return hashed, own, own, True
    trusted = verify_commit_trusting(state.chain_id, state.validators, sh)
    own = verify_commit_light(state.chain_id, sh.validators, sh)
    return hashed, own, trusted, False


def advance(state: TrustedState, sh: SignedHeader) -> TrustedState:
    return TrustedState(state.chain_id, sh.height, header_hash(sh.header), sh.header.time, sh.header.next_validators_hash, sh.validators, state.root)


def verify_skipping(state: TrustedState, target: SignedHeader, fetch: Callable[[int], SignedHeader], now: int | None = None
                    ) -> tuple[TrustedState, Verified]:
    """light/client.go verifySkipping: verify `target` from `state`, bisecting through headers fetched on the way
    when too little of the trusted set signed it. Returns the new trusted state and what verified the target."""
    pending = [target]  # pending[-1] is tried next; pending[0] is the target
    path: list[int] = []
    for _ in range(MAX_BISECTION_STEPS):
        candidate = pending[-1]
        try:
            hashed, own, trusted, adjacent = verify(state, candidate, now)
        except NotEnoughTrustedPower as exc:
            pivot = (state.height + candidate.height) // 2
            if pivot <= state.height or pivot >= candidate.height:
                raise LightError(f"{exc}; no header between trusted {state.height} and {candidate.height} to bisect through") from None
            pending.append(fetch(pivot))
            continue
        path.append(candidate.height)
        trusted_height, state = state.height, advance(state, candidate)
        pending.pop()
        if not pending:
            return state, Verified(candidate, hashed, own, trusted, adjacent, tuple(path), trusted_height)
    raise LightError(f"could not verify header {target.height} within {MAX_BISECTION_STEPS} bisection steps")


# --- trust roots and the store ------------------------------------------------------


def genesis_state(path: Path) -> TrustedState:
    """Trust a genesis file: its chain id and validators sign the first headers."""
    try:
        text = path.read_bytes()
        genesis = json.loads(text)
        validators = ValidatorSet.from_json(genesis["validators"], power_field="power")
        chain_id = genesis["chain_id"]
        if not isinstance(chain_id, str) or not 0 < len(chain_id) <= MAX_CHAIN_ID_LEN:
            raise ValueError(f"bad chain_id {chain_id!r}")
    except OSError as exc:
        raise LightError(f"cannot read genesis file {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LightError(f"genesis file {path} has no usable chain id and validators ({exc}); "
                         "trust a header instead (--trust-height H --trust-hash HEX)") from None
    root = {"genesis": hashlib.sha256(text).hexdigest(), "file": str(path)}
    return TrustedState(chain_id, 0, b"", None, b"", validators, root)


def header_state(sh: SignedHeader, trusted_hash: bytes) -> TrustedState:
    """Trust one header the user knows the hash of (obtained out of band)."""
    hashed = check_signed_header(sh.header.chain_id, sh)
    if hashed != trusted_hash:
        raise LightError(f"header {sh.height} hashes to {hashed.hex().upper()}, not the trusted hash {trusted_hash.hex().upper()}")
    root = {"height": sh.height, "hash": trusted_hash.hex().upper()}
    return TrustedState(sh.header.chain_id, sh.height, hashed, sh.header.time, sh.header.next_validators_hash, sh.validators, root)


def store_path(home: Path, chain_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", chain_id)
    return home / "light" / f"{safe}.json"


def load_state(home: Path, root: TrustedState) -> TrustedState:
    """The latest state stored for `root`'s chain, if it grew from the same root; else `root` itself."""
    path = store_path(home, root.chain_id)
    try:
        stored = TrustedState.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return root  # none yet, or unreadable: start again from the root the user gave
    if stored.chain_id != root.chain_id or stored.root != root.root or stored.height < root.height:
        return root
    return stored


def save_state(home: Path, state: TrustedState) -> None:
    path = store_path(home, state.chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=1) + "\n")
    tmp.replace(path)  # atomic: a crash leaves the old state or the new one


# --- fetching from a node ----------------------------------------------------------


def parse_signed_header(commit_result: dict, validators: list) -> SignedHeader:
    """A SignedHeader from /commit's result and /validators' list; LightError on anything malformed."""
    try:
        signed = commit_result["signed_header"]
        return SignedHeader(Header.from_json(signed["header"]), Commit.from_json(signed["commit"]), ValidatorSet.from_json(validators))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LightError(f"malformed header, commit or validator set from the node: {exc}") from None


@dataclass
class LightClient:
    """Verifies headers fetched through `rpc` (an abci_app.rpc.RpcClient) from a trusted state."""

    rpc: object
    state: TrustedState
    fetched: dict[int, SignedHeader] = field(default_factory=dict)

    def signed_header(self, height: int) -> SignedHeader:
        if height not in self.fetched:
            self.fetched[height] = parse_signed_header(self.rpc.commit(height), self.rpc.validator_set(height))  # type: ignore[attr-defined]
        return self.fetched[height]

    def verify_to(self, height: int) -> Verified:
        """Verify header `height` (at or after the trusted state) and trust it from now on."""
        target = self.signed_header(height)
        if height == self.state.height:  # the trusted header itself: its hash is all there is to check
            hashed = check_signed_header(self.state.chain_id, target)
            if hashed != self.state.header_hash:
                raise LightError(f"header {height} hashes to {hashed.hex().upper()}, not the trusted {self.state.header_hash.hex().upper()}")
            own = verify_commit_light(self.state.chain_id, target.validators, target)
            return Verified(target, hashed, own, own, False, (), height)
        if height < self.state.height:
            raise LightError(f"header {height} is before the trusted height {self.state.height}")
        self.state, verified = verify_skipping(self.state, target, self.signed_header)
        return verified
