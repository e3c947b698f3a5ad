"""datasets: the registry of training data, its provenance and its market.

A dataset is a file on IPFS; the chain records where it is (CID), what it is
(sha256, bytes, tokens under a named tokenizer), who registered it, when,
under which licence, who owns it and the royalty it asks. Anyone may register
one (every field bounded, its bytes paid by the bank byte fee), but it trains
the model only once governance admits it with a sampling weight
(`MsgSetDatasetWeight`, sent only by the gov module account); weight 0
delists it. Rounds draw their steps across the admitted datasets by weight
(training.draw_steps), and every accepted submission pays each dataset's
owner its royalty for the windows drawn from it (training._pay_reward);
the totals are kept here as the dataset's earnings. The first registrant of a
sha256 owns it; governance may reassign a dataset's owner and royalty
(`MsgSetDatasetOwner`) when someone else proves the data is theirs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from abci_app import crypto, paging
from abci_app.context import (
    Context, EventType, ModuleError, decode_int, decode_json, encode_int, encode_json, is_cid, is_printable_ascii, is_sha256_hex,
    load_params, parse_uint64, store_params,
)
from abci_app.modules import bank
from abci_app.state import Overlay
from abci_app.tx import tx_pb2

# --- Params ---------------------------------------------------------------------

# Every stored field is bounded (and paid for by the byte fee); text is printable ASCII.
MAX_NAME = 64
MAX_LICENCE = 64
MAX_TOKENIZER = 64
MAX_ADMITTED = 16  # datasets with a weight at once: a round snapshots them all, and a version lists them (registry.MAX_DATASET_IDS)
MAX_WEIGHT = 1_000_000  # sampling weights are relative; the bound keeps sums small
MAX_ROYALTY_BPS = 10_000  # the hard ceiling of Params.max_royalty_bps: a royalty is a share of the reward, never more
GENESIS_WEIGHT = 1_000  # a genesis dataset's weight unless its entry says otherwise: genesis is the first admission
BPS = 10_000
GOV = bank.module_address("gov")  # the gov module account: it executes passed proposals' messages


@dataclass(frozen=True)
class Params:
    max_royalty_bps: int = 5_000  # the largest royalty a dataset may ask, in basis points of an accepted reward
    max_admitted: int = MAX_ADMITTED  # datasets with a nonzero weight at once

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"datasets.params.{name} must be a non-negative integer")
        if self.max_royalty_bps > MAX_ROYALTY_BPS:
            raise ValueError(f"datasets.params.max_royalty_bps must be at most {MAX_ROYALTY_BPS}")
        if not 1 <= self.max_admitted <= MAX_ADMITTED:
            raise ValueError(f"datasets.params.max_admitted must be 1 to {MAX_ADMITTED}")


# --- Storage --------------------------------------------------------------------

PREFIX = b"datasets/"
PARAMS_KEY = PREFIX + b"params"  # Params as canonical JSON
COUNT_KEY = PREFIX + b"count"  # number of datasets; ids are 0..count-1
DATASET_PREFIX = PREFIX + b"dataset/"  # <id 8 BE> -> Dataset JSON
BY_SHA256_PREFIX = PREFIX + b"sha256/"  # <digest 32> -> id: one entry per content
WEIGHT_PREFIX = PREFIX + b"weight/"  # <id 8 BE> -> sampling weight (> 0; absent = not admitted): at most max_admitted entries
EARNINGS_PREFIX = PREFIX + b"earnings/"  # <id 8 BE> -> Earnings JSON (absent = never drawn in an accepted submission)


@dataclass(frozen=True)
class Dataset:
    id: int
    name: str
    cid: str
    sha256: str
    licence: str
    bytes: int
    tokens: int
    tokenizer: str
    creator: str
    height: int
    owner: str = ""  # paid the royalties ("" only in records older than the market: the creator is paid)
    royalty_bps: int = 0  # share of an accepted reward per unit of the submission's windows drawn from it


@dataclass(frozen=True)
class Earnings:
    """What a dataset's windows earned: totals over every accepted submission that drew from it."""

    earned: int = 0  # royalties paid to its owner
    windows: int = 0  # sequences drawn from it in accepted submissions
    submissions: int = 0  # accepted submissions that drew from it


def dataset_key(dataset_id: int) -> bytes:
    return DATASET_PREFIX + dataset_id.to_bytes(8, "big")


def weight_key(dataset_id: int) -> bytes:
    return WEIGHT_PREFIX + dataset_id.to_bytes(8, "big")


def earnings_key(dataset_id: int) -> bytes:
    return EARNINGS_PREFIX + dataset_id.to_bytes(8, "big")


def get_params(state: Overlay) -> Params:
    return load_params(state, PARAMS_KEY, Params)


