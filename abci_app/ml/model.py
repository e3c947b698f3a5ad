"""A small GPT (after nanoGPT's model.py), with a KV cache for generation.

Pre-LayerNorm decoder blocks, learned absolute positions, GELU MLP, fp32.
The whole architecture is one frozen `GPTConfig`; checkpoints and the model
registry carry it so any node can rebuild exactly this network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 257  # 256 bytes + end-of-text (see tokenizer.py)
    block_size: int = 128  # longest context the position table covers
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0  # 0 keeps training a pure function of (weights, batch)
    bias: bool = False

    def __post_init__(self) -> None:
        # Normalise types so JSON round trips and config_hash see one spelling (0 vs 0.0).
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                raise ValueError(f"GPTConfig.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.bias, bool) or not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ValueError(f"GPTConfig: bias must be a bool and dropout in [0, 1), got {self.bias!r}, {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if min(self.vocab_size, self.block_size, self.n_layer, self.n_head) < 1:
            raise ValueError(f"config sizes must be positive: {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {sorted(unknown)}")
        return cls(**d)


# The genesis model: ~4.5 minutes of training on 2 idle CPU cores (docs/ml.md).
GENESIS_CONFIG = GPTConfig(vocab_size=257, block_size=128, n_layer=4, n_head=4, n_embd=128)
# Unit tests: builds and trains in milliseconds.
TEST_CONFIG = GPTConfig(vocab_size=257, block_size=32, n_layer=2, n_head=2, n_embd=32)


class KVCache:
    """Keys and values of every layer for positions [0, length), preallocated to block_size."""

    def __init__(self, config: GPTConfig, batch_size: int = 1, dtype: torch.dtype = torch.float32):
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, dtype=dtype)  # (L, B, nh, block, hs)
        self.v = torch.zeros(shape, dtype=dtype)
        self.length = 0  # positions filled, shared by all layers

    def reset(self) -> None:
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        mask, causal = None, True
        if cache is not None:
            past = cache.length
            cache.k[self.layer, :B, :, past : past + T] = k
            cache.v[self.layer, :B, :, past : past + T] = v
            k = cache.k[self.layer, :B, :, : past + T]  # (B, nh, past+T, hs)
            v = cache.v[self.layer, :B, :, : past + T]
            if past:
                # new query i sees every cached position and new positions <= i
                causal = False
                mask = torch.ones(T, past + T, dtype=torch.bool).tril(diagonal=past)  # (T, past+T)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal and T > 1)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return F.dropout(self.c_proj(y), dropout, self.training)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache)  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


class GPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab).

    Built on the meta device and initialised from a seeded generator, so making
    a model never touches torch's global RNG and the same seed gives the same
    weights in any process.
    """

    def __init__(self, config: GPTConfig, seed: int = 0, device: str = "cpu"):
        super().__init__()
        self.config = config
        with torch.device("meta"):
            self.wte = nn.Embedding(config.vocab_size, config.n_embd)
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
            self.drop = nn.Dropout(config.dropout)
            self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
            self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
            # Untied from wte: every parameter is its own tensor, so state dicts,
            # safetensors files and deltas need no shared-tensor special cases.
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if device != "meta":  # "meta": shapes only, no memory (expected_shapes)
            self.to_empty(device=device)
            self.init_weights(seed)

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        proj_std = 0.02 / math.sqrt(2 * self.config.n_layer)  # GPT-2: scale residual projections
        for name, p in sorted(self.named_parameters()):  # sorted: init order is part of the seed's meaning
            if ".ln_" in name or name.startswith("ln_"):
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, proj_std if name.endswith("c_proj.weight") else 0.02, generator=g)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"context {start + T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.h:
            x = block(x, cache)  # (B, T, C)
        if cache is not None:
            cache.length += T
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        logits = self(x)  # (B, T, vocab)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape for a config: exactly what a checkpoint must hold."""
    return {name: tuple(p.shape) for name, p in GPT(config, device="meta").state_dict().items()}
