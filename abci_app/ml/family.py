"""One interface over model families; the rest of the code (CLI, workers) uses only this.

A family knows how to build its network from a config, read and write its
checkpoints, generate, train k steps and make, apply and merge deltas.
Families: "tiny-gpt" (abci_app.ml.model, for tests and small localnets);
"smollm2-lora" (abci_app.ml.smollm2) trains LoRA adapters, so "trainable
state" is a subset of the weights, and a delta covers only that subset.

Typical use (issue 6's trainer and validator run the same lines):

    fam, base = load_model(path)                 # family from the file's metadata
    base = fam.for_training(base, chain_params)  # LoRA spec from the chain (smollm2-lora)
    work = fam.clone(base)
    result = fam.train_steps(work, batches, lr)  # k = len(batches)
    delta = fam.delta(work, base)
    fam.save_delta(out, delta, base, parent="3", extra={...})
"""

from __future__ import annotations

import copy
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn

from abci_app.ml import checkpoint, generate, model, train
from abci_app.ml.checkpoint import CheckpointError, CheckpointMeta
from abci_app.ml.corpus import Dataset, load_dataset
from abci_app.ml.generate import SamplingParams
from abci_app.ml.tokenizer import ByteTokenizer

State = dict[str, Tensor]


class Tokenizer(Protocol):
    description: str
    eot: int | None

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...


@dataclass
class LoadedModel:
    """A family's network with its config, tokenizer and provenance."""

    family: ModelFamily
    config: Any  # the family's frozen config dataclass
    module: nn.Module
    tokenizer: Tokenizer
    parent: str = ""  # the version this one was derived from
    sha256: str | None = None  # of the file it was loaded from or saved to
    extra: dict[str, Any] | None = None


