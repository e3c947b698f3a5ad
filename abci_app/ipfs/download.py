"""Verified downloads: bytes from any Kubo node, checked against the CID and
sha256 the chain recorded, written atomically (no partial file is ever left
where a reader would find it), or only checked and dropped (`verify_stream`:
the pin sync, whose Kubo keeps the blocks)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from abci_app.ipfs.cid import CidHasher
from abci_app.ipfs.client import IpfsClient


class VerificationError(ValueError):
    """Downloaded bytes that do not match the CID or sha256 on chain."""


class TooLarge(VerificationError):
    """A transfer ran past the most bytes the caller expects of the file."""


class _Digests:
    """The CID and sha256 of bytes as they arrive, and their count (at most `max_bytes`)."""

    def __init__(self, cid: str, sha256: str, max_bytes: int | None = None) -> None:
        self.cid, self.sha256, self.max_bytes = cid, sha256, max_bytes
        self.cid_hasher, self.digest, self.received = CidHasher(), hashlib.sha256(), 0

    def update(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.max_bytes is not None and self.received > self.max_bytes:
            raise TooLarge(f"more than the {self.max_bytes} bytes expected of {self.cid}: refusing it")
        self.cid_hasher.update(chunk)
        self.digest.update(chunk)

    def check(self) -> None:
        if self.cid_hasher.cid() != self.cid:
            raise VerificationError(f"bytes from IPFS do not match CID {self.cid} (got {self.cid_hasher.cid()}): refusing them")
        if self.digest.hexdigest() != self.sha256:
            raise VerificationError(f"sha256 mismatch for {self.cid}: chain says {self.sha256}, file is {self.digest.hexdigest()}")


def verify_stream(chunks: Iterable[bytes], cid: str, sha256: str, *, max_bytes: int | None = None) -> int:
    """Check `chunks` against `cid` and `sha256` as they arrive, keeping none of them; return the byte count.
    VerificationError on a mismatch, TooLarge as soon as more than `max_bytes` arrived."""
    digests = _Digests(cid, sha256, max_bytes)
    for chunk in chunks:
        digests.update(chunk)
    digests.check()
    return digests.received


def fetch_verified(
    client: IpfsClient, cid: str, sha256: str, dest: Path, *, timeout: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Stream `cid` into `dest`; raise VerificationError (and leave nothing) on a mismatch."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    digests = _Digests(cid, sha256)
    try:
        with open(tmp, "wb") as f:
            for chunk in client.cat_stream(cid, timeout=timeout):
                f.write(chunk)
                digests.update(chunk)
                if progress:
                    progress(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        digests.check()
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
