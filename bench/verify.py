"""What verification costs and what it catches, at the training module's default Params.

    .venv/bin/python bench/verify.py [--out /tmp/verify.json] [--model auto|test|genesis|FILE]
        [--honest 200] [--rounds 20] [--fractions 0.1,0.5,1.0] [--ks 4,10] [--modes skip,noise]
        [--samples 1,2,3] [--validators 4]

1. Cost. A trainer process (bench/determinism.py's worker: its own cwd,
   environment order, PYTHONHASHSEED; 2 threads) runs `train_submission` and
   `family.save_delta` for `--honest` Works and records time.process_time()
   of each. This process, the validator (2 threads), loads each delta file
   and times `judge` on it. Ratio = validator CPU s per checked submission /
   trainer CPU s per submission. CPU seconds count every thread of the
   process. The first submission of each process includes one-off warm-up
   (first AdamW, first kernels): medians are printed beside means.
2. Honest false rejects: every one of those `--honest` judged deltas was
   computed by the other process, so this is the cross-process recomputation
   at the default tolerance; the count must be 0.
3. Detection. A cheater fakes m = max(1, round(f * k)) of its k steps, at
   positions it picks at random: "skip" trains only the other k - m steps
   (one AdamW step per kept batch, the same optimizer throughout), "noise"
   replaces each faked step by a random update of an AdamW step's size (lr
   per weight). `--rounds` rounds per (k, f, mode); the validator runs
   `judge` with the chain's Params (steps = k, recompute_steps = 0: every
   step is recomputed). A rejection is a detection.
4. Sampling, analytically: were a validator to recompute only s of the k
   steps (from published per-step states; `recompute_steps` > 0), a cheater
   faking m steps escapes one validator with probability C(k-m, s) / C(k, s)
   (exact, s distinct steps) ~ (1 - m/k)^s (with replacement; m/k = f). A rejection needs `quorum_bps` of
   the power: with one sample for everybody (drawn from a seed fixed after
   submission) P(detect) = 1 - escape; with independent samples and
   `--validators` equal validators it needs ceil(2/3 V) of them to catch it.

Prints the figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import determinism as detbench  # noqa: E402  (bench/determinism.py; sets OMP_WAIT_POLICY=PASSIVE unless set)

MICRO = 1_000_000


# --- A cheating trainer -----------------------------------------------------------------


def faked_steps(k: int, f: float, rng: random.Random) -> set[int]:
    m = max(1, round(f * k)) if f > 0 else 0
    return set(rng.sample(range(k), min(m, k)))


def fake_submission(family, base, dataset, work, faked: set[int], mode: str, seed: int):
    """The delta of a trainer that fakes the steps in `faked`: skips them, or puts noise of a step's size in their place."""
    import torch

    from abci_app.ml import train
    from abci_app.workers.recompute import batches

    model = family.clone(base)
    names = set(family.trainable_names(model))
    params = [(n, p) for n, p in model.module.named_parameters() if n in names]
    lr = work.params["learning_rate_micro"] / MICRO
    optimizer = train.make_optimizer(params, lr)  # what family.train_steps makes for an honest trainer
    gen = torch.Generator().manual_seed(seed)
    for i, batch in enumerate(batches(family, base, dataset, work)):
        if i not in faked:
            family.train_steps(model, [batch], lr, optimizer=optimizer)
        elif mode == "noise":
            with torch.no_grad():
                for _, p in sorted(params, key=lambda item: item[0]):
                    p.add_(torch.randn(p.shape, generator=gen) * lr)
        elif mode != "skip":
            raise ValueError(f"unknown fake mode {mode!r}")
    return family.delta(model, base)


# --- Analytic sampling ------------------------------------------------------------------------


def escape_exact(k: int, m: int, s: int) -> float:
    """P(none of s distinct sampled steps of k is one of the m faked)."""
    return math.comb(k - m, s) / math.comb(k, s) if s <= k else 0.0