def get(state: Overlay, dataset_id: int) -> Dataset | None:
    raw = decode_json(state.get(dataset_key(dataset_id)))
    return Dataset(**raw) if raw else None


def exists(state: Overlay, dataset_id: int) -> bool:
    return state.get(dataset_key(dataset_id)) is not None


def count(state: Overlay) -> int:
    return decode_int(state.get(COUNT_KEY))


def owner_of(dataset: Dataset) -> str:
    return dataset.owner or dataset.creator


def weight(state: Overlay, dataset_id: int) -> int:
    return decode_int(state.get(weight_key(dataset_id)))


def admitted(state: Overlay) -> list[list[int]]:
    """[[id, weight]] of every dataset with a nonzero weight, by id (at most max_admitted)."""
    return [[int.from_bytes(k[len(WEIGHT_PREFIX):], "big"), decode_int(v)] for k, v in state.iter_prefix(WEIGHT_PREFIX)]


def earnings(state: Overlay, dataset_id: int) -> Earnings:
    raw = decode_json(state.get(earnings_key(dataset_id)))
    return Earnings(**raw) if raw else Earnings()


# --- Events ---------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRegistered(EventType):
    """A dataset's provenance was recorded under a new id (not yet drawn from: governance admits it)."""

    type = "dataset_registered"
    id: int
    name: str
    cid: str
    sha256: str
    creator: str
    owner: str
    royalty_bps: int


@dataclass(frozen=True)
class DatasetWeightSet(EventType):
    """Governance set a dataset's sampling weight (0 = delisted: no later round draws from it)."""

    type = "dataset_weight_set"
    id: int
    weight: int
    previous: int


@dataclass(frozen=True)
class DatasetOwnerSet(EventType):
    """Governance reassigned a dataset's owner and royalty (`previous_*`: what they were)."""

    type = "dataset_owner_set"
    id: int
    owner: str
    royalty_bps: int
    previous_owner: str
    previous_royalty_bps: int


@dataclass(frozen=True)
class RoyaltyPaid(EventType):
    """An accepted submission paid a dataset's owner for the windows drawn from it."""

    type = "royalty_paid"
    dataset: int
    owner: str
    amount: int
    windows: int
    round: int
    submission: int


# --- Errors ---------------------------------------------------------------------


class DatasetsError(ModuleError):
    codespace = "datasets"


class InvalidDataset(DatasetsError):
    """A field is missing or malformed (name, CID, sha256, licence, sizes, owner, royalty), or a module account registers without naming an owner."""

    code = 1


class DuplicateDataset(DatasetsError):
    """The same content (sha256) is already registered."""

    code = 2


class UnknownDataset(DatasetsError):
    """No dataset has that id."""

    code = 3


class Unauthorized(DatasetsError):
    """Only the gov module account (a passed proposal) may set a dataset's weight or reassign its owner."""

    code = 4


class InvalidWeight(DatasetsError):
    """A weight is above MAX_WEIGHT, or admitting one more dataset would exceed max_admitted."""

    code = 5


class DatasetMismatch(DatasetsError):
    """MsgSetDatasetWeight names a sha256 other than the dataset's: the proposal was drafted for other content."""

    code = 6


# --- Public API for other modules (training) ------------------------------------------


def record_royalty(ctx: Context, dataset_id: int, owner: str, amount: int, windows: int, round_id: int, submission: int) -> None:
    """Add an accepted submission's use of a dataset to its earnings (the caller mints `amount` to `owner`)."""
    e = earnings(ctx.state, dataset_id)
    e = Earnings(earned=e.earned + amount, windows=e.windows + windows, submissions=e.submissions + 1)
    ctx.state.set(earnings_key(dataset_id), encode_json(asdict(e)))
    ctx.emit(RoyaltyPaid(dataset=dataset_id, owner=owner, amount=amount, windows=windows, round=round_id, submission=submission))


# --- Calls ------------------------------------------------------------------------


def _validate(msg: tx_pb2.MsgRegisterDataset, params: Params) -> str:
    """Every rule on a registration; returns the owner's canonical address ("" = the signer)."""
    if not is_printable_ascii(msg.name, MAX_NAME):
        raise InvalidDataset(f"invalid dataset name {msg.name[:80]!r}: 1 to {MAX_NAME} printable ASCII characters")
    if not is_cid(msg.cid):
        raise InvalidDataset(f"invalid CID {msg.cid[:80]!r}: expected a CIDv1 in base32 (bafk…/bafy…)")
    if not is_sha256_hex(msg.sha256):
        raise InvalidDataset(f"invalid sha256 {msg.sha256[:80]!r}: expected 64 lower-case hex digits")
    if not is_printable_ascii(msg.licence, MAX_LICENCE):
        raise InvalidDataset(f"a dataset needs a licence of 1 to {MAX_LICENCE} printable ASCII characters (e.g. 'public-domain', 'CC-BY-4.0')")
    if not is_printable_ascii(msg.tokenizer, MAX_TOKENIZER, min_len=0):
        raise InvalidDataset(f"invalid tokenizer {msg.tokenizer[:80]!r}: at most {MAX_TOKENIZER} printable ASCII characters")
    if msg.bytes == 0:
        raise InvalidDataset("a dataset cannot be empty (bytes = 0)")
    _check_royalty(msg.royalty_bps, params)
    return _owner(msg.owner) if msg.owner else ""


