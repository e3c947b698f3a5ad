"""What a module call sees: the state of its tx, the block, and an event sink.

Shared by every module so that storage, events and errors look the same
everywhere: a module error carries (codespace, code, log) straight into the
ABCI result, an event becomes an ABCI event that `tx_search` can find.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import ClassVar

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
    """A past-tense fact, e.g. Event("transfer", {"sender": ..., "amount": "5"})."""

    type: str
    attributes: dict[str, str]


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

    def emit(self, type_: str, **attributes: str | int) -> None:
        self.events.append(Event(type_, {k: str(v) for k, v in attributes.items()}))

    def child(self) -> "Context":
        """A context for one tx (or one message) whose writes and events can be dropped."""
        return Context(self.state.child(), self.chain_id, self.height, self.time_unix_ns, self.block)

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


# --- content references: what datasets and model versions point at -------------

_CID_V1_BASE32 = re.compile(r"^b[a-z2-7]{58}$")  # CIDv1, sha2-256, base32: 59 characters
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def is_cid(text: str) -> bool:
    """A CIDv1 in base32 with a sha2-256 multihash, as `ipfs add --cid-version=1` prints it."""
    return bool(_CID_V1_BASE32.match(text))


def is_sha256_hex(text: str) -> bool:
    return bool(_SHA256_HEX.match(text))
