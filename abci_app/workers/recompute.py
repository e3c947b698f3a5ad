"""The computation a trainer does and a validator repeats, in one place.

Trainer and validator call the same functions with the same chain data
(round seed, trainer address, the dataset each step draws from, params), so an honest step is
recomputed bit for bit at equal thread counts and kernel paths, and within
`step_tolerance_ppm` otherwise (the spot-check itself: abci_app.workers.spotcheck).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from abci_app.ml import evaluate, train
from abci_app.ml.corpus import Dataset
from abci_app.ml.evaluate import MICRO, to_micro  # noqa: F401  (workers and tests use them from here)
from abci_app.ml.family import LoadedModel, ModelFamily, State
from abci_app.modules.training import draw_steps


@dataclass(frozen=True)
class Work:
    """What a submission trains: everything comes from the chain."""

    round_id: int
    base_version: int
    round_seed: str  # hex
    trainer: str
    dataset_sha256: str
    params: dict[str, Any]  # the training module's Params as JSON
    kernel_path: str = ""  # the kernel path the submission says it was computed on
    step_sources: tuple[str, ...] = ()  # sha256 of the dataset each step draws from (training.draw_steps); () = all dataset_sha256


@dataclass(frozen=True)
class Mix(Dataset):
    """The round's evaluation dataset (held-out loss), with the train split of every dataset its steps draw from."""

    sources: Mapping[str, Tensor] = field(default_factory=dict)  # dataset sha256 -> train token ids


def round_work(rnd: dict, trainer: str, entry: dict, params: dict[str, Any], kernel_path: str, sha256_of: Mapping[int, str]) -> Work:
    """The chain's Work for `trainer` in round `rnd`: `entry` is the round's dataset (dataset_id), `sha256_of` maps
    each dataset id of the round's mix to its sha256. A round without a mix (older rounds) draws every step from `entry`."""
    draws = draw_steps(rnd["seed"], trainer, rnd.get("mix") or [], params["steps"])
    return Work(rnd["id"], rnd["base_version"], rnd["seed"], trainer, entry["sha256"], params, kernel_path, tuple(sha256_of[d] for d in draws))


@dataclass(frozen=True)
class Trained:
    delta: State
    train_losses: list[float]
    heldout_before: float
    heldout_after: float


def batches(family: ModelFamily, base: LoadedModel, dataset: Dataset, work: Work) -> list:
    """Every step's batch (`batch_at` for i < k)."""
    return [batch_at(family, base, dataset, work, i) for i in range(work.params["steps"])]


def train_delta(family: ModelFamily, base: LoadedModel, dataset: Dataset, work: Work, on_step=None) -> tuple[State, list[float], LoadedModel]:
    """k AdamW steps from `base` on the trainer's assigned batches: (delta, per-step losses, trained model).

    `base` must already be shaped for the round's params (`family.for_training`);
    `on_step(i, loss, optimizer)` hears of each step (progress).
    """
    model = family.clone(base)
    result = family.train_steps(model, batches(family, base, dataset, work), work.params["learning_rate_micro"] / MICRO, on_step=on_step)
    return family.delta(model, base), result.losses, model


def train_submission(family: ModelFamily, base: LoadedModel, dataset: Dataset, work: Work, on_step=None) -> Trained:
    """What a trainer submits: the delta of `train_delta` and the held-out loss before and after it."""
    delta, losses, model = train_delta(family, base, dataset, work, on_step)
    return Trained(delta, losses, heldout_loss(family, base, dataset), heldout_loss(family, model, dataset))


def heldout_loss(family: ModelFamily, model: LoadedModel, dataset: Dataset, windows: int | None = None) -> float:
    """Mean loss over evenly spaced windows of the held-out split: `windows` of them, or the family's own
    number (what a trainer reports and a merge records: 64 for the tiny GPT, 16 x 128 tokens for SmolLM2)."""
    return family.evaluate_loss(model, dataset.heldout) if windows is None else family.evaluate_loss(model, dataset.heldout, windows)


def delta_extra(work: Work, trained: Trained, kernel_path: str) -> dict[str, Any]:
    """Metadata a delta file carries: what it was trained on, so anyone can recompute it."""
    return {
        "round": work.round_id, "trainer": work.trainer, "round_seed": work.round_seed, "dataset_sha256": work.dataset_sha256,
        "steps": work.params["steps"], "kernel_path": kernel_path,
        "heldout_before_micro": to_micro(trained.heldout_before), "heldout_after_micro": to_micro(trained.heldout_after),
    }


def prompt_score(family: ModelFamily, model: LoadedModel, n: int, on_answer=None) -> dict[str, int]:
    """The first `n` fixed evaluation prompts, greedy (abci_app.ml.evaluate): {prompts_correct, prompts_total}.

    `on_answer(prompt, answer, correct)` hears of each answer (progress)."""
    score = evaluate.score_prompts(family, model, evaluate.PROMPTS[: max(0, n)], on_answer=on_answer)
    return {k: score[k] for k in ("prompts_correct", "prompts_total")}


def merged_checkpoint(family: ModelFamily, base: LoadedModel, deltas: list[State], base_version: int, round_id: int, out: Path) -> tuple[str, LoadedModel]:
    """base + mean(deltas in submission order), saved byte-deterministically; returns (sha256, model)."""
    merged = family.apply(base, family.merge(deltas))
    sha256 = family.save(merged, out, parent=str(base_version), extra={"round": round_id})
    return sha256, merged


# --- Trajectories (issue 12) ---


def batch_at(family: ModelFamily, base: LoadedModel, dataset: Dataset, work: Work, i: int) -> tuple:
    """Step i's batch, as `batches(...)[i]` gives it, without making the other k - 1 (a validator replays a few steps)."""
    if not 0 <= i < work.params["steps"]:
        raise ValueError(f"step {i} is outside the submission's {work.params['steps']} steps")
    source, tokens = _source(dataset, work, i)
    seed = train.batch_seed(bytes.fromhex(work.round_seed), work.trainer, source)
    seq_len = min(work.params["seq_len"], family.context_length(base))
    # train.iter_batches's per-step seed: seed || "/step/" || u32be(i); one dataset gives exactly its batches
    return train.batch_for(seed + b"/step/" + i.to_bytes(4, "big"), tokens, work.params["batch_size"], seq_len)


def _source(dataset: Dataset, work: Work, i: int) -> tuple[str, Tensor]:
    """(sha256, train token ids) of the dataset step i draws from."""
    source = work.step_sources[i] if work.step_sources else work.dataset_sha256
    if source == work.dataset_sha256:
        return source, dataset.train
    sources = getattr(dataset, "sources", {})
    if source not in sources:
        raise ValueError(f"step {i} draws from dataset {source[:16]}…, which is not loaded")
    return source, sources[source]


def lr_of(work: Work) -> float:
    """The learning rate `train_delta` trains `work` at."""
    return work.params["learning_rate_micro"] / MICRO
