"""datasets: the registry of training data and its provenance.

A dataset is a file on IPFS; the chain records where it is (CID), what it is
(sha256, bytes, tokens under a named tokenizer), who registered it, when, and
under which licence. Training rounds draw their batches from registered
datasets only, so every model version's data is traceable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from abci_app.context import (
    Context, EventType, ModuleError, decode_int, decode_json, encode_int, encode_json, is_cid, is_printable_ascii, is_sha256_hex,
    parse_uint64,
)
from abci_app.state import Overlay
from abci_app.tx import tx_pb2

# --- Params ---------------------------------------------------------------------

# Every stored field is bounded (and paid for by the byte fee); text is printable ASCII.
MAX_NAME = 64
MAX_LICENCE = 64
MAX_TOKENIZER = 64

# --- Storage --------------------------------------------------------------------

PREFIX = b"datasets/"
COUNT_KEY = PREFIX + b"count"  # number of datasets; ids are 0..count-1
DATASET_PREFIX = PREFIX + b"dataset/"  # <id 8 BE> -> Dataset JSON
BY_SHA256_PREFIX = PREFIX + b"sha256/"  # <digest 32> -> id: one entry per content


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


def dataset_key(dataset_id: int) -> bytes:
    return DATASET_PREFIX + dataset_id.to_bytes(8, "big")


def get(state: Overlay, dataset_id: int) -> Dataset | None:
    raw = decode_json(state.get(dataset_key(dataset_id)))
    return Dataset(**raw) if raw else None


def exists(state: Overlay, dataset_id: int) -> bool:
    return state.get(dataset_key(dataset_id)) is not None


def count(state: Overlay) -> int:
    return decode_int(state.get(COUNT_KEY))


def all_datasets(state: Overlay) -> list[Dataset]:
    return [Dataset(**decode_json(v)) for _, v in state.iter_prefix(DATASET_PREFIX)]


# --- Events ---------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRegistered(EventType):
    """A dataset's provenance was recorded under a new id."""

    type = "dataset_registered"
    id: int
    name: str
    cid: str
    sha256: str
    creator: str


# --- Errors ---------------------------------------------------------------------


class DatasetsError(ModuleError):
    codespace = "datasets"


class InvalidDataset(DatasetsError):
    """A field is missing or malformed (name, CID, sha256, licence, sizes)."""

    code = 1


class DuplicateDataset(DatasetsError):
    """The same content (sha256) is already registered."""

    code = 2


class UnknownDataset(DatasetsError):
    """No dataset has that id."""

    code = 3


# --- Calls ------------------------------------------------------------------------


def _validate(msg: tx_pb2.MsgRegisterDataset) -> None:
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


def register_dataset(ctx: Context, signer: str, msg: tx_pb2.MsgRegisterDataset) -> None:
    """MsgRegisterDataset: record a dataset's provenance under the next id."""
    _validate(msg)
    digest_key = BY_SHA256_PREFIX + bytes.fromhex(msg.sha256)
    if ctx.state.get(digest_key) is not None:
        raise DuplicateDataset(f"dataset with sha256 {msg.sha256} is already registered as id {decode_int(ctx.state.get(digest_key))}")
    dataset = Dataset(
        id=count(ctx.state), name=msg.name, cid=msg.cid, sha256=msg.sha256, licence=msg.licence,
        bytes=msg.bytes, tokens=msg.tokens, tokenizer=msg.tokenizer, creator=signer, height=ctx.height,
    )
    ctx.state.set(dataset_key(dataset.id), encode_json(asdict(dataset)))
    ctx.state.set(digest_key, encode_int(dataset.id))
    ctx.state.set(COUNT_KEY, encode_int(dataset.id + 1))
    ctx.emit(DatasetRegistered(id=dataset.id, name=dataset.name, cid=dataset.cid, sha256=dataset.sha256, creator=signer))


CALLS = {"register_dataset": register_dataset}

# --- Genesis ----------------------------------------------------------------------


def genesis(ctx: Context, config: dict) -> None:
    """datasets genesis: {"datasets": [{name, cid, sha256, licence, bytes, tokens, tokenizer, creator?}]}."""
    for entry in config.get("datasets", []):
        msg = tx_pb2.MsgRegisterDataset(**{k: v for k, v in entry.items() if k != "creator"})
        try:
            register_dataset(ctx, entry.get("creator", "genesis"), msg)
        except ModuleError as exc:
            raise ValueError(f"genesis dataset {entry.get('name')!r}: {exc.log}") from None


# --- Queries ----------------------------------------------------------------------


def query_dataset(data: bytes) -> bytes:
    """/datasets/dataset ID -> Dataset JSON."""
    return dataset_key(parse_uint64(data))


QUERIES = {"dataset": query_dataset}


def view_list(state: Overlay, data: bytes) -> bytes:
    """/datasets/list -> every dataset, by id."""
    return encode_json([asdict(d) for d in all_datasets(state)])


VIEWS = {"list": view_list}
