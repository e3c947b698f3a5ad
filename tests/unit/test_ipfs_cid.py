"""Our UnixFS CIDs equal Kubo's `ipfs add --only-hash` (offline, no daemon) for the options we add with."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from abci_app.ipfs import node
from abci_app.ipfs.cid import CHUNK_SIZE, EMPTY_FILE_CID, MAX_LINKS, CidHasher, CidMismatch, CidVerifier, cid_of_bytes, cid_of_file, parse_cid

KUBO_ADD = ["add", "--only-hash", "--cid-version=1", "--raw-leaves", "--hash=sha2-256", "-Q"]


@pytest.fixture(scope="module")
def kubo(tmp_path_factory: pytest.TempPathFactory):
    """`kubo(path, chunker, max_links)` -> Kubo's CID for the file, from a throwaway offline repo."""
    if not node.IPFS.exists():
        pytest.fail(f"Kubo binary missing at {node.IPFS}: run `make install` (ipfs/install.sh builds it)", pytrace=False)
    repo = tmp_path_factory.mktemp("ipfs-repo")
    env = {"IPFS_PATH": str(repo), "IPFS_TELEMETRY": "off", "PATH": "/usr/bin:/bin"}
    subprocess.run([str(node.IPFS), "init", "--profile=test"], env=env, check=True, capture_output=True, timeout=60)

    def cid(path: Path, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> str:
        args = [*KUBO_ADD, f"--chunker=size-{chunk_size}", f"--max-file-links={max_links}", str(path)]
        out = subprocess.run([str(node.IPFS), *args], env=env, check=True, capture_output=True, text=True, timeout=120)
        return out.stdout.strip()

    return cid


def data_of(size: int) -> bytes:
    return random.Random(size).randbytes(size)  # deterministic per size


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        1000,
        CHUNK_SIZE,  # exactly one chunk: the CID is the raw leaf itself
        CHUNK_SIZE + 1,  # two leaves under one dag-pb node
        3_000_000,  # multi-chunk, short last chunk
        MAX_LINKS * CHUNK_SIZE,  # one full node of 174 leaves, still depth 1
        MAX_LINKS * CHUNK_SIZE + 1,  # 175 leaves: depth 2, the last leaf alone under its own node
        47_000_000,  # 180 leaves: depth 2 with a partial second node
    ],
)
def test_cid_matches_kubo(tmp_path: Path, kubo, size: int) -> None:
    data = data_of(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    expected = kubo(path)
    assert cid_of_bytes(data) == expected
    assert cid_of_file(path) == expected
    verifier = CidVerifier()
    step = 100_003  # pieces that straddle chunk boundaries, as a download does
    for start in range(0, size, step):
        verifier.update(data[start : start + step])
    verifier.verify(expected)
    assert verifier.size == size


def test_empty_file_cid(tmp_path: Path, kubo) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert kubo(tmp_path / "empty") == EMPTY_FILE_CID == cid_of_bytes(b"")


@pytest.mark.parametrize("size", [3 * 1024 + 1, 9 * 1024, 9 * 1024 + 1, 27 * 1024, 27 * 1024 + 1, 28_000, 100_000, 300_001])
def test_deep_trees_match_kubo(tmp_path: Path, kubo, size: int) -> None:
    """3 links of 1 KiB per node reach depth 3-5 with small files: the same code path as 174 x 256 KiB at scale."""
    data = data_of(size)
    (tmp_path / "f.bin").write_bytes(data)
    hasher = CidHasher(chunk_size=1024, max_links=3)
    for start in range(0, size, 777):
        hasher.update(data[start : start + 777])
    assert hasher.cid() == kubo(tmp_path / "f.bin", chunk_size=1024, max_links=3)


def test_verifier_rejects_tampered_and_short_content() -> None:
    data = data_of(600_000)
    cid = cid_of_bytes(data)
    tampered = bytearray(data)
    tampered[300_000] ^= 1
    for bad in (bytes(tampered), data[:-1], data + b"\0"):
        verifier = CidVerifier()
        verifier.update(bad)
        with pytest.raises(CidMismatch, match=cid):
            verifier.verify(cid)


def test_parse_cid() -> None:
    assert parse_cid(EMPTY_FILE_CID)[:4] == bytes([1, 0x55, 0x12, 32])
    assert len(parse_cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG")) == 34
    assert parse_cid("f01551220e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == parse_cid(EMPTY_FILE_CID)
    for bad in ("", "notacid", "bafyqqq", EMPTY_FILE_CID[:-2], "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbd0"):
        with pytest.raises(ValueError, match="invalid CID"):
            parse_cid(bad)
