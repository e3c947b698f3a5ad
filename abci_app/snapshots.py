"""State sync snapshots (ABCI 2.0): taking them every N blocks, serving their chunks, restoring one.

Format 1. A snapshot at height H is the flat state (every key and value of the
`kv` table at H) in ascending key order, cut into chunks of at most CHUNK_BYTES
(a chunk holds at least one entry). Chunk i is

    CHUNK_MAGIC || i (4 bytes BE) || entries, each: len(key) (4 BE) || key || len(value) (4 BE) || value

The metadata is the chunks' sha256 digests concatenated, and the snapshot hash
is sha256(metadata). All of it is a pure function of the state, so every honest
node at H makes byte-identical chunks and the same hash: CometBFT can fetch
chunks from any of them.

Trust. Chunk digests only say that a chunk is the one the offering peer listed;
the state is accepted only if the Merkle-Patricia root rebuilt from it (the
same nodes a block's batch update makes from the blank root, built from the
sorted entries without recursion: mpt.SortedBuild) equals the app hash
CometBFT took from a light-client-verified header. Entries and trie nodes are
staged on disk in one open SQLite transaction as chunks arrive (memory holds
only the trie's open path); it commits only when the roots match. Keys, values
and chunk sizes are bounded by what real state holds, and offers by
--statesync-max-bytes. Anything bad a peer sends ends in REJECT_SNAPSHOT that
names the peers who served it, never in ABORT.

Taking a snapshot never blocks Commit for long and never changes the app hash:
Commit opens a read transaction on a second SQLite connection (WAL mode, so it
sees height H while later blocks commit) and a background thread writes the
chunks to files under <home>/snapshots/, then renames the folder into place. A
failure is logged and the snapshot skipped.

Nothing outside the Merkle state needs restoring: every rule reads the `kv`
table through overlays. The in-memory memos are pure functions of their keys
and start empty on any node: the store's node and value caches, runtime.VERIFIED
(txs by sha256), context._PARAMS_SEEN (params by their stored bytes), crypto's
lru_caches; bank._MODULE_ACCOUNTS is fixed at import. The app home holds
nothing else but state.sqlite and snapshots/.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.state import Pruning, Store
from abci_app.state.pruning import STRATEGIES

log = logging.getLogger("snapshots")

FORMAT = 1
CHUNK_BYTES = 4 * 1024 * 1024  # CometBFT's p2p chunk message allows 16 MiB
MAX_CHUNKS = 100_000  # metadata of 3.2 MB stays under CometBFT's 4 MB snapshot message
DEFAULT_RESTORE_MAX_BYTES = 4 * 1024**3  # a snapshot offered to a joining node may be this big (state today: far under 1 GiB)
# The longest key the modules write is a prefix of under 30 bytes plus ids of at most 36 (training/verdict/);
# the longest values are JSON records bounded by a tx's size or by module limits (a round's committee).
# Entries past these come only from a bad snapshot; the key bound also bounds the trie's depth.
MAX_STATE_KEY = 128
MAX_STATE_VALUE = 1024 * 1024
MAX_CHUNK = CHUNK_BYTES + 8 + MAX_STATE_KEY + MAX_STATE_VALUE  # a chunk of honest state: under CHUNK_BYTES, or one entry
CHUNK_MAGIC = b"GCS1"
_HEADER = len(CHUNK_MAGIC) + 4
DIGEST = 32
_FOLDER = re.compile(rf"[0-9]{{20}}-{FORMAT}")  # <height, zero-padded so names sort by height>-<format>
SNAPSHOT_FILE = "snapshot.pb"  # the abci.Snapshot, written last: a folder without it is incomplete

Entry = tuple[bytes, bytes]


@dataclass(frozen=True)
class SnapshotSettings:
    """interval: take a snapshot after committing every height divisible by it (0 = never);
    keep_recent: snapshots kept on disk, newest first."""

    interval: int = 0
    keep_recent: int = 2
    chunk_bytes: int = CHUNK_BYTES  # part of what makes chunks identical across nodes: change only in tests
    restore_max_bytes: int = DEFAULT_RESTORE_MAX_BYTES  # offers of more chunks than fit (at CHUNK_BYTES each) are refused

    def __post_init__(self) -> None:
        if self.interval < 0:
            raise ValueError(f"snapshot interval must be >= 0 (0 = off), got {self.interval}")
        if self.keep_recent < 1:
            raise ValueError(f"snapshot keep-recent must be >= 1, got {self.keep_recent}")
        if not 64 <= self.chunk_bytes <= CHUNK_BYTES:
            raise ValueError(f"snapshot chunk size must be within 64..{CHUNK_BYTES} bytes, got {self.chunk_bytes}")
        if self.restore_max_bytes < CHUNK_BYTES:
            raise ValueError(f"state sync max bytes must be >= {CHUNK_BYTES} (one chunk), got {self.restore_max_bytes}")


# --- Format 1: chunks of sorted entries ----------------------------------------


def encode_chunks(entries: Iterable[Entry], chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Key-sorted entries as chunks; the cut points depend only on the entries and chunk_bytes.
    An empty state still makes one chunk (CometBFT takes an empty chunk for a missing one)."""
    index, parts, size = 0, [], _HEADER
    for key, value in entries:
        entry = len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value
        if parts and size + len(entry) > chunk_bytes:
            yield CHUNK_MAGIC + index.to_bytes(4, "big") + b"".join(parts)
            index, parts, size = index + 1, [], _HEADER
        parts.append(entry)
        size += len(entry)
    yield CHUNK_MAGIC + index.to_bytes(4, "big") + b"".join(parts)


