"""Training trajectories: the per-step states a submission commits to, and one-step replay.

A *training state* is everything one AdamW step reads besides its batch and
learning rate: the trainable weights and, per trainable parameter, AdamW's
moments and step count. As a flat dict of tensors:

    w/<param>  the weights                     m/<param>  exp_avg
    v/<param>  exp_avg_sq                      t/<param>  step count (a float32 scalar, as torch keeps it)

<param> is the family's trainable name (every weight for the tiny GPT, the
LoRA adapters "<module path>.lora_A|B" for smollm2-lora), the same names a
delta uses. State 0 is the base's trainable weights with zero moments and
step 0: exactly what AdamW creates lazily on its first step, so replaying step
0 from state 0 gives the bits of a trainer's first step from a fresh optimizer.

A trainer `record`s its k steps, writing states 0..k as files
(`state_file_bytes`: one canonical encoding, so a state has one sha256) and
keeping each step's gradient proof (sha256 of the clipped gradients; see
abci_app.modules.audit). A validator reads a committed pre-state
(`read_state`, size-capped and shape-checked), `replay_step`s it on the
step's batch (`abci_app.workers.recompute.batch_at`) and compares the
post-state hash (same kernel path) or, on another kernel path, an error
against the per-step tolerance: `step_error_ppm` (update, m and v against the
recomputation) or the tighter `step_check_ppm` (m and v against the
recomputation, the update against the claimed m and v; bench/step_tolerance.py
measures both). The endpoints are tied to the base (`initial_state`) and to
the submitted delta (`delta_of`).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from abci_app.ml import train
from abci_app.ml.family import LoadedModel, ModelFamily

State = dict[str, Tensor]
FORMAT = "gradchain-train-state/1"
KINDS = ("m", "t", "v", "w")  # name prefixes of a training state
MAX_ERROR_PPM = 10**12  # step_error_ppm's ceiling: a relative error of 10^6, or a non-finite / zero-reference mismatch


class TrajectoryError(ValueError):
    """A training state or state file that is over the size cap, corrupt, or not shaped like the model's."""


@dataclass
class Recorded:
    """What `record` kept of k training steps (the states themselves are only on disk)."""

    state_paths: list[Path]  # k + 1 files: state 0 (before step 0), then the state after each step
    state_hashes: list[str]  # sha256 hex of each file
    state_sizes: list[int]  # bytes of each file
    grad_proofs: list[bytes]  # k x 32 raw bytes: sha256 over each step's clipped gradients
    losses: list[float]  # k: each step's loss, before its update
    optimizer: torch.optim.Optimizer


# --- The trainable parameters ------------------------------------------------------


def trainable_parameters(family: ModelFamily, loaded: LoadedModel) -> list[tuple[str, nn.Parameter]]:
    """(trainable name, parameter) in name order: the parameters `family.train_steps` hands the optimizer.

    smollm2-lora names its adapters by module path, not by `named_parameters`,
    so we ask it for the same mapping its train_steps uses.
    """
    adapters = getattr(family, "_adapter_params", None)
    if adapters is not None:
        return sorted(adapters(loaded).items())
    named = dict(loaded.module.named_parameters())
    return [(n, named[n]) for n in sorted(family.trainable_names(loaded))]


def trainable_shapes(family: ModelFamily, loaded: LoadedModel) -> dict[str, tuple[int, ...]]:
    """Trainable name -> shape: what `read_state` checks a state file against."""
    return {n: tuple(p.shape) for n, p in trainable_parameters(family, loaded)}