def quorum_detect(p: float, validators: int, quorum_bps: int) -> float:
    """P(at least ceil(quorum * V) of V equal validators detect), each independently with probability p."""
    need = -(-validators * quorum_bps // 10_000)
    return sum(math.comb(validators, j) * p**j * (1 - p) ** (validators - j) for j in range(need, validators + 1))


# --- Main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the raw numbers here as JSON")
    ap.add_argument("--model", default="auto", help="auto | test | genesis | a checkpoint (default auto: genesis-size only if cached)")
    ap.add_argument("--honest", type=int, default=200, help="honest submissions, trained in another process and judged here")
    ap.add_argument("--rounds", type=int, default=20, help="R: rounds per (k, f, mode) for the detection rate")
    ap.add_argument("--fractions", default="0.1,0.5,1.0")
    ap.add_argument("--ks", default="", help="step counts for the detection rate (default: the Params default k, and 10)")
    ap.add_argument("--modes", default="skip,noise")
    ap.add_argument("--samples", default="1,2,3", help="s values for the analytic s-of-k table")
    ap.add_argument("--validators", type=int, default=4)
    ap.add_argument("--compare-ppm", type=int, default=2000, help="also count detections as error_ppm > this (another tolerance)")
    ap.add_argument("--keep", type=Path, help="keep the worker directory here")
    args = ap.parse_args()

    from abci_app.ml import determinism, train
    from abci_app.ml.family import load_model
    from abci_app.workers.recompute import Work, heldout_loss, judge, train_submission

    params = detbench.default_params()
    k0 = params["steps"]
    ks = [int(x) for x in args.ks.split(",") if x] or sorted({k0, 10})
    fractions = [float(x) for x in args.fractions.split(",") if x]
    modes = [m for m in args.modes.split(",") if m]
    samples = [int(x) for x in args.samples.split(",") if x]
    label, model_path, corpus_path = detbench.resolve_model(args.model)
    kernel = determinism.pin(2)
    report: dict = {"meta": detbench.machine() | {"model": label, "model_file": str(model_path), "params": params}}
    start = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="gradchain-verify-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        v1 = workdir / "version1.safetensors"
        detbench.make_version1(model_path, corpus_path, v1)
        family, base = load_model(v1)
        dataset = family.dataset(base, corpus_path)
        report["meta"]["model_params"] = base.module.num_params()

        # 1 + 2: honest submissions from another process, judged here.
        trainers = 10
        works = detbench.make_works(-(-args.honest // trainers), trainers, dataset.sha256, params, tag="verify")[: args.honest]
        spec = workdir / "spec.json"
        spec.write_text(json.dumps({"base": str(v1), "corpus": str(corpus_path), "out": str(workdir / "out"), "save_deltas": True,
                                    "jobs": [{"id": f"h{i}", "work": w} for i, w in enumerate(works)]}))  # fmt: skip
        print(f"trainer process: {len(works)} honest submissions ...", file=sys.stderr)
        detbench.run_parties(spec, workdir, [("trainer", 2, 11, True, None)], parallel=1)
        trainer_info = json.loads((workdir / "out" / "trainer" / "result.json").read_text())
        print(f"validator (this process, {kernel}, cwd {Path.cwd()}): judging them ...", file=sys.stderr)
        honest = []
        for job, w in zip(trainer_info["jobs"], works):
            work = Work(**w)
            t0 = time.process_time()
            delta, _meta = family.load_delta(job["path"], base)
            t1 = time.process_time()
            verdict = judge(family, base, dataset, work, delta)
            t2 = time.process_time()
            honest.append({"id": job["id"], "accept": verdict.accept, "error_ppm": verdict.error_ppm, "reason": verdict.reason,
                           "cpu_load_s": t1 - t0, "cpu_judge_s": t2 - t1, "cpu_train_s": job["cpu_train_s"], "cpu_save_s": job["cpu_save_s"]})  # fmt: skip

        # Pieces of the judge's cost, for the sampled estimate: one held-out evaluation, one training step.
        reps = 5
        t0 = time.process_time()
        for _ in range(reps):
            heldout_loss(family, base, dataset)
        t_eval = (time.process_time() - t0) / reps
        long_work = replace(Work(**works[0]), params=params | {"steps": 20})
        t0 = time.process_time()
        train_submission(family, base, dataset, long_work)
        t_20 = time.process_time() - t0
        t0 = time.process_time()
        train_submission(family, base, dataset, Work(**works[0]))
        t_k = time.process_time() - t0
        t_step = max(0.0, (t_20 - t_k) / (20 - k0))

        # 3: cheaters, full recomputation.
        detection = []
        print(f"cheaters: {args.rounds} rounds x k {ks} x f {fractions} x {modes} ...", file=sys.stderr)
        cheat_works = detbench.make_works(args.rounds, 1, dataset.sha256, params, tag="verify-cheat")
        for k in ks:
            for w in cheat_works[:1]:  # control: faking nothing reproduces the honest delta bit for bit
                work = replace(Work(**w), params=params | {"steps": k})
                same = train.state_sha256(fake_submission(family, base, dataset, work, set(), "skip", 0)) == train.state_sha256(
                    train_submission(family, base, dataset, work).delta
                )
                if not same:
                    raise SystemExit(f"fake_submission with nothing faked differs from train_submission at k={k}")
            for f in fractions:
                for mode in modes:
                    rows = []
                    for r, w in enumerate(cheat_works):
                        work = replace(Work(**w), params=params | {"steps": k})
                        rng = random.Random(f"{k}/{f}/{mode}/{r}")
                        faked = faked_steps(k, f, rng)
                        delta = fake_submission(family, base, dataset, work, faked, mode, seed=r)
                        verdict = judge(family, base, dataset, work, delta)
                        rows.append({"round": r, "faked": sorted(faked), "accept": verdict.accept, "error_ppm": verdict.error_ppm})
                    detection.append({"k": k, "f": f, "m": len(rows[0]["faked"]), "mode": mode, "rounds": len(rows),
                                      "detected": sum(not x["accept"] for x in rows), "min_error_ppm": min(x["error_ppm"] for x in rows),
                                      "median_error_ppm": statistics.median(x["error_ppm"] for x in rows), "rows": rows})  # fmt: skip

    # --- Report -----------------------------------------------------------------------------------
    meta = report["meta"]
    judge_s = [h["cpu_judge_s"] for h in honest]
    check_s = [h["cpu_judge_s"] + h["cpu_load_s"] for h in honest]
    train_s = [h["cpu_train_s"] + h["cpu_save_s"] for h in honest]
    rejects = [h for h in honest if not h["accept"]]
    errors = sorted(h["error_ppm"] for h in honest)
    print(f"\nmodel: {meta['model']} ({meta['model_params']:,} params); Params defaults: k={k0}, batch {params['batch_size']}, "
          f"seq_len {params['seq_len']}, tolerance_ppm {params['tolerance_ppm']}, recompute_steps {params['recompute_steps']} (= all k)")  # fmt: skip
    print(f"{meta['torch']}, {meta['kernel_path']}, {meta['cpu']}, {meta['cores']} cores; trainer and validator 2 threads each\n")
    print(f"{'CPU seconds per submission':<46}{'mean':>9}{'median':>9}")
    print("-" * 64)
    print(f"{'trainer: train_submission + save_delta':<46}{statistics.mean(train_s):>9.3f}{statistics.median(train_s):>9.3f}")
    print(f"{'validator: judge':<46}{statistics.mean(judge_s):>9.3f}{statistics.median(judge_s):>9.3f}")
    print(f"{'validator: load_delta + judge':<46}{statistics.mean(check_s):>9.3f}{statistics.median(check_s):>9.3f}")
    ratio_mean = statistics.mean(judge_s) / statistics.mean(train_s)
    ratio_median = statistics.median(judge_s) / statistics.median(train_s)
    print(f"ratio validator/trainer (judge / train+save): {ratio_mean:.2f} (means), {ratio_median:.2f} (medians)")
    print(f"pieces (validator process): one held-out evaluation {t_eval:.3f} s, one training step {t_step:.4f} s; "
          f"judge = k steps + 3 held-out evaluations + compare")  # fmt: skip
    # judge calls train_submission, which evaluates the held-out loss before and after its own recomputation; only
    # "before" is used, and it is the same for every submission of a round: 2 of the 3 evaluations could go.
    lean = (statistics.median(judge_s) - 2 * t_eval) / statistics.median(train_s)
    print(f"estimated ratio with 1 held-out evaluation per check (base loss cached per round): {lean:.2f}")
    sampled = {s: (statistics.median(judge_s) - 2 * t_eval - (k0 - s) * t_step) / statistics.median(train_s) for s in samples if s <= k0}
    print("estimated ratio recomputing s of k=%d steps (and 1 evaluation): %s"
          % (k0, ", ".join(f"s={s}: {v:.2f}" for s, v in sampled.items())))  # fmt: skip
    print(f"with {args.validators} validators each checking every submission, verification costs {args.validators} x {ratio_mean:.2f} "
          f"= {args.validators * ratio_mean:.1f}x the training CPU")  # fmt: skip
    print(f"\nhonest false rejects: {len(rejects)} of {len(honest)} (cross-process, tolerance {params['tolerance_ppm']} ppm); "
          f"error_ppm max {errors[-1]}, nonzero {sum(e > 0 for e in errors)}")  # fmt: skip
    for h in rejects[:5]:
        print(f"  {h['id']}: {h['reason']}")

    print(f"\ndetection with full recomputation (recompute_steps=0), {args.rounds} rounds each")
    alt = args.compare_ppm
    print(f"{'k':>3}{'f':>6}{'m faked':>9}{'mode':>7}{'detected':>10}{'rate':>7}{'min err ppm':>13}{'median err ppm':>16}{f'err > {alt} ppm':>18}")
    print("-" * 89)
    for d in detection:
        d[f"over_{alt}_ppm"] = sum(x["error_ppm"] > alt for x in d["rows"])
        print(f"{d['k']:>3}{d['f']:>6}{d['m']:>9}{d['mode']:>7}{d['detected']:>6}/{d['rounds']:<3}{d['detected'] / d['rounds']:>7.0%}"
              f"{d['min_error_ppm']:>13}{d['median_error_ppm']:>16.0f}{d[f'over_{alt}_ppm']:>14}/{d['rounds']}")  # fmt: skip

    quorum = params["quorum_bps"]
    analytic = []
    print(f"\nanalytic detection if each validator recomputed s sampled steps of k ({args.validators} equal validators, quorum {quorum / 100:g}%)")
    print(f"{'k':>3}{'f':>6}{'m':>4}{'s':>4}{'(1-m/k)^s':>11}{'escape exact':>14}{'P(detect) shared sample':>25}{'independent samples':>21}")
    print("-" * 87)
    for k in ks:
        for f in fractions:
            m = max(1, round(f * k))
            for s in [*samples, k]:
                if s > k:
                    continue
                esc = escape_exact(k, m, s)
                row = {"k": k, "f": f, "m": m, "s": s, "approx_escape": (1 - m / k) ** s, "escape": esc, "detect_shared": 1 - esc,
                       "detect_independent": quorum_detect(1 - esc, args.validators, quorum)}  # fmt: skip
                analytic.append(row)
                print(f"{k:>3}{f:>6}{m:>4}{s:>4}{row['approx_escape']:>11.3f}{esc:>14.3f}{row['detect_shared']:>25.3f}{row['detect_independent']:>21.3f}")
    print("(1-m/k)^s samples with replacement; exact: s distinct steps. s = k is full recomputation: escape 0 for any m >= 1, as measured above.")
    print("A sample drawn from the round seed is known to the trainer before it trains: it must come from a block after the submission.")
    print(f"\nwall {time.monotonic() - start:.0f} s", file=sys.stderr)
    if args.out:
        report |= {"honest": honest, "cpu": {"trainer_mean": statistics.mean(train_s), "trainer_median": statistics.median(train_s),
                   "judge_mean": statistics.mean(judge_s), "judge_median": statistics.median(judge_s), "ratio_mean": ratio_mean,
                   "ratio_median": ratio_median, "eval_s": t_eval, "step_s": t_step, "lean_ratio_estimate": lean, "sampled_ratio_estimate": sampled},
                   "false_rejects": len(rejects), "detection": detection, "analytic": analytic}  # fmt: skip
        args.out.write_text(json.dumps(report, indent=1))
        print(f"raw numbers: {args.out}")


if __name__ == "__main__":
    main()