def decode_chunk(index: int, chunk: bytes) -> list[Entry]:
    """The entries of chunk `index`; ValueError on anything but a well-formed chunk of strictly ascending
    keys, each key and value within what the modules write."""
    if len(chunk) > MAX_CHUNK:
        raise ValueError(f"chunk of {len(chunk)} bytes, more than {MAX_CHUNK}")
    if chunk[: len(CHUNK_MAGIC)] != CHUNK_MAGIC or len(chunk) < _HEADER:
        raise ValueError("not a format-1 snapshot chunk")
    if int.from_bytes(chunk[len(CHUNK_MAGIC) : _HEADER], "big") != index:
        raise ValueError(f"chunk says it is not chunk {index}")
    entries: list[Entry] = []
    pos = _HEADER
    while pos < len(chunk):
        key, pos = _field(chunk, pos)
        value, pos = _field(chunk, pos)
        if not key or not value:
            raise ValueError("empty key or value in a snapshot chunk")
        if len(key) > MAX_STATE_KEY or len(value) > MAX_STATE_VALUE:
            raise ValueError(f"entry with a {len(key)}-byte key and a {len(value)}-byte value, allowed {MAX_STATE_KEY} and {MAX_STATE_VALUE}")
        if entries and key <= entries[-1][0]:
            raise ValueError("snapshot chunk keys out of order")
        entries.append((key, value))
    return entries


