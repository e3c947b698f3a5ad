"""The local cache of checkpoints and datasets pulled from IPFS, keyed by sha256.

A file enters the cache only after its CID and sha256 match the chain and, for
a model, its config matches the registry's config hash; so a cached file is a
verified file, and a second pull returns at once.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abci_app.client import ChainClient, ChainError
from abci_app.ipfs.client import IpfsClient
from abci_app.ipfs.download import fetch_verified, file_sha256


MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # the only sha256 the cache takes as a file name (a node's answer is untrusted)


class ModelError(Exception):
    """A version or dataset that does not exist, or a file that fails its checks."""


@dataclass(frozen=True)
class Pulled:
    entry: dict[str, Any]  # the registry's ModelVersion (or the datasets module's Dataset) JSON
    path: Path
    cached: bool  # True when the verified file was already here


class Cache:
    def __init__(self, home: Path):
        self.root = Path(home).expanduser() / "cache"

    def path_for(self, sha256: str, suffix: str) -> Path:
        """The cache file of `sha256`; ModelError unless it is 64 lowercase hex digits, so a lying node's
        `../x` or `/abs` can never name a file outside the cache."""
        check_sha256(sha256)
        path = self.root / f"{sha256}{suffix}"
        if path.parent != self.root or "/" in suffix or "\\" in suffix:
            raise ModelError(f"cache suffix {suffix!r} leaves the cache directory")
        return path

    def _pull(self, entry: dict, suffix: str, ipfs: IpfsClient, timeout: float, progress, check: Callable[[Path], None] | None) -> Pulled:
        path = self.path_for(entry["sha256"], suffix)
        if path.exists():
            if file_sha256(path) == entry["sha256"]:
                return Pulled(entry, path, cached=True)
            path.unlink()  # damaged on disk: fetch again
        fetch_verified(ipfs, entry["cid"], entry["sha256"], path, timeout=timeout, progress=progress)
        if check is not None:
            try:
                check(path)
            except Exception:
                path.unlink(missing_ok=True)
                raise
        return Pulled(entry, path, cached=False)

    def pull_version(self, chain: ChainClient, ipfs: IpfsClient, version: int | None = None, *, timeout: float = 30.0,
                     progress: Callable[[int], None] | None = None) -> Pulled:
        """Fetch and verify a registered model version (the latest when `version` is None)."""
        return self.pull_model(version_entry(chain, version), ipfs, timeout=timeout, progress=progress)

    def pull_model(self, entry: dict, ipfs: IpfsClient, *, timeout: float = 30.0, progress: Callable[[int], None] | None = None) -> Pulled:
        """Fetch and verify the checkpoint of a registry entry already queried."""
        return self._pull(entry, ".safetensors", ipfs, timeout, progress, lambda p: check_config(p, entry))

    def pull_dataset(self, chain: ChainClient, ipfs: IpfsClient, dataset_id: int, *, timeout: float = 30.0,
                     progress: Callable[[int], None] | None = None) -> Pulled:
        """Fetch and verify a registered dataset."""
        return self.pull_dataset_file(dataset_entry(chain, dataset_id), ipfs, timeout=timeout, progress=progress)

    def pull_dataset_file(self, entry: dict, ipfs: IpfsClient, *, timeout: float = 30.0, progress: Callable[[int], None] | None = None) -> Pulled:
        """Fetch and verify the file of a datasets entry already queried."""
        return self._pull(entry, ".data", ipfs, timeout, progress, None)


def check_sha256(sha256: object) -> str:
    if not isinstance(sha256, str) or not SHA256_HEX.fullmatch(sha256):
        raise ModelError(f"the node sent sha256 {str(sha256)[:80]!r}, not 64 lowercase hex digits: refusing it")
    return sha256


def checked_entry(entry: object, what: str) -> dict:
    """A registry or datasets entry from a node, with the fields used as names checked: an int id, a hex sha256, a text CID."""
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or isinstance(entry.get("id"), bool):
        raise ModelError(f"the node sent a malformed {what} entry (no integer id)")
    check_sha256(entry.get("sha256"))
    cid = entry.get("cid")
    if not isinstance(cid, str) or not cid.isascii() or not cid.isalnum() or len(cid) > 200:
        raise ModelError(f"the node sent {what} {entry['id']} with CID {str(cid)[:80]!r}, which is not a CID")
    return entry


def version_entry(chain: ChainClient, version: int | None) -> dict:
    try:
        entry = chain.query_json("/registry/latest") if version is None else chain.query_json("/registry/version", str(version))
    except ChainError as exc:
        raise ModelError(str(exc)) from None
    if entry is None:
        latest = chain.query_json("/registry/latest")
        hint = f"latest is {latest['id']}" if latest else "no version is registered yet"
        raise ModelError(f"model version {version} does not exist ({hint})")
    entry = checked_entry(entry, "model version")
    if version is not None and entry["id"] != version:
        raise ModelError(f"asked the node for version {version}, it answered with version {entry['id']}")
    if not isinstance(entry.get("config_hash"), str) or not isinstance(entry.get("family"), str):
        raise ModelError(f"the node sent version {entry['id']} without a text family and config hash")
    return entry


def dataset_entry(chain: ChainClient, dataset_id: int) -> dict:
    try:
        entry = chain.query_json("/datasets/dataset", str(dataset_id))
    except ChainError as exc:
        raise ModelError(str(exc)) from None
    if entry is None:
        raise ModelError(f"dataset {dataset_id} does not exist (see `gradchain dataset list`)")
    entry = checked_entry(entry, "dataset")
    if entry["id"] != dataset_id:
        raise ModelError(f"asked the node for dataset {dataset_id}, it answered with dataset {entry['id']}")
    return entry


def read_header_meta(path: Path) -> dict[str, str]:
    """The safetensors header's `__metadata__`, read without torch (a pull should not pay its import)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file is too short to be a safetensors checkpoint")
        size = struct.unpack("<Q", head)[0]
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"header of {size} bytes is implausible")
        header = json.loads(f.read(size))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or "family" not in meta or "config" not in meta:
        raise ValueError("no GradientChain metadata in the header")
    return meta


def check_config(path: Path, entry: dict) -> None:
    """The file's family and config must hash to the registry entry's config_hash."""
    from abci_app.modules.registry import canonical_config, config_hash

    try:
        meta = read_header_meta(path)
        actual = config_hash(meta["family"], canonical_config(meta["config"]))
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(f"version {entry['id']}: not a valid checkpoint: {exc}") from None
    if meta["family"] != entry["family"] or actual != entry["config_hash"]:
        raise ModelError(
            f"model config mismatch: version {entry['id']} is registered as {entry['family']} config {entry['config_hash'][:12]}…, "
            f"the file holds {meta['family']} config {actual[:12]}…"
        )
