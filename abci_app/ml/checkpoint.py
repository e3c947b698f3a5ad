"""Checkpoints and deltas as safetensors files with metadata, written byte-deterministically.

The chain records a file's sha256, so the same weights and metadata must give
the same bytes on every machine. The safetensors library writes its metadata
map in a per-process random order (a Rust HashMap), so we serialise the
(simple, documented) format ourselves: 8-byte little-endian header length,
canonical JSON header (sorted keys, no spaces, padded with spaces to a
multiple of 8), then the tensors' raw little-endian bytes in name order.
Reading goes through the safetensors library, which also proves the files are
standard.

Metadata (all strings, as the format requires):
  format       "gradchain-checkpoint/1"
  kind         "model" (full weights) or "delta" (trained weights minus base)
  family       model family name, e.g. "tiny-gpt"
  config       the family's config as canonical JSON
  tokenizer    the tokenizer description
  parent       parent version for a model, base version for a delta ("" at genesis)
  extra        free-form canonical JSON (training settings, losses, kernel path, ...)
  data_sha256  sha256 of the tensor data section, so bit rot is caught offline too
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from torch import Tensor

from abci_app.ipfs.download import file_sha256  # noqa: F401  (re-exported: one torch-free implementation)

FORMAT = "gradchain-checkpoint/1"
KINDS = ("model", "delta")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint file that is corrupt, not ours, or does not match what was expected."""


@dataclass(frozen=True)
class CheckpointMeta:
    family: str
    config: dict[str, Any]
    tokenizer: str
    kind: str = "model"
    parent: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_strings(self) -> dict[str, str]:
        if self.kind not in KINDS:
            raise CheckpointError(f"kind must be one of {KINDS}, not {self.kind!r}")
        return {
            "format": FORMAT,
            "kind": self.kind,
            "family": self.family,
            "config": canonical_json(self.config),
            "tokenizer": self.tokenizer,
            "parent": self.parent,
            "extra": canonical_json(self.extra),
        }

    @classmethod
    def from_strings(cls, m: Mapping[str, str]) -> CheckpointMeta:
        if m.get("format") != FORMAT:
            raise CheckpointError(f"not a GradientChain checkpoint (format {m.get('format')!r}, want {FORMAT!r})")
        try:
            meta = cls(
                family=m["family"], config=json.loads(m["config"]), tokenizer=m["tokenizer"],
                kind=m["kind"], parent=m["parent"], extra=json.loads(m["extra"]),
            )  # fmt: skip
        except (KeyError, json.JSONDecodeError) as e:
            raise CheckpointError(f"checkpoint metadata is incomplete or malformed: {e}") from None
        if meta.kind not in KINDS:
            raise CheckpointError(f"checkpoint kind {meta.kind!r} is not one of {KINDS}")
        return meta


def canonical_json(obj: Any) -> str:
    """One spelling per value: sorted keys, no whitespace, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def to_bytes(tensors: Mapping[str, Tensor], meta: CheckpointMeta) -> bytes:
    """The exact file contents for these tensors and metadata."""
    header: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _DTYPES:
            raise CheckpointError(f"tensor {name!r} has unsupported dtype {t.dtype}")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()  # x86/arm64 are little-endian, as the format wants
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    data = b"".join(chunks)
    header["__metadata__"] = meta.to_strings() | {"data_sha256": hashlib.sha256(data).hexdigest()}
    head = canonical_json(header).encode()
    head += b" " * (-len(head) % 8)  # align the data section, as the reference writer does
    return struct.pack("<Q", len(head)) + head + data


def save(path: str | Path, tensors: Mapping[str, Tensor], meta: CheckpointMeta) -> str:
    """Write atomically (temp file + rename, never a partial file); return the file's sha256."""
    blob = to_bytes(tensors, meta)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return hashlib.sha256(blob).hexdigest()


def _split(blob: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    if len(blob) < 8:
        raise CheckpointError(f"{where}: corrupt checkpoint: {len(blob)} bytes is too short for a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(blob):
        raise CheckpointError(f"{where}: corrupt checkpoint: header length {n} does not fit a {len(blob)}-byte file")
    try:
        header = json.loads(blob[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{where}: corrupt checkpoint: header is not valid JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise CheckpointError(f"{where}: not a GradientChain checkpoint: no metadata in the header")
    return header, blob[8 + n :]


def read_meta(path: str | Path) -> CheckpointMeta:
    """Metadata only (reads the header, not the tensors)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            blob = head + f.read(min(n, MAX_HEADER_BYTES))
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    header, _ = _split(blob, str(path))
    return CheckpointMeta.from_strings(header["__metadata__"])


ShapeSpec = Callable[[CheckpointMeta], Mapping[str, tuple[int, ...]]]


def load(path: str | Path, expected: ShapeSpec | None = None) -> tuple[dict[str, Tensor], CheckpointMeta]:
    """Read and validate a checkpoint: format, data checksum, and tensors against the config.

    `expected(meta)` gives the tensor names and shapes the metadata's config
    implies; by default the family registry answers (abci_app.ml.family).
    Raises CheckpointError with a one-line reason on any problem.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    return loads(blob, expected, where=str(path))


def loads(
    blob: bytes, expected: ShapeSpec | None = None, where: str = "checkpoint"
) -> tuple[dict[str, Tensor], CheckpointMeta]:
    header, data = _split(blob, where)
    meta = CheckpointMeta.from_strings(header["__metadata__"])
    if hashlib.sha256(data).hexdigest() != header["__metadata__"].get("data_sha256"):
        raise CheckpointError(f"{where}: corrupt checkpoint: tensor data does not match its data_sha256")
    try:
        tensors = st_load(blob)
    except Exception as e:  # the library raises its own SafetensorError and others
        raise CheckpointError(f"{where}: corrupt checkpoint: {e}") from None
    if expected is None:
        from abci_app.ml.family import expected_shapes  # late: family imports this module

        expected = expected_shapes
    try:
        want = expected(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: config mismatch: {e}") from None
    check_shapes(tensors, want, where)
    return tensors, meta


def check_shapes(tensors: Mapping[str, Tensor], want: Mapping[str, tuple[int, ...]], where: str) -> None:
    missing, unexpected = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: config mismatch: tensors missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    for name in sorted(want):
        if tuple(tensors[name].shape) != tuple(want[name]):
            raise CheckpointError(
                f"{where}: config mismatch: {name} has shape {tuple(tensors[name].shape)}, config says {tuple(want[name])}"
            )


