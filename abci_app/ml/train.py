"""Deterministic training pieces: batches from a seed, k AdamW steps, deltas, merge, held-out loss.

Everything here is a pure function of its inputs (no global RNG, no clock),
so a validator that calls it with the trainer's inputs on the same kernel
path and thread count gets the trainer's bits (shared/NOTES.md, docs/ml.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

State = dict[str, Tensor]
LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
BATCH_DOMAIN = b"gradchain/batch/v1"


class DeltaError(ValueError):
    """Deltas or states whose tensor names or shapes do not line up."""


# --- Batches ------------------------------------------------------------------


def batch_seed(round_seed: bytes, trainer: str, dataset_sha256: str) -> bytes:
    """The seed of one trainer's batches in one round: a trainer cannot choose its data."""
    parts = [round_seed, trainer.encode(), bytes.fromhex(dataset_sha256)]
    return hashlib.sha256(b"".join(len(p).to_bytes(4, "big") + p for p in parts)).digest()  # length-prefixed: unambiguous


def batch_for(seed: bytes, tokens: Tensor, batch_size: int, block_size: int) -> tuple[Tensor, Tensor]:
    """`batch_size` windows of `block_size` tokens at offsets derived from `seed`: (x, y), each (B, T) int64.

    Offsets come from sha256 in counter mode rather than a torch.Generator, so
    the batch does not depend on torch's RNG implementation or version, and
    another client can compute it in any language: offset_i =
    u64be(sha256(sha256(DOMAIN || seed) || u32be(i))[:8]) mod (len(tokens) - block_size).
    (Modulo bias is < 2^-40 for corpora under 16M tokens.)
    """
    n = tokens.numel() - block_size  # y needs one token past each window
    if n < 1:
        raise ValueError(f"{tokens.numel()} tokens are too few for windows of {block_size}")
    key = hashlib.sha256(BATCH_DOMAIN + seed).digest()
    starts = [int.from_bytes(hashlib.sha256(key + i.to_bytes(4, "big")).digest()[:8], "big") % n for i in range(batch_size)]
    idx = torch.tensor(starts, dtype=torch.long)[:, None] + torch.arange(block_size + 1)  # (B, T+1)
    window = tokens[idx].long()  # (B, T+1)
    return window[:, :-1], window[:, 1:]


def iter_batches(seed: bytes, tokens: Tensor, steps: int, batch_size: int, block_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """One batch per training step, made lazily; step i's seed is seed || "/step/" || u32be(i)."""
    for i in range(steps):
        yield batch_for(seed + b"/step/" + i.to_bytes(4, "big"), tokens, batch_size, block_size)


def batches_for(seed: bytes, tokens: Tensor, steps: int, batch_size: int, block_size: int) -> list[tuple[Tensor, Tensor]]:
    return list(iter_batches(seed, tokens, steps, batch_size, block_size))


# --- Training -----------------------------------------------------------------


@dataclass
class TrainResult:
    losses: list[float]  # loss on each step's batch, before that step's update
    optimizer: torch.optim.Optimizer  # its moments: needed to restart from (or hash) a mid-run state


def default_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return model.loss(x, y)


def make_optimizer(
    params: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95)
) -> torch.optim.AdamW:
    params = sorted(params, key=lambda item: item[0])  # a fixed parameter order: optimizer state is order-sensitive
    decay = [p for _, p in params if p.dim() >= 2]  # nanoGPT: decay matrices, not gains and biases
    other = [p for _, p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    # The plain for-loop implementation: one kernel path whatever torch's CPU defaults become.
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=False, fused=False)


