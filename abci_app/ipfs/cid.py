"""Local UnixFS CID computation: the CID `ipfs add` gives a file, without Kubo.

We add every file with `--cid-version=1 --raw-leaves --chunker=size-262144
--hash=sha2-256` and Kubo's default balanced DAG layout (at most 174 links per
node), so a downloader can recompute the CID from the bytes it received and
check them without trusting the node that served them:

    hasher = CidHasher()
    for chunk in client.cat_stream(cid):
        hasher.update(chunk)
    hasher.verify(cid)            # raises CidMismatch

Layout (boxo's `balanced` importer): leaves are raw blocks of 262144 bytes
(codec raw, 0x55); a file of one chunk (or an empty file) is that raw block
itself. Bigger files get dag-pb (0x70) nodes of up to 174 children, all leaves
at the same depth; a full group of 174 becomes one node only once more data
follows, and at the end every partial group is wrapped too, even a single child.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import BinaryIO

from abci_app.abci.framing import encode_varint

EMPTY_FILE_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # one empty raw leaf
CHUNK_SIZE = 262144  # Kubo's default chunker: size-262144
MAX_LINKS = 174  # Kubo's Import.UnixFSFileMaxLinks default: 8 KiB / 47-byte links
RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
UNIXFS_FILE = 2


class CidMismatch(ValueError):
    """Bytes do not hash to the CID they were fetched under."""


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload


def _uint_field(number: int, value: int) -> bytes:
    """A varint protobuf field (wire type 0)."""
    return encode_varint(number << 3) + encode_varint(value)


def _cid_bytes(codec: int, block: bytes) -> bytes:
    return bytes([1, codec, SHA2_256, 32]) + hashlib.sha256(block).digest()


def cid_to_str(cid: bytes) -> str:
    """Multibase base32 (lowercase, unpadded, prefix `b`): how Kubo prints CIDv1."""
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _base_n(text: str, alphabet: str) -> bytes:
    n = 0
    for ch in text:
        n = n * len(alphabet) + alphabet.index(ch)
    zeros = len(text) - len(text.lstrip(alphabet[0]))  # leading zero digits are leading zero bytes
    return b"\0" * zeros + n.to_bytes((n.bit_length() + 7) // 8, "big")


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[i]
        n |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if b < 0x80:
            return n, i


def parse_cid(text: str) -> bytes:
    """The binary CID of a CIDv0 (`Qm...`) or CIDv1 string in base32/base58btc/base16/base36; ValueError if malformed."""
    try:
        if len(text) == 46 and text.startswith("Qm"):
            raw = _base_n(text, _B58)
            if raw[:2] != b"\x12\x20" or len(raw) != 34:
                raise ValueError("not a sha2-256 multihash")
            return raw
        base, body = text[:1], text[1:]
        if base in "bB":
            raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        elif base == "z":
            raw = _base_n(body, _B58)
        elif base in "fF":
            raw = bytes.fromhex(body)
        elif base in "kK":
            raw = _base_n(body.lower(), "0123456789abcdefghijklmnopqrstuvwxyz")
        else:
            raise ValueError("unsupported or missing multibase prefix")
        version, i = _read_varint(raw, 0)
        if version != 1:
            raise ValueError(f"CID version {version}")
        _codec, i = _read_varint(raw, i)
        _hash, i = _read_varint(raw, i)
        length, i = _read_varint(raw, i)
        if len(raw) - i != length:
            raise ValueError("multihash length does not match its digest")
        return raw
    except (ValueError, TypeError, IndexError) as e:  # binascii.Error is a ValueError
        detail = e if isinstance(e, ValueError) and str(e).startswith(("CID version", "multihash", "unsupported", "not a")) else "bad encoding"
        raise ValueError(f"invalid CID {text!r} ({detail}): expected a CIDv1 such as bafy.../bafk... or a CIDv0 Qm...") from None


# One child of a node: (cid bytes, bytes of file data below it, Tsize = bytes of blocks below it).
_Child = tuple[bytes, int, int]


def _node(children: list[_Child]) -> _Child:
    """Encode a dag-pb file node over `children`, as boxo's merkledag does."""
    filesize = sum(c[1] for c in children)
    unixfs = _uint_field(1, UNIXFS_FILE) + _uint_field(3, filesize) + b"".join(_uint_field(4, c[1]) for c in children)
    # dag-pb canonical order: Links (field 2) before Data (field 1); boxo always writes Name, even "".
    links = b"".join(_field(2, _field(1, cid) + _field(2, b"") + _uint_field(3, tsize)) for cid, _, tsize in children)
    block = links + _field(1, unixfs)
    return _cid_bytes(DAG_PB, block), filesize, len(block) + sum(c[2] for c in children)


