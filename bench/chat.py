"""Generation speed: our streaming KV-cache generation vs a baseline on the same weights.

    .venv/bin/python bench/chat.py [--checkpoint FILE] [--preset genesis|test] [--tokens 256] [--repeats 3] [--threads 2]
    .venv/bin/python bench/chat.py --model smollm2 [--checkpoint FILE] [--tokens 64] [--repeats 1] [--threads 1,2] [--cold 2]

--model tiny-gpt (the default, unchanged): the byte-level GPT of
abci_app.ml.model. "Ours" is what `gradchain chat` streams for it:
family.generate (KV cache, text pieces as they complete). "Plain" is the
textbook loop: run the model on the whole context (last block_size tokens)
for every new token, no cache. Same weights, prompt and sampling
(temperature 0.8, top-k 50, seed). Without --checkpoint it uses freshly
initialised weights of the preset's config (speed does not depend on the
weights' values).

--model smollm2: SmolLM2-135M-Instruct ("smollm2-lora"; default checkpoint
smollm2.genesis_checkpoint(), the converted, cached GGUF). Greedy, exactly
--tokens new tokens for every one of the fixed chat PROMPTS (EOS does not stop
either side), on the same weights:
  * ours: family.chat's path, i.e. tokenizer.chat_ids -> family.generate_ids
    (our DynamicCache loop, untrained adapters switched off) ->
    tokenizer.stream_decode (text pieces);
  * plain: transformers' `LlamaForCausalLM.generate(do_sample=False,
    use_cache=True)` on a plain LlamaForCausalLM (no peft) built from the
    same tensors (shared, not copied), EOS stopping switched off; it returns
    ids, no text.
The adapters are untrained (B = 0), so the ids must be equal: printed as
"ids equal". Per thread count: tokens/s, CPU seconds per token, the ratio
ours/plain (wall and CPU), and warm time to first token (model loaded in
this process: messages -> chat_ids -> first token; ours: first text piece).
Cold time to first token: a fresh `python -c` subprocess per run, 1 thread
(what `gradchain chat` pins), measured from spawn to the line it prints after
the first piece: interpreter start + imports + load_model + chat_ids + first
token, broken down by the child's own clock (CLOCK_MONOTONIC, shared by both
processes on Linux). The checkpoint is in the OS page cache after the first
load, so "cold" is a cold process, not a cold disk; `gradchain chat` also
pulls and verifies the file from the chain first, which this leaves out.

At 2 threads on a busy machine OpenMP's default spin-waiting burns CPU
while a thread waits for a core (bench/determinism.py): run with
OMP_WAIT_POLICY=PASSIVE in the environment to see the figure without it
(`gradchain chat` pins 1 thread, where it does not arise).

Prints tokens per CPU-second too, which a busy machine distorts less than
wall clock. Asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from abci_app.ml import determinism, model  # noqa: E402
from abci_app.ml.family import LoadedModel, get_family, load_model  # noqa: E402
from abci_app.ml.generate import SamplingParams, sample  # noqa: E402

PRESETS = {"genesis": model.GENESIS_CONFIG, "test": model.TEST_CONFIG}
PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "What is the capital of France? Answer in one paragraph.",
    "List three uses of copper and explain each.",
)


def parse_threads(text: str | None, default: int) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text else [default]


# --- tiny-gpt ------------------------------------------------------------------------------


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


def tiny_main(args: argparse.Namespace) -> None:
    threads = parse_threads(args.threads, determinism.DEFAULT_THREADS)
    determinism.pin(threads[0])
    if args.checkpoint:
        _, loaded = load_model(args.checkpoint)
        source = str(args.checkpoint)
    else:
        loaded = get_family("tiny-gpt").build(PRESETS[args.preset], seed=0)
        source = f"fresh weights, preset {args.preset}"
    tokens = args.tokens or 256
    repeats = args.repeats or 3
    prompt = args.prompt or "In the beginning"
    params = SamplingParams(max_new_tokens=tokens, temperature=0.8, top_k=50, seed=1, stop_at_eot=False)
    cfg = loaded.config
    print(f"model: {loaded.family.name} {sum(p.numel() for p in loaded.module.parameters()):,} params "
          f"(L{cfg.n_layer} d{cfg.n_embd} ctx{cfg.block_size}; {source})")  # fmt: skip
    for n_threads in threads:
        kernel = determinism.pin(n_threads)
        print(f"{tokens} new tokens after {prompt!r}, median of {repeats}, {n_threads} threads, {kernel}")
        results = {}
        for name, fn in [("ours (KV cache, streaming)", ours), ("plain loop (no cache)", plain)]:
            fn(loaded, prompt, params)  # warm-up: first-call allocations and kernel selection
            runs = [fn(loaded, prompt, params) for _ in range(repeats)]
            tps = statistics.median(n / total for n, _, total, _ in runs)
            cpu_tps = statistics.median(n / cpu for n, _, _, cpu in runs)
            ttft = statistics.median(first for _, first, _, _ in runs)
            results[name] = (tps, cpu_tps)
            print(f"  {name:28s} {tps:8.0f} tok/s   time to first token {ttft * 1000:6.1f} ms   ({cpu_tps:.0f} tok per CPU-s)")
        (a, a_cpu), (b, b_cpu) = results.values()
        print(f"  ratio ours / plain: {a / b:.2f}x wall clock, {a_cpu / b_cpu:.2f}x CPU time")


# --- smollm2 -------------------------------------------------------------------------------


def plain_llama(loaded: LoadedModel):
    """A plain transformers LlamaForCausalLM (no peft layers) on the loaded model's own weight tensors (shared)."""
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from abci_app.ml import smollm2

    cfg = smollm2._llama_config(loaded.config)  # the config our family builds its network from (sdpa attention)
    weights = {n: t for n, t in loaded.family.model_tensors(loaded, copy=False).items() if not n.startswith(smollm2.TOKENIZER_PREFIX)}
    with torch.device("meta"):
        net = LlamaForCausalLM(cfg)
    net.load_state_dict(weights, strict=False, assign=True)
    net.model.rotary_emb = LlamaRotaryEmbedding(cfg)
    if cfg.tie_word_embeddings:
        net.lm_head.weight = net.model.embed_tokens.weight
    leftover = [n for n, p in list(net.named_parameters()) + list(net.named_buffers()) if p.is_meta]
    if leftover:
        raise SystemExit(f"plain model: weights missing for {leftover[:3]}")
    net.requires_grad_(False)
    net.eval()
    net.generation_config.eos_token_id = None  # never stop early: exactly max_new_tokens, like ours with stop_at_eot=False
    net.generation_config.pad_token_id = loaded.tokenizer.eot
    return net