def train_steps(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    lr: float | Callable[[int], float],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    params: Iterable[tuple[str, nn.Parameter]] | None = None,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    loss_fn: LossFn = default_loss,
    on_step: Callable[[int, float, torch.optim.Optimizer], None] | None = None,
) -> TrainResult:
    """One AdamW step per batch (k = number of batches), in place on `model`.

    `params` (name, parameter) pairs are what is trained, all of the model's by
    default; a family trains a subset (LoRA adapters). `lr` may be a schedule
    step -> lr. `on_step(i, loss, optimizer)` runs after step i (progress,
    per-step state hashes).
    """
    if params is None:
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = make_optimizer(params, lr(0) if callable(lr) else lr, weight_decay)
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    model.train()
    losses: list[float] = []
    for i, (x, y) in enumerate(batches):
        if callable(lr):
            for group in optimizer.param_groups:
                group["lr"] = lr(i)
        loss = loss_fn(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(trained, grad_clip, foreach=False)
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(i, losses[-1], optimizer)
    model.eval()
    return TrainResult(losses, optimizer)


def cosine_lr(peak: float, steps: int, warmup: int, floor: float = 0.1) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to floor * peak (nanoGPT's schedule)."""

    def lr(i: int) -> float:
        if i < warmup:
            return peak * (i + 1) / warmup
        progress = min(1.0, (i - warmup) / max(1, steps - warmup))
        return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    return lr


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    tokens: Tensor,
    block_size: int | None = None,
    windows: int = 64,
    batch_size: int = 16,
    loss_fn: LossFn = default_loss,
) -> float:
    """Mean next-token loss (nats/token) over `windows` evenly spaced windows of `tokens` (held-out).

    Window length defaults to the model's context (`model.config.block_size`).
    """
    block_size = block_size or model.config.block_size
    n = tokens.numel() - block_size - 1
    if n < 0:
        raise ValueError(f"{tokens.numel()} tokens are too few for a window of {block_size}")
    count = min(windows, n + 1)
    starts = [j * n // max(1, count - 1) for j in range(count)]
    was_training = model.training
    model.eval()
    total = 0.0
    for b in range(0, count, batch_size):
        idx = torch.tensor(starts[b : b + batch_size])[:, None] + torch.arange(block_size + 1)  # (B, T+1)
        window = tokens[idx].long()
        total += loss_fn(model, window[:, :-1], window[:, 1:]).item() * idx.shape[0]
    model.train(was_training)
    return total / count


# --- States and deltas ------------------------------------------------------


def model_state(model: nn.Module, names: Iterable[str] | None = None) -> State:
    """Detached copies of the model's tensors (all, or `names`), in name order."""
    sd = model.state_dict()
    return {n: sd[n].detach().clone() for n in sorted(names if names is not None else sd)}


def _same_names(a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str) -> None:
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b))[:3], sorted(set(b) - set(a))[:3]
        raise DeltaError(f"{what}: tensor names differ: only in first {only_a}, only in second {only_b}")
    for n in a:
        if a[n].shape != b[n].shape:
            raise DeltaError(f"{what}: {n} has shapes {tuple(a[n].shape)} and {tuple(b[n].shape)}")


def make_delta(new_state: Mapping[str, Tensor], base_state: Mapping[str, Tensor]) -> State:
    """new - base, per tensor."""
    _same_names(new_state, base_state, "make_delta")
    return {n: new_state[n] - base_state[n] for n in sorted(new_state)}


def apply_delta(base_state: Mapping[str, Tensor], delta: Mapping[str, Tensor], scale: float = 1.0) -> State:
    """base + scale * delta; tensors the delta does not name are copied unchanged."""
    missing = sorted(set(delta) - set(base_state))
    if missing:
        raise DeltaError(f"apply_delta: the delta names tensors the base lacks: {missing[:3]}")
    out = {n: t.clone() for n, t in sorted(base_state.items())}
    for n in sorted(delta):
        if delta[n].shape != out[n].shape:
            raise DeltaError(f"apply_delta: {n} has shape {tuple(delta[n].shape)}, base {tuple(out[n].shape)}")
        out[n] += delta[n] if scale == 1.0 else scale * delta[n]
    return out


def average_deltas(deltas: Sequence[Mapping[str, Tensor]]) -> State:
    """Elementwise mean, summed in the given order (callers pass chain order): bitwise deterministic.

    Only elementwise adds and one divide: no reductions, so no thread-count dependence.
    """
    if not deltas:
        raise DeltaError("average_deltas: no deltas")
    for i, d in enumerate(deltas[1:], 1):
        _same_names(deltas[0], d, f"average_deltas (delta 0 vs {i})")
    out = {n: t.clone() for n, t in sorted(deltas[0].items())}
    for d in deltas[1:]:
        for n in out:
            out[n] += d[n]
    for n in out:
        out[n] /= len(deltas)
    return out


def relative_l2(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """||a - b|| / ||b|| over all tensors together (b is the reference), in float64."""
    _same_names(a, b, "relative_l2")
    diff = sum(float(((a[n].double() - b[n].double()) ** 2).sum()) for n in sorted(a))
    ref = sum(float((b[n].double() ** 2).sum()) for n in sorted(b))
    if ref == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return math.sqrt(diff / ref)


def state_sha256(state: Mapping[str, Tensor]) -> str:
    """Digest of names, dtypes, shapes and bytes, in name order: bitwise equality in 64 hex chars."""
    h = hashlib.sha256()
    for n in sorted(state):
        t = state[n].detach().contiguous()
        h.update(f"{n}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