def _push(levels: list[list[_Child]], level: int, child: _Child, max_links: int) -> None:
    """Append `child` at `level`; a full group is closed into a node one level up only now that more follows."""
    if len(levels) == level:
        levels.append([])
    if len(levels[level]) == max_links:
        _push(levels, level + 1, _node(levels[level]), max_links)
        levels[level] = []
    levels[level].append(child)


class CidHasher:
    """Feed bytes in any pieces with `update`; `cid()` gives the CID Kubo's `ipfs add` would."""

    def __init__(self, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> None:
        # Other values only for tests: Kubo's --chunker/--max-file-links reproduce deep trees with small files.
        self.chunk_size, self.max_links = chunk_size, max_links
        self._buffer = bytearray()
        self._levels: list[list[_Child]] = [[]]  # levels[0] = leaves of the open bottom node
        self._size = 0

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data
        self._size += len(data)
        size = self.chunk_size
        if len(self._buffer) >= size:
            view = memoryview(self._buffer)
            whole = len(view) - len(view) % size
            for start in range(0, whole, size):
                self._leaf(bytes(view[start : start + size]))
            view.release()
            del self._buffer[:whole]

    def _leaf(self, chunk: bytes) -> None:
        _push(self._levels, 0, (_cid_bytes(RAW, chunk), len(chunk), len(chunk)), self.max_links)

    def cid(self) -> str:
        """The CID of the bytes fed so far (the hasher stays usable)."""
        return cid_to_str(self._root())

    def _root(self) -> bytes:
        levels = [list(level) for level in self._levels]  # finish on copies: closing groups must not touch state
        if self._buffer or self._size == 0:  # the last short chunk; an empty file is one empty raw leaf
            leaf = bytes(self._buffer)
            _push(levels, 0, (_cid_bytes(RAW, leaf), len(leaf), len(leaf)), self.max_links)
        for depth, level in enumerate(levels):
            if depth == len(levels) - 1 and len(level) == 1:
                return level[0][0]
            if level:  # wrap the partial group, even a single child, as boxo's fillNodeRec does
                _push(levels, depth + 1, _node(level), self.max_links)
        raise AssertionError("unreachable: the top level always ends with one root")

    def verify(self, expected: str) -> None:
        """Raise CidMismatch unless the bytes fed so far have CID `expected` (in any multibase)."""
        actual = self._root()
        if actual != parse_cid(expected):
            raise CidMismatch(f"content does not match its CID: expected {expected}, got {cid_to_str(actual)} ({self._size} bytes)")


# The streaming checker a downloader uses; same object, clearer name at call sites.
CidVerifier = CidHasher


def cid_of_bytes(data: bytes) -> str:
    hasher = CidHasher()
    hasher.update(data)
    return hasher.cid()


def cid_of_fileobj(f: BinaryIO, read_size: int = 4 * CHUNK_SIZE) -> str:
    hasher = CidHasher()
    while block := f.read(read_size):
        hasher.update(block)
    return hasher.cid()


def cid_of_file(path: str | Path) -> str:
    """CID of a file on disk, read in 1 MiB pieces (never whole into memory)."""
    with open(path, "rb") as f:
        return cid_of_fileobj(f)