def state_shapes(trainable: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The names and shapes of a training state over these trainable parameters."""
    out: dict[str, tuple[int, ...]] = {}
    for n, shape in trainable.items():
        out[f"w/{n}"] = out[f"m/{n}"] = out[f"v/{n}"] = tuple(shape)
        out[f"t/{n}"] = ()
    return dict(sorted(out.items()))


def _step_dtype() -> torch.dtype:
    # What AdamW's lazy initialisation uses for a CPU, non-fused, non-capturable step count.
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


# --- States ----------------------------------------------------------------------------


def initial_state(family: ModelFamily, model: LoadedModel) -> State:
    """State 0 of a model shaped for training (`family.for_training`): its trainable weights, zero moments, step 0."""
    out: State = {}
    for n, p in trainable_parameters(family, model):
        w = p.detach()
        out[f"w/{n}"] = w.clone()
        out[f"m/{n}"] = torch.zeros_like(w, memory_format=torch.preserve_format)
        out[f"v/{n}"] = torch.zeros_like(w, memory_format=torch.preserve_format)
        out[f"t/{n}"] = torch.tensor(0.0, dtype=_step_dtype())
    return dict(sorted(out.items()))


def _state_of(params: Sequence[tuple[str, nn.Parameter]], optimizer: torch.optim.Optimizer) -> State:
    """The training state after the optimizer's latest step (copies)."""
    out: State = {}
    for n, p in params:
        st = optimizer.state.get(p) or {}
        w = p.detach()
        out[f"w/{n}"] = w.clone()
        if st:
            out[f"m/{n}"] = st["exp_avg"].detach().clone()
            out[f"v/{n}"] = st["exp_avg_sq"].detach().clone()
            out[f"t/{n}"] = st["step"].detach().clone()
        else:  # no gradient has reached it yet: AdamW has not initialised it, which is state 0's zeros
            out[f"m/{n}"] = torch.zeros_like(w)
            out[f"v/{n}"] = torch.zeros_like(w)
            out[f"t/{n}"] = torch.tensor(0.0, dtype=_step_dtype())
    return dict(sorted(out.items()))


def grad_proof(params: Iterable[tuple[str, nn.Parameter]]) -> bytes:
    """sha256 (32 raw bytes) over the parameters' current (clipped) gradients: names, dtypes, shapes, bytes, in name order.

    A parameter without a gradient counts as a zero gradient (AdamW skips it, so its state stays as it was).
    """
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in params}
    return bytes.fromhex(train.state_sha256(grads))


def weights_of(state: Mapping[str, Tensor]) -> State:
    """The trainable weights of a training state, under their plain names."""
    return {n[2:]: t for n, t in sorted(state.items()) if n.startswith("w/")}


def delta_of(state_0: Mapping[str, Tensor], state_k: Mapping[str, Tensor]) -> State:
    """w_k - w_0 under the delta's tensor names: equal bit for bit to the delta an honest trainer submits."""
    return train.make_delta(weights_of(state_k), weights_of(state_0))


# --- State files -----------------------------------------------------------------------


