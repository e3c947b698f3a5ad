"""registry: model versions and their lineage.

Each version points at a safetensors checkpoint on IPFS (CID + sha256) and
records its parent, model family and config (hashed, so a downloader can
check that the file's config matches), the datasets it was trained on, who
registered it and when. Version 0 comes from genesis. Until training rounds
register versions themselves, only the `authority` in params may add one: by
default the gov module account, so a version is registered by tx only as a
passed proposal's message (a genesis may name another account, e.g. a dev key).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from abci_app import crypto, paging
from abci_app.context import (
    MAX_UINT64, Context, EventType, ModuleError, decode_int, decode_json, encode_int, encode_json, is_cid, is_printable_ascii,
    is_sha256_hex, is_utf8_encodable, load_params, loads_bounded, parse_uint64, store_params,
)
from abci_app.modules import datasets, gov
from abci_app.state import Overlay
from abci_app.tx import tx_pb2

# --- Params ---------------------------------------------------------------------

# Every stored field is bounded (and paid for by the byte fee).
MAX_FAMILY = 32
MAX_CONFIG_BYTES = 4096  # UTF-8 bytes of config_json
MAX_CONFIG_DEPTH = 8  # nesting of config_json, checked before json.loads
MAX_LICENCE = 256  # a licence with its attribution (SmolLM2's is 89 characters)
MAX_NOTE = 512
MAX_DATASET_IDS = 16
MAX_METRICS = 16
MAX_METRIC_NAME = 64
MAX_CONTRIBUTIONS = 256  # accepted submissions a version records (training.Params.max_submissions is capped by it)


@dataclass(frozen=True)
class Params:
    authority: str = gov.GOV  # the only address allowed to register versions by tx: the gov module account unless genesis names another

    def validate(self) -> None:
        if not isinstance(self.authority, str) or not crypto.is_address(self.authority):
            raise ValueError(f"registry.params.authority must be an address, got {self.authority!r:.80}")


# --- Storage --------------------------------------------------------------------

PREFIX = b"registry/"
PARAMS_KEY = PREFIX + b"params"  # Params as canonical JSON
COUNT_KEY = PREFIX + b"count"  # number of versions; ids are 0..count-1, the latest is count-1
VERSION_PREFIX = PREFIX + b"version/"  # <id 8 BE> -> ModelVersion JSON
BY_SHA256_PREFIX = PREFIX + b"sha256/"  # <digest 32> -> id


@dataclass(frozen=True)
class ModelVersion:
    id: int
    parent: int | None  # None only for version 0
    cid: str
    sha256: str
    bytes: int
    family: str
    config_json: str  # canonical JSON (sorted keys); its sha256 is config_hash
    config_hash: str
    dataset_ids: list[int]
    licence: str
    creator: str
    height: int
    round: int | None = None  # the training round that produced it, if any
    metrics: dict[str, int] = field(default_factory=dict)  # integers only, e.g. held_out_loss_micro
    note: str = ""
    # Provenance: one Contribution per accepted submission merged into this version, in submission order.
    contributions: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Contribution:
    """An accepted submission's provenance: who trained, on which data, from which seed, and the delta it gave."""

    submission: int
    trainer: str
    cid: str  # the delta file
    sha256: str
    seed: str  # the round's seed: its batches are abci_app.ml.train.batch_seed(seed, trainer, dataset sha256) per drawn dataset
    windows: list[list[int]]  # [[dataset id, sequences drawn from it]], by id


def version_key(version_id: int) -> bytes:
    return VERSION_PREFIX + version_id.to_bytes(8, "big")


def get(state: Overlay, version_id: int) -> ModelVersion | None:
    raw = decode_json(state.get(version_key(version_id)))
    return ModelVersion(**raw) if raw else None


def count(state: Overlay) -> int:
    return decode_int(state.get(COUNT_KEY))


def latest(state: Overlay) -> ModelVersion | None:
    n = count(state)
    return get(state, n - 1) if n else None


def config_hash(family: str, config_json: str) -> str:
    """sha256 of canonical {"config", "family"} JSON: the same digest abci_app.ml's
    ModelFamily.config_hash gives, so a downloader checks a file against its entry."""
    doc = {"config": json.loads(config_json), "family": family}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def canonical_config(text: str) -> str:
    """The canonical form of a model config, or ValueError: at most MAX_CONFIG_BYTES of
    UTF-8, nesting checked without recursion before parsing, a JSON object, encodable."""
    config = loads_bounded(text, MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH)
    if not isinstance(config, dict):
        raise ValueError("model config must be a JSON object")
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if not is_utf8_encodable(canonical):  # "\ud800" parses to a lone surrogate
        raise ValueError("model config holds a lone surrogate (\\ud800-\\udfff escape)")
    return canonical


