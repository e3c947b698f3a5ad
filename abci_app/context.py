"""What a module call sees: the state of its tx, the block, and an event sink.

Shared by every module so that storage, events and errors look the same
everywhere: a module error carries (codespace, code, log) straight into the
ABCI result, an event becomes an ABCI event that `tx_search` can find.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import asdict, dataclass, field
from typing import Callable, ClassVar, TypeVar

from abci_app.state import Overlay


class ModuleError(Exception):
    """A user's tx broke a module rule. Subclasses set codespace and code once."""

    codespace: ClassVar[str] = "runtime"
    code: ClassVar[int] = 1

    def __init__(self, log: str):
        super().__init__(log)
        self.log = log


@dataclass(frozen=True)
class Event:
    """A past-tense fact as CometBFT gets it, e.g. Event("transfer", {"sender": ..., "amount": "5"}):
    what Context.emit makes of a declared EventType."""

    type: str
    attributes: dict[str, str]


class EventType:
    """Base of every declared event: a frozen dataclass in a module's Events section, e.g.

        @dataclass(frozen=True)
        class Transfer(EventType):
            type = "transfer"
            sender: str
            ...

    `type` is the ABCI event type; the fields are its attributes, in order, each
    sent as str(value). Modules emit only these (ctx.emit(Transfer(...))), so
    docs/modules.md, generated from the classes, lists exactly what is emitted.
    """

    type: ClassVar[str]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.__dict__.get("type"), str):
            raise TypeError(f"event {cls.__name__} must set its ABCI event type: type = \"...\"")


# Per event class: its field names in order and a getter of their values as a tuple, made on its first emit
# (@dataclass sets __match_args__ to the field names when the class is made): no reflection per event.
_EVENT_FIELDS: dict[type, tuple[tuple[str, ...], Callable[[EventType], tuple]]] = {}


def _event_fields(cls: type) -> tuple[tuple[str, ...], Callable[[EventType], tuple]]:
    names = cls.__match_args__
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        values = lambda event: (one(event),)  # noqa: E731
    else:
        values = operator.attrgetter(*names) if names else (lambda event: ())
    _EVENT_FIELDS[cls] = (names, values)
    return names, values


@dataclass(frozen=True)
class Vote:
    """One validator's part in the last block's commit (from FinalizeBlock)."""

    validator: bytes  # CometBFT consensus address: sha256(pubkey)[:20]
    power: int
    signed: bool


@dataclass(frozen=True)
class Misbehavior:
    """Evidence CometBFT hands over: e.g. a double sign at `height`."""

    kind: str  # "duplicate_vote" or "light_client_attack"
    validator: bytes
    height: int


@dataclass(frozen=True)
class BlockInfo:
    """What CometBFT tells us about the block being executed, beyond its txs."""

    proposer: bytes = b""
    hash: bytes = b""  # the decided block's hash: chain data every node agrees on, used for seeds
    votes: tuple[Vote, ...] = ()
    misbehavior: tuple[Misbehavior, ...] = ()


@dataclass(frozen=True)
class ValidatorUpdate:
    pubkey: bytes  # ed25519, 32 bytes
    power: int  # 0 removes the validator


@dataclass
class Context:
    state: Overlay
    chain_id: str
    height: int
    time_unix_ns: int  # the block header's time: never the wall clock
    block: BlockInfo = field(default_factory=BlockInfo)
    events: list[Event] = field(default_factory=list)
    validator_updates: list[ValidatorUpdate] = field(default_factory=list)
    record_events: bool = True  # False where no one reads them (CheckTx): emit only checks the type

    def emit(self, event: EventType) -> None:
        """Record a declared event; anything else is a bug (TypeError), so no undeclared event reaches CometBFT."""
        if not isinstance(event, EventType):
            raise TypeError(f"emit takes a declared event (an EventType dataclass), not {type(event).__name__}")
        if not self.record_events:
            return
        fields = _EVENT_FIELDS.get(type(event)) or _event_fields(type(event))
        self.events.append(Event(event.type, dict(zip(fields[0], map(str, fields[1](event))))))

    def child(self) -> "Context":
        """A context for one tx (or one message) whose writes and events can be dropped."""
        return Context(self.state.child(), self.chain_id, self.height, self.time_unix_ns, self.block, record_events=self.record_events)

    def merge(self, child: "Context") -> None:
        """Keep a child's writes and events: the tx (or message) succeeded."""
        child.state.write()
        self.events.extend(child.events)


# --- canonical encodings of state values ---------------------------------------
# Integers as decimal ASCII: unbounded, readable in `abci_query` output, and
# one canonical form per value (no leading zeros), so the app hash is stable.


def encode_int(value: int) -> bytes:
    assert value >= 0, "state integers are never negative"
    return str(value).encode()


def decode_int(raw: bytes | None) -> int:
    return 0 if raw is None else int(raw)


