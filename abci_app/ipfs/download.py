"""Verified downloads: bytes from any Kubo node, checked against the CID and
sha256 the chain recorded, written atomically (no partial file is ever left
where a reader would find it)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from abci_app.ipfs.cid import CidHasher
from abci_app.ipfs.client import IpfsClient


class VerificationError(ValueError):
    """Downloaded bytes that do not match the CID or sha256 on chain."""


def fetch_verified(
    client: IpfsClient, cid: str, sha256: str, dest: Path, *, timeout: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Stream `cid` into `dest`; raise VerificationError (and leave nothing) on a mismatch."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    cid_hasher, digest = CidHasher(), hashlib.sha256()
    try:
        with open(tmp, "wb") as f:
            for chunk in client.cat_stream(cid, timeout=timeout):
                f.write(chunk)
                cid_hasher.update(chunk)
                digest.update(chunk)
                if progress:
                    progress(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        if cid_hasher.cid() != cid:
            raise VerificationError(f"bytes from IPFS do not match CID {cid} (got {cid_hasher.cid()}): refusing them")
        if digest.hexdigest() != sha256:
            raise VerificationError(f"sha256 mismatch for {cid}: chain says {sha256}, file is {digest.hexdigest()}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