# --- Events ---------------------------------------------------------------------


@dataclass(frozen=True)
class VersionRegistered(EventType):
    """A model version was recorded (parent "" for version 0)."""

    type = "version_registered"
    id: int
    parent: int | str
    cid: str
    sha256: str
    family: str
    creator: str


# --- Errors ---------------------------------------------------------------------


class RegistryError(ModuleError):
    codespace = "registry"


class Unauthorized(RegistryError):
    """Only the registry authority may register versions by tx."""

    code = 1


class InvalidVersion(RegistryError):
    """A field is missing or malformed (CID, sha256, family, config)."""

    code = 2


class UnknownParent(RegistryError):
    """The parent version does not exist."""

    code = 3


class UnknownDataset(RegistryError):
    """A listed dataset id is not registered."""

    code = 4


class DuplicateVersion(RegistryError):
    """A version with the same checkpoint sha256 exists."""

    code = 5


# --- Public API for other modules (training) ------------------------------------------


def register(
    ctx: Context, *, parent: int | None, cid: str, sha256: str, size: int, family: str, config_json: str,
    dataset_ids: list[int], licence: str, creator: str, round: int | None = None,
    metrics: dict[str, int] | None = None, note: str = "", contributions: list[Contribution] | None = None,
) -> ModelVersion:
    """Check every field, then record the next version; raises a RegistryError on bad input."""
    if not is_cid(cid):
        raise InvalidVersion(f"invalid CID {cid[:80]!r}: expected a CIDv1 in base32")
    if not is_sha256_hex(sha256):
        raise InvalidVersion(f"invalid sha256 {sha256[:80]!r}: expected 64 lower-case hex digits")
    if not is_printable_ascii(family, MAX_FAMILY):
        raise InvalidVersion(f"invalid model family {family[:80]!r}: 1 to {MAX_FAMILY} printable ASCII characters")
    if not _is_uint64(size) or size == 0:
        raise InvalidVersion(f"invalid checkpoint size {size!r}: a positive integer of bytes")
    if not is_printable_ascii(licence, MAX_LICENCE, min_len=0):
        raise InvalidVersion(f"invalid licence {licence[:80]!r}: at most {MAX_LICENCE} printable ASCII characters")
    if not is_printable_ascii(note, MAX_NOTE, min_len=0):
        raise InvalidVersion(f"invalid note: at most {MAX_NOTE} printable ASCII characters")
    if len(dataset_ids) > MAX_DATASET_IDS or not all(_is_uint64(d) for d in dataset_ids):
        raise InvalidVersion(f"at most {MAX_DATASET_IDS} dataset ids, each an integer id")
    metrics = metrics or {}
    if len(metrics) > MAX_METRICS or not all(is_printable_ascii(k, MAX_METRIC_NAME) and _is_int(v) for k, v in metrics.items()):
        raise InvalidVersion(f"at most {MAX_METRICS} metrics, each a name of printable ASCII and an integer")
    contributions = contributions or []
    if len(contributions) > MAX_CONTRIBUTIONS or not all(_valid_contribution(c) for c in contributions):
        raise InvalidVersion(f"at most {MAX_CONTRIBUTIONS} contributions, each with a trainer address, a delta CID and sha256, "
                             f"a seed and at most {MAX_DATASET_IDS} [dataset id, windows] pairs")
    try:
        config_text = canonical_config(config_json)
    except ValueError as exc:
        raise InvalidVersion(f"invalid model config: {exc}") from None
    n = count(ctx.state)
    if n and (not _is_uint64(parent) or get(ctx.state, parent) is None):
        raise UnknownParent(f"unknown parent version {parent!r} (latest is {n - 1})")
    missing = [d for d in dict.fromkeys([*dataset_ids, *(d for c in contributions for d, _ in c.windows)]) if not datasets.exists(ctx.state, d)]
    if missing:
        raise UnknownDataset(f"unknown dataset ids {missing} (see `gradchain dataset list`)")
    digest_key = BY_SHA256_PREFIX + bytes.fromhex(sha256)
    if ctx.state.get(digest_key) is not None:
        raise DuplicateVersion(f"checkpoint {sha256} is already version {decode_int(ctx.state.get(digest_key))}")
    version = ModelVersion(
        id=n, parent=parent if n else None, cid=cid, sha256=sha256, bytes=size, family=family,
        config_json=config_text, config_hash=config_hash(family, config_text), dataset_ids=list(dataset_ids),
        licence=licence, creator=creator, height=ctx.height, round=round, metrics=dict(sorted(metrics.items())), note=note,
        contributions=[asdict(c) for c in contributions],
    )
    ctx.state.set(version_key(n), encode_json(asdict(version)))
    ctx.state.set(digest_key, encode_int(n))
    ctx.state.set(COUNT_KEY, encode_int(n + 1))
    ctx.emit(VersionRegistered(id=n, parent="" if version.parent is None else version.parent, cid=cid, sha256=sha256, family=family, creator=creator))
    return version