def check_state(state: Mapping[str, Tensor], trainable: Mapping[str, tuple[int, ...]], where: str = "training state") -> None:
    """TrajectoryError unless `state` has exactly the names and shapes of a training state over `trainable`, in float32."""
    want = state_shapes(trainable)
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or unexpected:
        raise TrajectoryError(f"{where}: tensor names differ from the model's: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for n, shape in want.items():
        t = state[n]
        if tuple(t.shape) != shape:
            raise TrajectoryError(f"{where}: {n} has shape {tuple(t.shape)}, the model's is {shape}")
        if t.dtype != (_step_dtype() if n.startswith("t/") else torch.float32):
            raise TrajectoryError(f"{where}: {n} has dtype {t.dtype}")


def state_file_bytes(state: Mapping[str, Tensor]) -> bytes:
    """The one encoding of a training state: safetensors, tensors in name order, one fixed metadata entry.

    (A single metadata key: safetensors writes a metadata map in per-process
    random order, abci_app.ml.checkpoint.)
    """
    for n in state:
        if n[:2] not in ("m/", "t/", "v/", "w/"):
            raise TrajectoryError(f"training state: {n!r} is not a w/, m/, v/ or t/ tensor")
    tensors = {n: state[n].detach().to("cpu").contiguous() for n in sorted(state)}
    return st_save(tensors, metadata={"format": FORMAT})


def state_hash(state: Mapping[str, Tensor]) -> str:
    """sha256 hex of `state_file_bytes(state)`: what a submission commits to."""
    return hashlib.sha256(state_file_bytes(state)).hexdigest()


def write_state(path: str | Path, state: Mapping[str, Tensor]) -> tuple[str, int]:
    """Write a state file atomically (temp file + rename); return (sha256 hex, size in bytes).

    No fsync: a trajectory lives only until it is uploaded, and a crash means training again anyway.
    """
    blob = state_file_bytes(state)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return hashlib.sha256(blob).hexdigest(), len(blob)


def read_state(path: str | Path, max_bytes: int, trainable: Mapping[str, tuple[int, ...]]) -> State:
    """A state file, refused (TrajectoryError) when over `max_bytes`, unreadable, or not shaped like `trainable`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise TrajectoryError(f"{path}: state file is {size} bytes, over the cap of {max_bytes}")
        with open(path, "rb") as f:
            blob = f.read(size + 1)  # one byte more than stat said: a file that grew meanwhile is caught below
    except OSError as e:
        raise TrajectoryError(f"cannot read state file {path}: {e.strerror}") from None
    if len(blob) != size:
        raise TrajectoryError(f"{path}: state file changed while it was read")
    try:
        state = st_load(blob)
    except Exception as e:  # the library raises its own SafetensorError and others
        raise TrajectoryError(f"{path}: corrupt state file: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    check_state(state, trainable, str(path))
    return dict(sorted(state.items()))


# --- Recording and replaying steps -------------------------------------------------------


def record(
    family: ModelFamily,
    model: LoadedModel,
    batches: Iterable[tuple[Tensor, Tensor]],
    lr: float,
    out_dir: str | Path,
    on_step: Callable[[int, float, torch.optim.Optimizer], None] | None = None,
) -> Recorded:
    """Train one step per batch in place on `model` (a clone shaped for training) through
    `family.train_steps`, as a trainer does, writing state i to out_dir/state-iiii.safetensors
    (0 before step 0, i + 1 after step i) and keeping each step's gradient proof.

    The trained model, hence the delta `family.delta(model, base)`, is the one train_steps alone makes.
    `on_step(i, loss, optimizer)` hears of each step after its state is written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = trainable_parameters(family, model)
    paths: list[Path] = []
    hashes: list[str] = []
    sizes: list[int] = []
    proofs: list[bytes] = []

    def keep(i: int, state: State) -> None:
        path = out_dir / f"state-{i:04d}.safetensors"
        sha256, size = write_state(path, state)
        paths.append(path)
        hashes.append(sha256)
        sizes.append(size)

    def after_step(i: int, loss: float, optimizer: torch.optim.Optimizer) -> None:
        proofs.append(grad_proof(params))  # the gradients are still the clipped ones of step i
        keep(i + 1, _state_of(params, optimizer))
        if on_step is not None:
            on_step(i, loss, optimizer)

    keep(0, initial_state(family, model))
    result = family.train_steps(model, batches, lr, on_step=after_step)
    return Recorded(paths, hashes, sizes, proofs, result.losses, result.optimizer)


def replay_step(
    family: ModelFamily, work_model: LoadedModel, pre_state: Mapping[str, Tensor], batch: tuple[Tensor, Tensor], lr: float
) -> tuple[State, bytes]:
    """One training step from `pre_state` on `batch`: (post-state, gradient proof).

    `work_model` is a reusable clone of the base shaped for training; its
    trainable weights are overwritten with the pre-state's (in place: no
    per-call copy of the model). The optimizer is built as `train.make_optimizer`
    builds it and given the pre-state's moments and step count, and the step
    runs through `family.train_steps`, so it is the trainer's step exactly.
    """
    params = trainable_parameters(family, work_model)
    check_state(pre_state, {n: tuple(p.shape) for n, p in params}, "pre-state")
    with torch.no_grad():
        for n, p in params:
            p.copy_(pre_state[f"w/{n}"])
    optimizer = train.make_optimizer(params, lr)
    for n, p in params:
        optimizer.state[p] = {
            "step": pre_state[f"t/{n}"].clone(),
            "exp_avg": pre_state[f"m/{n}"].clone(memory_format=torch.contiguous_format),
            "exp_avg_sq": pre_state[f"v/{n}"].clone(memory_format=torch.contiguous_format),
        }
    proofs: list[bytes] = []
    family.train_steps(work_model, [batch], lr, optimizer=optimizer, on_step=lambda i, loss, opt: proofs.append(grad_proof(params)))
    return _state_of(params, optimizer), proofs[0]


# --- Comparing recomputations ---------------------------------------------------------------


def step_error_ppm(post_a: Mapping[str, Tensor], post_b: Mapping[str, Tensor], pre: Mapping[str, Tensor], kinds: str = "wmv") -> int:
    """How far two recomputations of one step from `pre` disagree, in integer millionths (ceiling):
    the largest of ||a - b|| / ||b|| (b the reference, float64, norms over all tensors together)
    over the weight update (w_post - w_pre), m and v (`kinds`: "mv" leaves the update out). Step counts must be equal.

    0 exactly when those parts are bitwise equal; MAX_ERROR_PPM at most (also for
    non-finite values, differing step counts, or a zero reference with a nonzero difference).
    """
    if set(post_a) != set(post_b) or set(post_a) != set(pre):
        raise TrajectoryError("step_error_ppm: the states have different tensor names")
    names = sorted(n[2:] for n in post_b if n.startswith("t/"))
    if any(not torch.equal(post_a[f"t/{n}"], post_b[f"t/{n}"]) for n in names):
        return MAX_ERROR_PPM
    worst = 0.0
    for kind in kinds:
        diff = ref = 0.0
        for n in names:
            a, b = post_a[f"{kind}/{n}"].double(), post_b[f"{kind}/{n}"].double()
            if kind == "w":  # compare the updates: the weights themselves would hide the step under the base's norm
                w0 = pre[f"w/{n}"].double()
                a, b = a - w0, b - w0
            diff += float(((a - b) ** 2).sum())
            ref += float((b**2).sum())
        if not (math.isfinite(diff) and math.isfinite(ref)):
            return MAX_ERROR_PPM
        if diff == 0.0:
            continue
        if ref == 0.0:
            return MAX_ERROR_PPM
        worst = max(worst, math.sqrt(diff / ref))
    return min(MAX_ERROR_PPM, math.ceil(worst * 1_000_000))


def implied_update_error_ppm(post: Mapping[str, Tensor], pre: Mapping[str, Tensor], lr: float) -> int:
    """How far a post-state's weight update is from the AdamW update its own moments and step count imply
    (||(w_post - w_pre) - u|| / ||u||, u = -lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), in float32 as torch's
    for-loop AdamW computes it), integer millionths, ceiling. 0 for any honest post-state on the kernels
    that made it; elementwise ops only, so a few ulps across kernel sets.

    Why: comparing the update itself across kernel sets (step_error_ppm) is noisy where moments are fresh:
    AdamW's first step moves each weight by about lr * sign(g), so a gradient element that is rounding
    noise flips sign between kernel sets and moves by 2 lr, while m and v agree to ~1 ppm. Checking m and v
    against the recomputation and the update against the trainer's own m and v pins the step as tightly.
    """
    group = train.make_optimizer([("probe", nn.Parameter(torch.zeros(2, 2)))], lr).param_groups[0]
    (beta1, beta2), eps = group["betas"], group["eps"]
    if group["weight_decay"] != 0:
        raise TrajectoryError("implied_update_error_ppm: make_optimizer now decays weights; this check does not model it")
    diff = ref = 0.0
    for n in sorted(k[2:] for k in post if k.startswith("w/")):
        step = float(post[f"t/{n}"])
        if step < 1 or float(pre[f"t/{n}"]) != step - 1:
            return MAX_ERROR_PPM
        w0, m, v = pre[f"w/{n}"], post[f"m/{n}"], post[f"v/{n}"]
        denom = (v.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
        implied = w0.addcdiv(m, denom, value=-(lr / (1 - beta1**step)))  # the op order of torch's _single_tensor_adam
        diff += float(((post[f"w/{n}"].double() - implied.double()) ** 2).sum())
        ref += float(((implied.double() - w0.double()) ** 2).sum())
    if not (math.isfinite(diff) and math.isfinite(ref)):
        return MAX_ERROR_PPM
    if diff == 0.0:
        return 0
    if ref == 0.0:
        return MAX_ERROR_PPM
    return min(MAX_ERROR_PPM, math.ceil(math.sqrt(diff / ref) * 1_000_000))


def step_check_ppm(claimed: Mapping[str, Tensor], recomputed: Mapping[str, Tensor], pre: Mapping[str, Tensor], lr: float) -> int:
    """The per-step check that is tight across kernel sets: the larger of the claimed moments' error against
    the recomputation (step_error_ppm over m and v) and the claimed update's distance from the update its
    own moments imply (implied_update_error_ppm)."""
    return max(step_error_ppm(claimed, recomputed, pre, kinds="mv"), implied_update_error_ppm(claimed, pre, lr))