class ModelFamily(ABC):
    name: ClassVar[str]

    # --- config ---
    @abstractmethod
    def config_from_dict(self, d: Mapping[str, Any]) -> Any: ...

    @abstractmethod
    def config_to_dict(self, config: Any) -> dict[str, Any]: ...

    def config_hash(self, config: Any) -> str:
        """sha256 of canonical JSON {family, config}: what the registry stores and a loader checks."""
        doc = {"family": self.name, "config": self.config_to_dict(config)}
        return hashlib.sha256(checkpoint.canonical_json(doc).encode()).hexdigest()

    @abstractmethod
    def expected_shapes(self, config: Any, kind: str) -> dict[str, tuple[int, ...]]:
        """Tensor names and shapes of a "model" or "delta" file for this config."""

    # --- building and files ---
    @abstractmethod
    def build(self, config: Any, tensors: Mapping[str, Tensor] | None = None, seed: int = 0) -> LoadedModel:
        """A model from a config, with these weights or freshly initialised from `seed`."""

    def model_tensors(self, loaded: LoadedModel) -> State:
        """What a "model" checkpoint stores."""
        return train.model_state(loaded.module)

    def load(self, path: str | Path, expect_config_hash: str | None = None) -> LoadedModel:
        """Read a "model" checkpoint of this family; CheckpointError if corrupt or not the expected config."""
        tensors, meta = checkpoint.load(path, self._shapes_from_meta)
        if meta.kind != "model":
            raise CheckpointError(f"{path}: is a {meta.kind} file, not a model checkpoint")
        config = self.config_from_dict(meta.config)
        if expect_config_hash is not None and self.config_hash(config) != expect_config_hash:
            raise CheckpointError(
                f"{path}: config mismatch: config hash {self.config_hash(config)} != expected {expect_config_hash}"
            )
        loaded = self.build(config, tensors)
        if loaded.tokenizer.description != meta.tokenizer:
            raise CheckpointError(f"{path}: tokenizer {meta.tokenizer!r} is not this family's {loaded.tokenizer.description!r}")
        return replace(loaded, parent=meta.parent, sha256=checkpoint.file_sha256(path), extra=meta.extra)

    def save(self, loaded: LoadedModel, path: str | Path, parent: str = "", extra: Mapping[str, Any] | None = None) -> str:
        """Write a "model" checkpoint; return its sha256 (same weights + metadata => same sha256)."""
        meta = self._meta(loaded, "model", parent, extra)
        loaded.sha256 = checkpoint.save(path, self.model_tensors(loaded), meta)
        return loaded.sha256

    def save_delta(
        self,
        path: str | Path,
        delta: Mapping[str, Tensor],
        base: LoadedModel,
        parent: str,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Write a delta made against `base` (version `parent`); return its sha256."""
        checkpoint.check_shapes(delta, self.expected_shapes(base.config, "delta"), str(path))
        return checkpoint.save(path, delta, self._meta(base, "delta", parent, extra))

    def load_delta(self, path: str | Path, base: LoadedModel) -> tuple[State, CheckpointMeta]:
        """Read a delta and check it was made for `base`'s family and config."""
        tensors, meta = checkpoint.load(path, self._shapes_from_meta)
        if meta.kind != "delta":
            raise CheckpointError(f"{path}: is a {meta.kind} file, not a delta")
        if self.config_from_dict(meta.config) != base.config:
            raise CheckpointError(f"{path}: config mismatch: the delta was made for another model config")
        return tensors, meta

    def _meta(self, loaded: LoadedModel, kind: str, parent: str, extra: Mapping[str, Any] | None) -> CheckpointMeta:
        return CheckpointMeta(
            family=self.name, config=self.config_to_dict(loaded.config), tokenizer=loaded.tokenizer.description,
            kind=kind, parent=parent, extra=dict(extra or {}),
        )  # fmt: skip

    def _shapes_from_meta(self, meta: CheckpointMeta) -> dict[str, tuple[int, ...]]:
        if meta.family != self.name:
            raise ValueError(f"checkpoint is family {meta.family!r}, not {self.name!r}")
        return self.expected_shapes(self.config_from_dict(meta.config), meta.kind)

    def clone(self, loaded: LoadedModel) -> LoadedModel:
        """An independent copy to train while keeping the base."""
        return replace(loaded, module=copy.deepcopy(loaded.module), sha256=None)

    # --- use ---
    @abstractmethod
    def generate(self, loaded: LoadedModel, prompt: str, params: SamplingParams) -> Iterator[str]:
        """Stream the continuation of `prompt` as text pieces (complete characters)."""

    def dataset(self, loaded: LoadedModel, path: str | Path) -> Dataset:
        """A registered dataset file as this family's token ids, split train / held-out."""
        return load_dataset(path, loaded.tokenizer)

    # --- training ---
    def for_training(self, loaded: LoadedModel, params: Mapping[str, Any]) -> LoadedModel:
        """`loaded` shaped for the chain's training params (the training module's Params as JSON).

        Every weight trains here, so nothing changes; smollm2-lora puts on
        adapters of the params' LoRA spec. Returns `loaded` itself when nothing changes.
        """
        return loaded

    def trainable_state(self, loaded: LoadedModel) -> State:
        """The tensors training changes and a delta covers (all weights here; LoRA adapters in smollm2-lora)."""
        return train.model_state(loaded.module, self.trainable_names(loaded))

    def trainable_names(self, loaded: LoadedModel) -> list[str]:
        return sorted(n for n, p in loaded.module.named_parameters() if p.requires_grad)

    @abstractmethod
    def context_length(self, loaded: LoadedModel) -> int:
        """Longest sequence the model takes (batch windows must fit)."""

    def train_steps(
        self, loaded: LoadedModel, batches: Iterable[tuple[Tensor, Tensor]], lr: float, **kw: Any
    ) -> train.TrainResult:
        """k AdamW steps in place, one per batch, on the trainable parameters."""
        names = set(self.trainable_names(loaded))
        params = [(n, p) for n, p in loaded.module.named_parameters() if n in names]
        return train.train_steps(loaded.module, batches, lr, params=params, **kw)

    def evaluate_loss(self, loaded: LoadedModel, tokens: Tensor, windows: int = 64) -> float:
        return train.evaluate_loss(loaded.module, tokens, self.context_length(loaded), windows)

    # --- deltas ---
    def delta(self, new: LoadedModel, base: LoadedModel) -> State:
        return train.make_delta(self.trainable_state(new), self.trainable_state(base))

    def apply(self, base: LoadedModel, delta: Mapping[str, Tensor]) -> LoadedModel:
        """A new model: base + delta (the base is unchanged)."""
        return self.build(base.config, train.apply_delta(self.model_tensors(base), delta))

    def merge(self, deltas: Sequence[Mapping[str, Tensor]]) -> State:
        """Average accepted deltas in the given (chain) order: bitwise deterministic."""
        return train.average_deltas(deltas)


class TinyGPT(ModelFamily):
    """The nanoGPT-style byte-level GPT of abci_app.ml.model; every weight is trainable."""

    name = "tiny-gpt"

    def config_from_dict(self, d: Mapping[str, Any]) -> model.GPTConfig:
        return model.GPTConfig.from_dict(dict(d))

    def config_to_dict(self, config: model.GPTConfig) -> dict[str, Any]:
        return config.to_dict()

    def expected_shapes(self, config: model.GPTConfig, kind: str) -> dict[str, tuple[int, ...]]:
        return model.expected_shapes(config)  # a delta covers every weight

    def build(self, config: model.GPTConfig, tensors: Mapping[str, Tensor] | None = None, seed: int = 0) -> LoadedModel:
        gpt = model.GPT(config, seed=seed)
        if tensors is not None:
            checkpoint.check_shapes(tensors, model.expected_shapes(config), "weights")
            gpt.load_state_dict(dict(tensors), strict=True)
        gpt.eval()
        return LoadedModel(self, config, gpt, ByteTokenizer())

    def generate(self, loaded: LoadedModel, prompt: str, params: SamplingParams) -> Iterator[str]:
        return generate.stream(loaded.module, prompt, params, loaded.tokenizer)

    def context_length(self, loaded: LoadedModel) -> int:
        return loaded.config.block_size


FAMILIES: dict[str, ModelFamily] = {TinyGPT.name: TinyGPT()}


def register(family: ModelFamily) -> None:
    """Make a family loadable by name (checkpoint metadata, get_family)."""
    FAMILIES[family.name] = family


def get_family(name: str) -> ModelFamily:
    if name == "smollm2-lora" and name not in FAMILIES:  # imported on first use: it pulls in transformers and peft
        from abci_app.ml.smollm2 import SmolLM2Lora

        FAMILIES[name] = SmolLM2Lora()
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(sorted(FAMILIES))})") from None


def expected_shapes(meta: CheckpointMeta) -> dict[str, tuple[int, ...]]:
    """checkpoint.load's default validation: the shapes the file's own family and config imply."""
    fam = get_family(meta.family)
    return fam.expected_shapes(fam.config_from_dict(meta.config), meta.kind)


def load_model(path: str | Path, expect_config_hash: str | None = None) -> tuple[ModelFamily, LoadedModel]:
    """Load any model checkpoint, picking the family from its metadata."""
    meta = checkpoint.read_meta(path)
    try:
        fam = get_family(meta.family)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return fam, fam.load(path, expect_config_hash)