def encode_json(value) -> bytes:
    """Canonical JSON for records in state: sorted keys, no spaces, ints only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def decode_json(raw: bytes | None):
    return None if raw is None else json.loads(raw)


# --- module params: one frozen dataclass per module, stored as canonical JSON under its PARAMS_KEY ---

P = TypeVar("P")


def load_params(state: Overlay, key: bytes, params_type: type[P]) -> P:
    """A module's params as stored by genesis; the dataclass defaults before genesis has run."""
    raw = state.get(key)
    cached = _PARAMS_SEEN.get((params_type, raw))
    if cached is None:
        decoded = decode_json(raw)
        cached = params_type(**decoded) if decoded else params_type()
        if len(_PARAMS_SEEN) >= 64:
            _PARAMS_SEEN.clear()
        _PARAMS_SEEN[(params_type, raw)] = cached
    return cached


# Params are read several times per tx; parsing is a pure function of the stored bytes and
# Params are frozen dataclasses of plain values, so one parse per stored version is shared.
_PARAMS_SEEN: dict[tuple[type, bytes | None], object] = {}


def store_params(state: Overlay, key: bytes, params) -> None:
    state.set(key, encode_json(asdict(params)))


# --- user input in consensus code: rules that give the same answer on every Python --
# No str.isprintable(), str.isspace() or other Unicode-database calls: their
# answers change between Python minor versions, and so would consensus.

MAX_UINT64 = 2**64 - 1
MAX_JSON_DEPTH = 16  # far below json.loads' recursion limit on every supported Python


def is_printable_ascii(text: str, max_len: int, min_len: int = 1) -> bool:
    """min_len..max_len characters, each printable ASCII (space to '~')."""
    return min_len <= len(text) <= max_len and all(" " <= c <= "~" for c in text)


def parse_uint64(data: bytes | str) -> int:
    """A decimal id (ASCII digits, at most 2^64-1), as queries and messages carry ids; ValueError otherwise."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    if not 1 <= len(text) <= 20 or not all("0" <= c <= "9" for c in text):
        raise ValueError(f"expected a decimal id (0 to {MAX_UINT64}), got {text[:40]!r}")
    value = int(text)
    if value > MAX_UINT64:
        raise ValueError(f"id {text} is over 2^64-1")
    return value


def json_depth_within(text: str, max_depth: int) -> bool:
    """Whether arrays/objects in `text` nest at most max_depth deep: one scan, no recursion
    (json.loads recurses, and the depth at which it fails depends on the interpreter)."""
    depth, in_string, escaped = 0, False, False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "[" or c == "{":
            depth += 1
            if depth > max_depth:
                return False
        elif c == "]" or c == "}":
            depth -= 1
    return True


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _finite_float(text: str) -> float:
    # 1e400 parses as inf and would be stored as the non-JSON "Infinity", failing every later re-validation.
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def loads_bounded(text: str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH):
    """json.loads for user data in consensus code: ValueError unless `text` is at most
    max_bytes of UTF-8, nests at most max_depth deep and is strict JSON (no NaN/Infinity, no number that overflows a float).
    Parsed strings may still hold lone surrogates ("\\ud800"): check what you re-encode."""
    size = len(text.encode("utf-8"))  # UnicodeEncodeError (a ValueError) on a lone surrogate
    if size > max_bytes:
        raise ValueError(f"JSON is {size} bytes, limit is {max_bytes}")
    if not json_depth_within(text, max_depth):
        raise ValueError(f"JSON nests deeper than {max_depth} levels")
    return json.loads(text, parse_constant=_not_json, parse_float=_finite_float)


def is_utf8_encodable(text: str) -> bool:
    """False for strings holding lone surrogates, which protobuf and the store cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def events_encodable(events: list[Event]) -> bool:
    """Whether every type, key and value of `events` is UTF-8 encodable, as CometBFT needs. One encode of
    their concatenation: joining never pairs two lone surrogates into a valid character in a Python str."""
    return is_utf8_encodable("".join([text for e in events for text in (e.type, *e.attributes, *e.attributes.values())]))


# --- queues keyed by due height: hooks read only what is due ---------------------


def enqueue(state: Overlay, prefix: bytes, seq_key: bytes, due: int, value) -> None:
    """Store `value` under prefix + due height (8 BE) + a sequence number (8 BE): ordered by height, FIFO within one."""
    seq = decode_int(state.get(seq_key))
    state.set(seq_key, encode_int(seq + 1))
    state.set(prefix + due.to_bytes(8, "big") + seq.to_bytes(8, "big"), encode_json(value))


def due_entries(state: Overlay, prefix: bytes, height: int) -> list[tuple[bytes, object]]:
    """(key, value) of the entries due at `height` or before, in order: reading stops at the first later one."""
    due = []
    for key, raw in state.iter_prefix(prefix):
        if int.from_bytes(key[len(prefix) : len(prefix) + 8], "big") > height:
            break
        due.append((key, decode_json(raw)))
    return due


# --- content references: what datasets and model versions point at -------------

_CID_V1_BASE32 = re.compile(r"^b[a-z2-7]{58}$")  # CIDv1, sha2-256, base32: 59 characters
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def is_cid(text: str) -> bool:
    """A CIDv1 in base32 with a sha2-256 multihash, as `ipfs add --cid-version=1` prints it."""
    return bool(_CID_V1_BASE32.fullmatch(text))


def is_sha256_hex(text: str) -> bool:
    return bool(_SHA256_HEX.fullmatch(text))