def _valid_contribution(c: Contribution) -> bool:
    return (
        _is_uint64(c.submission) and crypto.is_address(c.trainer) and is_cid(c.cid) and is_sha256_hex(c.sha256) and is_sha256_hex(c.seed)
        and len(c.windows) <= MAX_DATASET_IDS and all(len(w) == 2 and _is_uint64(w[0]) and _is_uint64(w[1]) for w in c.windows)
    )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_uint64(value) -> bool:
    return _is_int(value) and 0 <= value <= MAX_UINT64


# --- Calls ------------------------------------------------------------------------


def register_version(ctx: Context, signer: str, msg: tx_pb2.MsgRegisterVersion) -> None:
    """MsgRegisterVersion: the authority registers a new version."""
    authority = load_params(ctx.state, PARAMS_KEY, Params).authority
    if signer != authority:
        who = "the gov module account, through a passed proposal" if authority == gov.GOV else f"the registry authority {authority}"
        raise Unauthorized(f"{signer} may not register model versions: only {who} may")
    register(
        ctx, parent=msg.parent, cid=msg.cid, sha256=msg.sha256, size=msg.bytes, family=msg.family,
        config_json=msg.config_json, dataset_ids=list(msg.dataset_ids), licence=msg.licence, creator=signer, note=msg.note,
    )


CALLS = {"register_version": register_version}

# --- Genesis ----------------------------------------------------------------------


def genesis(ctx: Context, config: dict) -> None:
    """registry genesis: {"params": {"authority"}, "versions": [{cid, sha256, bytes, family, config_json|config, dataset_ids, licence, ...}]}."""
    params = Params(**config.get("params", {}))
    params.validate()
    store_params(ctx.state, PARAMS_KEY, params)
    for entry in config.get("versions", []):
        config_json = entry.get("config_json") or json.dumps(entry.get("config", {}))
        try:
            register(
                ctx, parent=entry.get("parent"), cid=entry["cid"], sha256=entry["sha256"], size=entry["bytes"],
                family=entry["family"], config_json=config_json, dataset_ids=entry.get("dataset_ids", []),
                licence=entry.get("licence", ""), creator=entry.get("creator", "genesis"), metrics=entry.get("metrics"),
                note=entry.get("note", "genesis"),
            )
        except ModuleError as exc:
            raise ValueError(f"genesis model version: {exc.log}") from None


# --- Queries ----------------------------------------------------------------------


def query_version(data: bytes) -> bytes:
    """/registry/version ID -> ModelVersion JSON."""
    return version_key(parse_uint64(data))


def query_params(data: bytes) -> bytes:
    """/registry/params -> Params JSON."""
    return PARAMS_KEY


QUERIES = {"version": query_version, "params": query_params}


def view_latest(state: Overlay, data: bytes) -> bytes:
    """/registry/latest -> the newest ModelVersion (null before genesis registers one)."""
    version = latest(state)
    return encode_json(asdict(version) if version else None)


def view_history(state: Overlay, data: bytes) -> bytes:
    """/registry/history [/AFTER] -> a page (abci_app.paging) of versions, oldest first, from the first after id
    AFTER. A version carries up to MAX_CONTRIBUTIONS contributions (~100 KB), so a page may hold only a few."""
    def read(version_id: int):
        raw = state.get(version_key(version_id))
        return None if raw is None else (len(raw), asdict(ModelVersion(**decode_json(raw))))
    return paging.by_id("/registry/history", data, count(state), read)


VIEWS = {"latest": view_latest, "history": view_history}
