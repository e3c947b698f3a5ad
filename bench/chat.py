"""Generation speed: our streaming KV-cache generation vs a plain loop that recomputes the context.

Same weights, same prompt, same sampling (temperature, seed). "Ours" is what
`gradchain chat` streams: abci_app.ml family.generate (KV cache, text pieces
as they complete). "Plain" is the textbook loop: run the model on the whole
context (last block_size tokens) for every new token, no cache.

    .venv/bin/python bench/chat.py [--checkpoint FILE] [--preset genesis|test] [--tokens 256] [--repeats 3]

Without --checkpoint it uses freshly initialised weights of the preset's
config (speed does not depend on the weights' values). Prints tokens/s of
both, the ratio, and time to first token; also tokens per CPU-second, which
a busy machine distorts less than wall clock. Asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from abci_app.ml import determinism, model  # noqa: E402
from abci_app.ml.family import LoadedModel, get_family, load_model  # noqa: E402
from abci_app.ml.generate import SamplingParams, sample  # noqa: E402

PRESETS = {"genesis": model.GENESIS_CONFIG, "test": model.TEST_CONFIG}


def ours(loaded: LoadedModel, prompt: str, params: SamplingParams) -> tuple[int, float, float, float]:
    """(tokens, seconds to first piece, total seconds, CPU seconds) for the streaming KV-cache path."""
    cpu = time.process_time()
    start = time.perf_counter()
    first = None
    text = []
    for piece in loaded.family.generate(loaded, prompt, params):
        if first is None:
            first = time.perf_counter() - start
        text.append(piece)
    total = time.perf_counter() - start
    return len(loaded.tokenizer.encode("".join(text))), first or total, total, time.process_time() - cpu


@torch.inference_mode()
def plain(loaded: LoadedModel, prompt: str, params: SamplingParams) -> tuple[int, float, float, float]:
    """The same sampling with a full forward over the context for every token."""
    gpt, block = loaded.module, loaded.config.block_size
    generator = torch.Generator().manual_seed(params.seed)
    cpu = time.process_time()
    start = time.perf_counter()
    first = None
    idx = torch.tensor([loaded.tokenizer.encode(prompt)], dtype=torch.long)  # (1, T)
    for _ in range(params.max_new_tokens):
        logits = gpt(idx[:, -block:])[0, -1]  # (V,): recomputes every position
        token = sample(logits, params, generator)
        idx = torch.cat([idx, torch.tensor([[token]])], dim=1)
        if first is None:
            first = time.perf_counter() - start
    return params.max_new_tokens, first or 0.0, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="tiny-gpt checkpoint (default: fresh weights of --preset)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="genesis")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=determinism.DEFAULT_THREADS)
    ap.add_argument("--prompt", default="In the beginning")
    args = ap.parse_args()

    kernel = determinism.pin(args.threads)
    if args.checkpoint:
        _, loaded = load_model(args.checkpoint)
        source = str(args.checkpoint)
    else:
        loaded = get_family("tiny-gpt").build(PRESETS[args.preset], seed=0)
        source = f"fresh weights, preset {args.preset}"
    params = SamplingParams(max_new_tokens=args.tokens, temperature=0.8, top_k=50, seed=1, stop_at_eot=False)
    cfg = loaded.config
    print(f"model: {loaded.family.name} {sum(p.numel() for p in loaded.module.parameters()):,} params "
          f"(L{cfg.n_layer} d{cfg.n_embd} ctx{cfg.block_size}; {source})")  # fmt: skip
    print(f"{args.tokens} new tokens after {args.prompt!r}, median of {args.repeats}, {args.threads} threads, {kernel}")

    results = {}
    for name, fn in [("ours (KV cache, streaming)", ours), ("plain loop (no cache)", plain)]:
        fn(loaded, args.prompt, params)  # warm-up: first-call allocations and kernel selection
        runs = [fn(loaded, args.prompt, params) for _ in range(args.repeats)]
        tps = statistics.median(n / total for n, _, total, _ in runs)
        cpu_tps = statistics.median(n / cpu for n, _, _, cpu in runs)
        ttft = statistics.median(first for _, first, _, _ in runs)
        results[name] = (tps, cpu_tps)
        print(f"  {name:28s} {tps:8.0f} tok/s   time to first token {ttft * 1000:6.1f} ms   ({cpu_tps:.0f} tok per CPU-s)")
    (a, a_cpu), (b, b_cpu) = results.values()
    print(f"  ratio ours / plain: {a / b:.2f}x wall clock, {a_cpu / b_cpu:.2f}x CPU time")


if __name__ == "__main__":
    main()