class Run:
    """One generation: new ids, seconds to first token, total seconds, CPU seconds."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.first: float | None = None

    def start(self) -> Run:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def stop(self) -> Run:
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        return self

    def mark_first(self) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.t0


def smol_ours(loaded: LoadedModel, messages: list[dict], n: int) -> Run:
    """family.chat's path (chat_ids -> generate_ids -> stream_decode), with the ids tapped on their way to the decoder."""
    fam, run = loaded.family, Run().start()
    params = SamplingParams(max_new_tokens=n, temperature=0.0, stop_at_eot=False)

    def tap(ids):
        for i in ids:
            run.ids.append(i)
            yield i

    ids = loaded.tokenizer.chat_ids(messages)
    for _piece in loaded.tokenizer.stream_decode(tap(fam.generate_ids(loaded, ids, params))):
        run.mark_first()
    return run.stop()


def smol_plain(loaded: LoadedModel, net, messages: list[dict], n: int) -> Run:
    """transformers' generate, greedy with its own cache; a streamer only notes when the first new token arrives."""
    run = Run().start()

    class FirstToken:  # transformers' BaseStreamer protocol: put(prompt ids) first, then each new token
        calls = 0

        def put(self, value) -> None:
            self.calls += 1
            if self.calls == 2:
                run.mark_first()

        def end(self) -> None:
            pass

    ids = loaded.tokenizer.chat_ids(messages)
    x = torch.tensor([ids], dtype=torch.long)
    with torch.inference_mode():
        out = net.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                           use_cache=True, streamer=FirstToken())  # fmt: skip
    run.ids = out[0, len(ids) :].tolist()
    return run.stop()