def _check_royalty(royalty_bps: int, params: Params) -> None:
    if royalty_bps > params.max_royalty_bps:
        raise InvalidDataset(f"royalty {royalty_bps} bps is above the maximum of {params.max_royalty_bps} bps (datasets.params.max_royalty_bps)")


def _owner(text: str) -> str:
    """The canonical address of a dataset owner; a module account cannot be one."""
    try:
        owner = crypto.parse_address(text[:128])
    except crypto.AddressError as exc:
        raise InvalidDataset(f"invalid owner address {text[:80]!r}: {exc}") from None
    if bank.is_module_account(owner):  # minted royalties would break that module's books
        raise InvalidDataset(f"invalid owner address {owner}: a module account cannot own a dataset")
    return owner


def register_dataset(ctx: Context, signer: str, msg: tx_pb2.MsgRegisterDataset) -> None:
    """MsgRegisterDataset: record a dataset's provenance, owner and royalty under the next id (not yet admitted)."""
    owner = _validate(msg, get_params(ctx.state))
    if not owner and bank.is_module_account(signer):  # a proposal's registration: royalties minted to gov would be stranded
        raise InvalidDataset(f"{signer} is a module account (a proposal registers as gov): name the dataset's owner address")
    owner = owner or signer
    digest_key = BY_SHA256_PREFIX + bytes.fromhex(msg.sha256)
    if ctx.state.get(digest_key) is not None:
        raise DuplicateDataset(f"dataset with sha256 {msg.sha256} is already registered as id {decode_int(ctx.state.get(digest_key))}")
    dataset = Dataset(
        id=count(ctx.state), name=msg.name, cid=msg.cid, sha256=msg.sha256, licence=msg.licence,
        bytes=msg.bytes, tokens=msg.tokens, tokenizer=msg.tokenizer, creator=signer, height=ctx.height,
        owner=owner, royalty_bps=msg.royalty_bps,
    )
    ctx.state.set(dataset_key(dataset.id), encode_json(asdict(dataset)))
    ctx.state.set(digest_key, encode_int(dataset.id))
    ctx.state.set(COUNT_KEY, encode_int(dataset.id + 1))
    ctx.emit(DatasetRegistered(id=dataset.id, name=dataset.name, cid=dataset.cid, sha256=dataset.sha256, creator=signer,
                               owner=owner, royalty_bps=dataset.royalty_bps))


def set_dataset_weight(ctx: Context, signer: str, msg: tx_pb2.MsgSetDatasetWeight) -> None:
    """MsgSetDatasetWeight: the gov module account admits a dataset with a sampling weight, changes it, or delists it (0).

    A round snapshots the weights when it opens: a change applies from the next round."""
    if signer != GOV:
        raise Unauthorized(f"{signer} may not set dataset weights: only the gov module account {GOV} may (submit a proposal)")
    dataset = get(ctx.state, msg.dataset)
    if dataset is None:
        raise UnknownDataset(f"unknown dataset {msg.dataset} (see `gradchain dataset list`)")
    if msg.sha256 and msg.sha256 != dataset.sha256:
        # Registration is permissionless, so ids drafted before a vote may point at someone else's data by then.
        raise DatasetMismatch(f"dataset {msg.dataset} has sha256 {dataset.sha256}, not {msg.sha256[:64]!r}: "
                              f"find the intended dataset's id (`gradchain dataset list`) and propose again")
    if msg.weight > MAX_WEIGHT:
        raise InvalidWeight(f"weight {msg.weight} is above the maximum of {MAX_WEIGHT}")
    previous = weight(ctx.state, msg.dataset)
    limit = get_params(ctx.state).max_admitted
    if msg.weight and not previous and len(admitted(ctx.state)) >= limit:
        raise InvalidWeight(f"{limit} datasets are admitted already (datasets.params.max_admitted): delist one first")
    if msg.weight:
        ctx.state.set(weight_key(msg.dataset), encode_int(msg.weight))
    else:
        ctx.state.delete(weight_key(msg.dataset))
    ctx.emit(DatasetWeightSet(id=msg.dataset, weight=msg.weight, previous=previous))


