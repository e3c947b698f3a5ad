"""Sampling from the small GPT: KV cache, temperature, top-k, top-p, seed, streaming.

Both paths (with and without the cache) see the same context: the last
`block_size` prompt tokens, then every new token; when the window is full it
restarts from its last half (the cache is rebuilt from those tokens, the
no-cache path just crops). So they compute the same logits up to float
rounding, and with the same seed they emit the same tokens; the tests check it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from abci_app.ml.model import GPT, KVCache
from abci_app.ml.tokenizer import ByteTokenizer


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 200
    temperature: float = 0.8  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    stop_at_eot: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0 or self.temperature < 0:
            raise ValueError("max_new_tokens and temperature must be >= 0")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to -inf every logit outside the top k and outside the smallest set with probability >= top_p. (..., V)"""
    out = logits.clone()
    if top_k is not None and top_k < out.size(-1):
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]  # (..., 1)
        out[out < kth] = float("-inf")
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # (..., V)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already reaches p
        out.scatter_(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return out


def sample(logits: Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token id from last-position logits (V,)."""
    if params.temperature == 0:
        return int(torch.argmax(logits))
    logits = filter_logits(logits / params.temperature, params.top_k, params.top_p)
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))


@torch.inference_mode()
def _last_logits(model: GPT, ids: Sequence[int], cache: KVCache | None) -> Tensor:
    return model(torch.tensor([list(ids)], dtype=torch.long), cache)[0, -1]  # (V,)


def generate_ids(
    model: GPT, prompt: Sequence[int], params: SamplingParams, eot: int | None = None, use_cache: bool = True
) -> Iterator[int]:
    """Yield new token ids one at a time (a generator: the caller streams)."""
    if not prompt:
        raise ValueError("generation needs at least one prompt token")
    block = model.config.block_size
    keep = max(1, block // 2)  # tokens kept when the window is full
    generator = torch.Generator().manual_seed(params.seed)  # never the global RNG
    ctx = list(prompt[-block:])
    cache = KVCache(model.config) if use_cache else None
    pending = ctx  # tokens the cache has not seen yet
    for _ in range(params.max_new_tokens):
        logits = _last_logits(model, pending if cache is not None else ctx, cache)
        token = sample(logits, params, generator)
        yield token
        if params.stop_at_eot and token == eot:
            return
        ctx.append(token)
        pending = [token]
        if len(ctx) > block:
            ctx = ctx[-keep:]
            if cache is not None:
                cache.reset()
                pending = ctx
    return


def stream(
    model: GPT, prompt: str, params: SamplingParams, tokenizer: ByteTokenizer | None = None, use_cache: bool = True
) -> Iterator[str]:
    """Yield the continuation of `prompt` as text, complete UTF-8 characters at a time."""
    tok = tokenizer or ByteTokenizer()
    ids = tok.encode(prompt) or tok.encode("\n")  # an empty prompt starts a fresh line
    yield from tok.stream_decode(generate_ids(model, ids, params, tok.eot, use_cache))


def generate_text(model: GPT, prompt: str, params: SamplingParams, use_cache: bool = True) -> str:
    return "".join(stream(model, prompt, params, use_cache=use_cache))