COLD_SCRIPT = r"""
import json, sys, time
t_start = time.monotonic()
sys.path.insert(0, {root!r})
from abci_app.ml import determinism
from abci_app.ml.family import load_model
from abci_app.ml.generate import SamplingParams
t_import = time.monotonic()
determinism.pin(1)
fam, loaded = load_model({path!r})
t_load = time.monotonic()
for piece in fam.chat(loaded, [{{"role": "user", "content": {prompt!r}}}], SamplingParams(max_new_tokens=64, temperature=0.0)):
    break
t_first = time.monotonic()
print("FIRST " + json.dumps(piece), flush=True)
print(json.dumps({{"start": t_start, "import": t_import, "load": t_load, "first": t_first}}), flush=True)
"""


def cold_ttft(path: Path, prompt: str) -> dict:
    """Spawn a fresh interpreter that imports, loads `path`, and streams the first piece of a chat reply; time it from outside."""
    script = COLD_SCRIPT.format(root=str(ROOT), path=str(path), prompt=prompt)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawn = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    first_line = proc.stdout.readline()
    seen = time.monotonic()
    rest = proc.stdout.read()
    if proc.wait() != 0 or not first_line.startswith("FIRST "):
        raise SystemExit(f"cold run failed (exit {proc.returncode}): {first_line}{rest}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = json.loads(rest.strip().splitlines()[-1])
    return {"total": seen - spawn, "python_start": t["start"] - spawn, "import": t["import"] - t["start"],
            "load": t["load"] - t["import"], "first_token": t["first"] - t["load"],
            "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}  # fmt: skip


def smol_main(args: argparse.Namespace) -> None:
    from abci_app.ml import smollm2

    threads = parse_threads(args.threads, 1)
    n = args.tokens or 64
    repeats = args.repeats or 1
    path = args.checkpoint or smollm2.genesis_checkpoint()
    determinism.pin(threads[0])
    t0, c0 = time.perf_counter(), time.process_time()
    fam, loaded = load_model(path)
    load_wall, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    if fam.name != smollm2.FAMILY:
        raise SystemExit(f"{path} is a {fam.name} checkpoint, not {smollm2.FAMILY}")
    net = plain_llama(loaded)
    hf = loaded.config.hf_dict
    n_params = sum(p.numel() for p in net.parameters())
    prompts = [args.prompt] if args.prompt else list(PROMPTS)
    convs = [[{"role": "user", "content": p}] for p in prompts]
    prompt_lens = [len(loaded.tokenizer.chat_ids(c)) for c in convs]
    print(f"model: {fam.name} {n_params:,} params (L{hf['num_hidden_layers']} d{hf['hidden_size']}; {path.name}), "
          f"loaded in {load_wall:.1f} s ({load_cpu:.1f} CPU s)")  # fmt: skip
    print(f"{determinism.kernel_path()}, {machine_line()}")
    print(f"greedy, exactly {n} new tokens per prompt; {len(prompts)} chat prompts of {prompt_lens} tokens; "
          f"per prompt median of {repeats} after one warm-up per path")  # fmt: skip

    equal_all = True
    for n_threads in threads:
        determinism.pin(n_threads)
        print(f"\n{n_threads} thread{'s' if n_threads > 1 else ''} ({determinism.kernel_path()}, load average {os.getloadavg()[0]:.2f})")
        stats: dict[str, dict] = {}
        ids_by_path: dict[str, list[list[int]]] = {}
        paths = [("ours (family.chat path)", lambda c: smol_ours(loaded, c, n)),
                 ("plain transformers generate", lambda c: smol_plain(loaded, net, c, n))]  # fmt: skip
        for name, fn in paths:
            fn(convs[0])  # warm-up: first-call allocations, kernel selection
        # Alternate the two paths per prompt and repeat, so load changes hit both alike.
        runs: dict[str, list[list[Run]]] = {name: [[] for _ in convs] for name, _ in paths}
        for r in range(repeats):
            for i, conv in enumerate(convs):
                for name, fn in paths if (r + i) % 2 == 0 else paths[::-1]:
                    runs[name][i].append(fn(conv))
        for name, _ in paths:
            per_prompt = runs[name]
            if any(len(x.ids) != n for rs in per_prompt for x in rs):
                raise SystemExit(f"{name}: generated {[len(x.ids) for rs in per_prompt for x in rs]} tokens, not {n}")
            wall = sum(statistics.median(x.wall for x in rs) for rs in per_prompt)
            cpu = sum(statistics.median(x.cpu for x in rs) for rs in per_prompt)
            ttft = statistics.median(x.first for rs in per_prompt for x in rs)
            total = n * len(convs)
            stats[name] = {"tps": total / wall, "cpu_per_tok": cpu / total, "ttft": ttft}
            ids_by_path[name] = [rs[0].ids for rs in per_prompt]
            print(f"  {name:30s} {total / wall:7.1f} tok/s  {cpu / total * 1000:7.1f} CPU ms/token ({total / cpu:5.1f} tok per CPU-s)  "
                  f"warm time to first token {ttft * 1000:6.0f} ms")  # fmt: skip
        (a, b) = stats.values()
        (ids_a, ids_b) = ids_by_path.values()
        equal = [x == y for x, y in zip(ids_a, ids_b)]
        equal_all &= all(equal)
        print(f"  ratio ours / plain: {a['tps'] / b['tps']:.2f}x tokens/s (wall), {b['cpu_per_tok'] / a['cpu_per_tok']:.2f}x tokens per CPU-s; "
              f"time to first token {a['ttft'] / b['ttft']:.2f}x")  # fmt: skip
        print(f"  ids equal (ours vs plain, per prompt): {equal}")

    # What the streamed text costs: stream_decode re-decodes the ids so far for every token.
    c0 = time.process_time()
    for ids in ids_by_path[paths[0][0]]:
        for _ in loaded.tokenizer.stream_decode(iter(ids)):
            pass
    decode = (time.process_time() - c0) / (n * len(convs))
    print(f"\nof ours, streaming detokenisation (stream_decode alone): {decode * 1000:.2f} CPU ms/token")
    print(f"first reply (ours, greedy): {loaded.tokenizer.decode(ids_by_path[paths[0][0]][0])[:160]!r}")

    if args.cold:
        print(f"\ncold time to first token: fresh `python -c` process, 1 thread, {args.cold} runs, checkpoint in the page cache")
        colds = []
        for _ in range(args.cold):
            c = cold_ttft(path, prompts[0])
            colds.append(c)
            print(f"  spawn -> first piece {c['total']:5.1f} s = python start {c['python_start']:.2f} + imports {c['import']:.2f} "
                  f"+ load_model {c['load']:.2f} + chat_ids & first token {c['first_token']:.2f}   (child CPU {c['cpu']:.1f} s)")  # fmt: skip
        print(f"  median {statistics.median(c['total'] for c in colds):.1f} s")
    print(f"\nids equal in every thread setting: {equal_all}; load average at the end {tuple(round(x, 2) for x in os.getloadavg())}")


def machine_line() -> str:
    import platform

    from machine import cpu_model  # bench/machine.py

    cpu = cpu_model()

    import transformers

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, transformers {transformers.__version__}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average {tuple(round(x, 2) for x in os.getloadavg())}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["tiny-gpt", "smollm2"], default="tiny-gpt")
    ap.add_argument("--checkpoint", type=Path, help="model file (tiny-gpt default: fresh weights of --preset; smollm2: the cached genesis)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="genesis", help="tiny-gpt only")
    ap.add_argument("--tokens", type=int, help="new tokens per prompt (default 256 tiny-gpt, 64 smollm2)")
    ap.add_argument("--repeats", type=int, help="runs per prompt, median (default 3 tiny-gpt, 1 smollm2)")
    ap.add_argument("--threads", help="comma-separated thread counts, each measured (default 2 tiny-gpt, 1 smollm2 as gradchain chat)")
    ap.add_argument("--prompt", help="one prompt instead of the defaults")
    ap.add_argument("--cold", type=int, default=2, help="smollm2: fresh-process time-to-first-token runs (0: skip)")
    args = ap.parse_args()
    (smol_main if args.model == "smollm2" else tiny_main)(args)


if __name__ == "__main__":
    main()
