"""Measure the smollm2-lora family on this machine (figures for docs/smollm2.md).

    .venv/bin/python bench/smollm2_lora.py --out /tmp/smollm2.json [--rounds 2 --trainers 3 --steps 4] [--skip-prompts]

Reports: load time, greedy chat tokens/s (ours vs transformers' generate on the
same weights), seconds per LoRA AdamW step, peak RSS, delta file size, the
evaluation of the base model (held-out loss on the KJV held-out split, prompt
score) and the merge-mode comparison: R rounds of N trainers x k steps from
the chain's batch rule, merged by averaging adapters vs by averaging the
folded weight changes, held-out loss after each round. Wall times on a shared
machine are noisy: CPU seconds and the load average are recorded too.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abci_app.ml import determinism, evaluate, genesis_cache_dir, smollm2, train  # noqa: E402
from abci_app.ml.generate import SamplingParams  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="Default: the cached KJV text.")
@click.option("--threads", default=2, show_default=True)
@click.option("--rounds", default=2, show_default=True)
@click.option("--trainers", default=3, show_default=True)
@click.option("--steps", default=4, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--seq-len", default=64, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--eval-windows", default=32, show_default=True)
@click.option("--parts", default="speed,eval,prompts,merge", show_default=True, help="Comma-separated subset to run.")
def main(out, corpus, threads, rounds, trainers, steps, batch_size, seq_len, lr, eval_windows, parts):
    parts = set(parts.split(","))
    determinism.pin(threads)
    res: dict = {"kernel_path": determinism.kernel_path(), "threads": threads, "loadavg_start": os.getloadavg()[0]}
    fam = smollm2.SmolLM2Lora()
    path = smollm2.genesis_checkpoint()
    res["checkpoint"] = {"path": str(path), "bytes": path.stat().st_size}
    with Clock() as c:
        base = fam.load(path)
    res["load"] = {"wall_s": c.wall, "cpu_s": c.cpu, "rss_mb": rss_mb()}
    res["checkpoint"]["sha256"] = base.sha256
    click.echo(f"load {c.wall:.1f}s", err=True)

    if "speed" in parts:
        speed(fam, base, res)

    data = fam.dataset(base, corpus or genesis_cache_dir() / "kjv.txt")
    res["dataset"] = {"sha256": data.sha256, "train_tokens": int(data.train.numel()), "held_out_tokens": int(data.heldout.numel())}
    ev = lambda m: fam.evaluate_loss(m, data.heldout, windows=eval_windows)  # noqa: E731
    if "speed" in parts:
        train_speed(fam, base, data, res, batch_size, seq_len, lr, out)

    h0 = None
    if "eval" in parts:
        with Clock() as c:
            h0 = ev(base)
        res["base_eval"] = {"heldout_loss": h0, "eval_windows": eval_windows, "eval_window_tokens": smollm2.EVAL_WINDOW, "eval_s": c.wall}
        click.echo(f"base heldout {h0:.4f}", err=True)
    if "prompts" in parts:
        answers = []
        with Clock() as c:
            score = evaluate.score_prompts(fam, base, on_answer=lambda p, a, ok: answers.append({"q": p.question, "a": a.strip(), "ok": ok}))
        res["prompts"] = score | {"prompts_s": c.wall, "answers": answers}
        click.echo(f"prompts {score}", err=True)

    if "merge" in parts:
        merge(fam, base, data, res, ev, h0, rounds, trainers, steps, batch_size, seq_len, lr)
    res["peak_rss_mb"] = rss_mb()
    res["loadavg_end"] = os.getloadavg()[0]
    out.write_text(json.dumps(res, indent=1))
    click.echo(json.dumps({k: v for k, v in res.items() if k != "prompts"}, indent=1))


def speed(fam, base, res):
    """Greedy tokens/s, ours vs transformers' generate on the same module; time to first token."""
    ids = base.tokenizer.chat_ids([{"role": "user", "content": "Write a short story about a lighthouse keeper."}])
    n = 64
    with Clock() as c:
        first = None
        t0 = time.perf_counter()
        for i, _ in enumerate(fam.generate_ids(base, ids, SamplingParams(max_new_tokens=n, temperature=0, stop_at_eot=False))):
            if i == 0:
                first = time.perf_counter() - t0
    ours = c
    with Clock() as c, torch.inference_mode():
        base.module.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    res["generate"] = {"new_tokens": n, "prompt_tokens": len(ids), "ours_tok_s": n / ours.wall, "ours_cpu_s": ours.cpu,
                       "ttft_s": first, "hf_tok_s": n / c.wall, "hf_cpu_s": c.cpu, "ratio_ours_over_hf": c.wall / ours.wall}  # fmt: skip
    click.echo(f"generate {res['generate']}", err=True)


def train_speed(fam, base, data, res, batch_size, seq_len, lr, out):
    """Seconds per LoRA AdamW step (mean of steps 2-3: the first includes creating the optimizer) and the delta's size."""
    for b, t in ((batch_size, seq_len), (4, 128)):
        work = fam.clone(base)
        batches = train.batches_for(b"bench-speed", data.train, 3, b, t)
        times = []
        fam.train_steps(work, batches, lr, on_step=lambda i, loss, opt: times.append((time.perf_counter(), time.process_time())))
        res[f"train_{b}x{t}"] = {"s_per_step": (times[-1][0] - times[0][0]) / 2, "cpu_s_per_step": (times[-1][1] - times[0][1]) / 2,
                                  "rss_mb": rss_mb()}  # fmt: skip
        click.echo(f"train {b}x{t}: {res[f'train_{b}x{t}']}", err=True)
    delta = fam.delta(work, base)
    dpath = out.with_suffix(".delta.safetensors")
    fam.save_delta(dpath, delta, base, parent="0")
    res["delta"] = {"params": sum(t.numel() for t in delta.values()), "bytes": dpath.stat().st_size}
    dpath.unlink()


def merge(fam, base, data, res, ev, h0, rounds, trainers, steps, batch_size, seq_len, lr):
    """R rounds of N trainers; the same round-0 deltas merged both ways, then each mode continues from its own model."""
    dsha = data.sha256
    if h0 is None:
        h0 = ev(base)
    res["merge"] = {"rounds": rounds, "trainers": trainers, "steps": steps, "batch": [batch_size, seq_len], "lr": lr, "heldout_before": h0}
    models = {"weights": base, "adapters": base}
    shared: list | None = None
    for r in range(rounds):
        seed = train.batch_seed(bytes([r]) * 32, "", dsha)
        for mode in ("weights", "adapters"):
            m = models[mode]
            if r == 0 and shared is not None:
                deltas = shared
            else:
                deltas = []
                for k in range(trainers):
                    work = fam.clone(m)
                    bs = train.batches_for(train.batch_seed(seed, f"trainer{k}", dsha), data.train, steps, batch_size, seq_len)
                    result = fam.train_steps(work, bs, lr)
                    deltas.append(fam.delta(work, m))
                    click.echo(f"round {r} {mode} trainer {k}: losses {[round(x, 4) for x in result.losses]}", err=True)
                if r == 0:
                    shared = deltas
                    res["merge"]["single_trainer_heldout"] = [ev(fam.apply(m, d)) for d in deltas]
            models[mode] = fam.apply(m, fam.merge(deltas, mode))
            h = ev(models[mode])
            res["merge"].setdefault(mode, []).append(h)
            click.echo(f"round {r} {mode}: heldout {h:.5f}", err=True)


if __name__ == "__main__":
    main()