def _field(chunk: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(chunk):
        raise ValueError("truncated snapshot chunk")
    end = pos + 4 + int.from_bytes(chunk[pos : pos + 4], "big")
    if end > len(chunk):
        raise ValueError("truncated snapshot chunk")
    return chunk[pos + 4 : end], end


def metadata_of(chunks: list[bytes]) -> bytes:
    return b"".join(hashlib.sha256(chunk).digest() for chunk in chunks)


# --- Storage: one folder per snapshot under <home>/snapshots --------------------


class Snapshots:
    """The snapshots this node took: made in the background after Commit, served from files."""

    def __init__(self, root: str | os.PathLike, settings: SnapshotSettings = SnapshotSettings()) -> None:
        self.root = Path(root)
        self.settings = settings
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob("tmp-*"):  # a snapshot cut short by a crash
            shutil.rmtree(leftover, ignore_errors=True)
        self._thread: threading.Thread | None = None
        self._taking: int | None = None  # height being written
        self._cancel = threading.Event()

    def _folder(self, height: int, format_: int = FORMAT) -> Path:
        return self.root / f"{height:020d}-{format_}"

    def _folders(self) -> list[Path]:
        """Snapshot folders (not tmp-*), newest first; none when the folder cannot be read (Commit asks too)."""
        try:
            return sorted((p for p in self.root.iterdir() if _FOLDER.fullmatch(p.name)), reverse=True)
        except OSError as exc:
            log.error("cannot list snapshots in %s: %s", self.root, exc)
            return []

    def list(self) -> list[abci.Snapshot]:
        """Complete snapshots, newest first."""
        found = []
        for folder in self._folders():
            try:
                found.append(abci.Snapshot.FromString((folder / SNAPSHOT_FILE).read_bytes()))
            except (OSError, DecodeError):  # being deleted, or damaged
                continue
        return found

    def heights(self) -> set[int]:
        """Heights with a snapshot kept or being taken: pruning keeps their state too."""
        heights = {int(folder.name.split("-")[0]) for folder in self._folders()}  # names only: Commit asks every block
        if self._taking is not None:
            heights.add(self._taking)
        return heights

    def load_chunk(self, height: int, format_: int, index: int) -> bytes:
        """A chunk's bytes; b"" (CometBFT's "missing") for a snapshot or chunk we do not have."""
        if format_ != FORMAT or height < 1 or index < 0:
            return b""
        try:
            return (self._folder(height) / f"{index:06d}.chunk").read_bytes()
        except OSError:
            return b""

    def maybe_take(self, store: Store) -> None:
        """Called right after Commit: start a snapshot of the height just committed when one is due."""
        height = store.height
        if not self.settings.interval or height % self.settings.interval:
            return
        if self._thread is not None and self._thread.is_alive():
            log.warning("skipping the snapshot at height %d: the one at height %s is still being written", height, self._taking)
            return
        # The read transaction starts here, before the next block can commit: it pins height `height`.
        reader = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
        try:
            reader.execute("BEGIN")
            pinned = reader.execute("SELECT height FROM meta").fetchone()[0]
            if pinned != height:
                raise RuntimeError(f"snapshot reader sees height {pinned}, not {height}")
        except BaseException:
            reader.close()
            raise
        self._taking = height
        self._thread = threading.Thread(target=self._take, args=(reader, height), name=f"snapshot-{height}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the snapshot being written (if any) is done."""
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        self._cancel.set()
        self.wait()

    def _take(self, reader: sqlite3.Connection, height: int) -> None:
        tmp = self.root / f"tmp-{height}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            rows = reader.execute("SELECT key, value FROM kv ORDER BY key")
            digests, keys = [], 0

            def counted(rows: Iterable[Entry]) -> Iterator[Entry]:
                nonlocal keys
                for row in rows:
                    keys += 1
                    yield row

            for index, chunk in enumerate(encode_chunks(counted(rows), self.settings.chunk_bytes)):
                if self._cancel.is_set():
                    raise RuntimeError("node stopping")
                if index >= MAX_CHUNKS:
                    raise RuntimeError(f"state needs more than {MAX_CHUNKS} chunks")
                _write_synced(tmp / f"{index:06d}.chunk", chunk)
                digests.append(hashlib.sha256(chunk).digest())
            metadata = b"".join(digests)
            snapshot = abci.Snapshot(
                height=height, format=FORMAT, chunks=len(digests), hash=hashlib.sha256(metadata).digest(), metadata=metadata
            )
            _write_synced(tmp / SNAPSHOT_FILE, snapshot.SerializeToString())
            _sync_dir(tmp)  # the files' names are durable before the rename publishes them
            final = self._folder(height)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
            _sync_dir(self.root)
            log.info("snapshot at height %d: %d keys in %d chunks, hash %s", height, keys, len(digests), snapshot.hash.hex().upper())
            self._drop_old()
        except Exception as exc:  # a snapshot is a convenience for others: never take the node down for it
            log.error("snapshot at height %d skipped: %s", height, exc)
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            reader.close()
            self._taking = None

    def _drop_old(self) -> None:
        for folder in self._folders()[self.settings.keep_recent :]:
            doomed = folder.with_name("tmp-drop-" + folder.name)  # out of list() at once, then deleted
            os.rename(folder, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def _write_synced(path: Path, data: bytes) -> None:
    """Write and fsync: after a power loss a published snapshot never serves empty or torn chunks."""
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- Restoring: OfferSnapshot, then ApplySnapshotChunk in order ----------------

_Offer = abci.ResponseOfferSnapshot
_Apply = abci.ResponseApplySnapshotChunk


def check_offer(store: Store, req: abci.RequestOfferSnapshot, max_bytes: int = DEFAULT_RESTORE_MAX_BYTES) -> tuple[int, str]:
    """(OfferSnapshot result, why) for a snapshot CometBFT offers with the app hash it verified."""
    snapshot = req.snapshot
    metadata = snapshot.metadata  # each read of a protobuf bytes field copies it
    if snapshot.format != FORMAT:
        return _Offer.REJECT_FORMAT, f"format {snapshot.format}, we restore format {FORMAT}"
    if not (store.is_empty() or store.holds_only_restore()):
        return _Offer.REJECT, f"this node already has state at height {store.height}"
    if snapshot.height < 1:
        return _Offer.REJECT, f"height {snapshot.height}"
    max_chunks = min(MAX_CHUNKS, max_bytes // CHUNK_BYTES)
    if not 1 <= snapshot.chunks <= max_chunks:
        return _Offer.REJECT, f"{snapshot.chunks} chunks, allowed 1..{max_chunks} (state sync max bytes {max_bytes})"
    if len(metadata) != DIGEST * snapshot.chunks:
        return _Offer.REJECT, "metadata is not one sha256 digest per chunk"
    if hashlib.sha256(metadata).digest() != snapshot.hash:
        return _Offer.REJECT, "snapshot hash is not sha256(metadata)"
    if len(req.app_hash) != DIGEST:
        return _Offer.REJECT, f"app hash of {len(req.app_hash)} bytes"
    return _Offer.ACCEPT, "accepted"


class Restore:
    """One accepted offer: chunks arrive in order, each checked against its digest and staged on disk
    (Store.begin_restore); after the last one the staged state is committed only if its root is the
    trusted app hash. Nothing a peer sends ends in ABORT (fatal to CometBFT's state sync): a bad
    snapshot is REJECT_SNAPSHOT, naming every peer that served it, which CometBFT then drops. ABORT
    is kept for our own failure to commit."""

    def __init__(self, store: Store, snapshot: abci.Snapshot, app_hash: bytes) -> None:
        self.height = snapshot.height
        self.app_hash = app_hash  # from the light-client-verified header: the only thing trusted here
        metadata = snapshot.metadata
        self.digests = [metadata[i : i + DIGEST] for i in range(0, len(metadata), DIGEST)]
        self.next_index = 0
        self.senders: list[str] = []  # peers whose chunks were applied: all served this snapshot
        self._staged = store.begin_restore()

    def apply(self, req: abci.RequestApplySnapshotChunk) -> tuple[abci.ResponseApplySnapshotChunk, str]:
        """(the answer, a line for the log). ACCEPT of the last chunk means the store now holds the snapshot.
        Any answer but ACCEPT of a chunk before the last, or RETRY, ends this restore (close())."""
        if req.index != self.next_index:
            # CometBFT applies chunks in order; anything else means our view and its differ: start over.
            return _Apply(result=_Apply.RETRY_SNAPSHOT), f"chunk {req.index} arrived, expected {self.next_index}"
        if hashlib.sha256(req.chunk).digest() != self.digests[req.index]:
            senders = [req.sender] if req.sender else []
            return _Apply(result=_Apply.RETRY, refetch_chunks=[req.index], reject_senders=senders), f"chunk {req.index} from {req.sender or '?'} fails its digest"
        if req.sender and req.sender not in self.senders:
            self.senders.append(req.sender)
        try:
            entries = decode_chunk(req.index, req.chunk)
            self._staged.add(entries)  # ValueError when its keys do not follow the previous chunk's
        except (OSError, sqlite3.Error) as exc:  # our disk, not the peers: let another snapshot try
            return _Apply(result=_Apply.REJECT_SNAPSHOT), f"chunk {req.index}: cannot stage it: {exc}"
        except Exception as exc:  # listed by the offerer, so the snapshot itself is bad
            return self.reject(f"chunk {req.index}: {exc}")
        self.next_index += 1
        if self.next_index < len(self.digests):
            return _Apply(result=_Apply.ACCEPT), f"chunk {req.index} applied"
        return self._finish()

    def reject(self, why: str) -> tuple[abci.ResponseApplySnapshotChunk, str]:
        """Refuse the snapshot and every peer that served a chunk of it (honest peers serve no bad snapshot)."""
        return _Apply(result=_Apply.REJECT_SNAPSHOT, reject_senders=self.senders), f"{why}; rejecting peers {self.senders}"

    def close(self) -> None:
        """Drop whatever is staged and not committed."""
        self._staged.abort()

    def _finish(self) -> tuple[abci.ResponseApplySnapshotChunk, str]:
        try:
            root = self._staged.root()
        except (OSError, sqlite3.Error) as exc:
            return _Apply(result=_Apply.REJECT_SNAPSHOT), f"cannot stage the restored trie: {exc}"
        if root != self.app_hash:
            return self.reject(f"restored state has root {root.hex().upper()}, the verified header says {self.app_hash.hex().upper()}")
        try:
            self._staged.commit(self.height, root)
        except (OSError, sqlite3.Error) as exc:
            return _Apply(result=_Apply.ABORT), f"cannot commit the restored state: {exc}"
        return _Apply(result=_Apply.ACCEPT), f"restored height {self.height}, app hash {root.hex().upper()}"


# --- Command-line flags of the app process (python -m abci_app) -----------------


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The snapshot and pruning flags; settings_from_flags turns them into settings."""
    parser.add_argument("--snapshot-interval", type=int, default=0, metavar="N",
                        help="take a state-sync snapshot after every height divisible by N (0 = never; default 0)")
    parser.add_argument("--snapshot-keep-recent", type=int, default=2, metavar="K", help="snapshots kept on disk (default 2)")
    parser.add_argument("--statesync-max-bytes", type=int, default=DEFAULT_RESTORE_MAX_BYTES, metavar="BYTES",
                        help="when joining by state sync, refuse snapshots bigger than this "
                             f"(chunks x {CHUNK_BYTES} bytes; default {DEFAULT_RESTORE_MAX_BYTES})")
    parser.add_argument("--pruning", default="nothing", choices=STRATEGIES,
                        help="nothing: archive, keep every height (default); default: keep the last 362880 heights; "
                             "everything: keep 2; custom: keep --pruning-keep-recent. Snapshot heights are kept as well")
    parser.add_argument("--pruning-keep-recent", type=int, metavar="N", help="with --pruning custom: heights kept (>= 1)")
    parser.add_argument("--pruning-interval", type=int, metavar="N", help="with --pruning custom: prune every N heights (default 10)")


def settings_from_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[SnapshotSettings, Pruning]:
    """(snapshot settings, pruning) from add_flags' flags; a bad combination exits with parser.error."""
    try:
        settings = SnapshotSettings(
            interval=args.snapshot_interval, keep_recent=args.snapshot_keep_recent, restore_max_bytes=args.statesync_max_bytes
        )
        pruning = Pruning.named(args.pruning, args.pruning_keep_recent, args.pruning_interval)
    except ValueError as exc:
        parser.error(str(exc))
    snapshots = f"every {settings.interval} heights, {settings.keep_recent} kept" if settings.interval else "off"
    log.info("pruning: %s; snapshots: %s", pruning.describe(), snapshots)
    return settings, pruning