def set_dataset_owner(ctx: Context, signer: str, msg: tx_pb2.MsgSetDatasetOwner) -> None:
    """MsgSetDatasetOwner: the gov module account reassigns a dataset's owner and royalty (first registration of a
    sha256 is first come: this is the remedy when someone else proves the data is theirs). Royalties paid from the
    next accepted submission on go to the new owner at the new rate; past earnings stay where they were paid."""
    if signer != GOV:
        raise Unauthorized(f"{signer} may not reassign datasets: only the gov module account {GOV} may (submit a proposal)")
    dataset = get(ctx.state, msg.dataset)
    if dataset is None:
        raise UnknownDataset(f"unknown dataset {msg.dataset} (see `gradchain dataset list`)")
    if not msg.owner:
        raise InvalidDataset("a reassignment names the new owner address")
    owner = _owner(msg.owner)
    _check_royalty(msg.royalty_bps, get_params(ctx.state))
    ctx.state.set(dataset_key(dataset.id), encode_json(asdict(replace(dataset, owner=owner, royalty_bps=msg.royalty_bps))))
    ctx.emit(DatasetOwnerSet(id=dataset.id, owner=owner, royalty_bps=msg.royalty_bps, previous_owner=owner_of(dataset),
                             previous_royalty_bps=dataset.royalty_bps))


CALLS = {"register_dataset": register_dataset, "set_dataset_weight": set_dataset_weight, "set_dataset_owner": set_dataset_owner}

# --- Genesis ----------------------------------------------------------------------


def genesis(ctx: Context, config: dict) -> None:
    """datasets genesis: {"params": {...}, "datasets": [{name, cid, sha256, licence, bytes, tokens, tokenizer, creator?, owner?,
    royalty_bps?, weight?}]}. Genesis admits its datasets: each gets `weight` (default GENESIS_WEIGHT; 0 = registered only)."""
    params = Params(**config.get("params", {}))
    params.validate()
    store_params(ctx.state, PARAMS_KEY, params)
    for entry in config.get("datasets", []):
        fields = {k: v for k, v in entry.items() if k not in ("creator", "weight")}
        if fields.get("royalty_bps") and not crypto.is_address(fields.get("owner") or entry.get("creator", "")):
            raise ValueError(f"genesis dataset {entry.get('name')!r}: a royalty needs an owner address to pay")
        try:
            register_dataset(ctx, entry.get("creator", "genesis"), tx_pb2.MsgRegisterDataset(**fields))
            set_dataset_weight(ctx, GOV, tx_pb2.MsgSetDatasetWeight(dataset=count(ctx.state) - 1, weight=entry.get("weight", GENESIS_WEIGHT)))
        except ModuleError as exc:
            raise ValueError(f"genesis dataset {entry.get('name')!r}: {exc.log}") from None


# --- Queries ----------------------------------------------------------------------


def query_dataset(data: bytes) -> bytes:
    """/datasets/dataset ID -> Dataset JSON."""
    return dataset_key(parse_uint64(data))


def query_weight(data: bytes) -> bytes:
    """/datasets/weight ID -> the dataset's sampling weight (empty = not admitted)."""
    return weight_key(parse_uint64(data))


def query_earnings(data: bytes) -> bytes:
    """/datasets/earnings ID -> Earnings JSON (empty = nothing earned yet)."""
    return earnings_key(parse_uint64(data))


def query_params(data: bytes) -> bytes:
    """/datasets/params -> Params JSON."""
    return PARAMS_KEY


QUERIES = {"dataset": query_dataset, "weight": query_weight, "earnings": query_earnings, "params": query_params}


def market_entry(state: Overlay, dataset: Dataset) -> dict:
    """A dataset's record with its market state: owner, royalty, weight and earnings."""
    return asdict(dataset) | {"owner": owner_of(dataset), "weight": weight(state, dataset.id)} | asdict(earnings(state, dataset.id))


def view_list(state: Overlay, data: bytes) -> bytes:
    """/datasets/list [/AFTER] -> a page (abci_app.paging) of datasets by id, from the first after id AFTER, each
    with its owner, royalty, weight and earnings."""
    def read(dataset_id: int):
        raw = state.get(dataset_key(dataset_id))
        return None if raw is None else (len(raw), market_entry(state, Dataset(**decode_json(raw))))
    return paging.by_id("/datasets/list", data, count(state), read)


def view_admitted(state: Overlay, data: bytes) -> bytes:
    """/datasets/admitted -> [[id, weight]] of the datasets rounds draw from, by id."""
    return encode_json(admitted(state))


VIEWS = {"list": view_list, "admitted": view_admitted}
