"""What verification costs and what it catches, at the training module's default Params.

    .venv/bin/python bench/verify.py [--out /tmp/verify.json] [--model auto|test|genesis|FILE]
        [--honest 200] [--rounds 20] [--fractions 0.1,0.5,1.0] [--ks 4,10] [--modes skip,noise]
        [--samples 1,2,3] [--validators 4]
    .venv/bin/python bench/verify.py --model smollm2 [--honest 3] [--cross 1]

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

--model smollm2: the LoRA cost section only (sections 2-4 are the tiny
GPT's). Base: SmolLM2-135M-Instruct (smollm2.genesis_checkpoint(), version 0),
put on the chain's LoRA spec with `family.for_training`, dataset the cached KJV
text; Params = the training module's defaults with the SmolLM2 localnet's
training values (steps 4, batch 4 x seq_len 64, lr 1e-3, LoRA r=8 alpha=16 on
q_proj,v_proj). A trainer process (this script's `--lora-worker`: its own cwd
and PYTHONHASHSEED, 2 threads like the workers) runs `train_submission` and
`save_delta` (with `delta_extra`, so the file names its kernel path) for
`--honest` Works (default 3). This process, the validator, 2 threads, loads
each delta and runs `judge(..., kernel_path=<its own>)` with
`Work.kernel_path` = the delta's: the same path, so it compares by sha256.
Then `--cross` of them (default 1) are judged again on other kernel paths,
which compare by relative L2 within tolerance_ppm and show the cross-path
error: in a validator process started with
ATEN_CPU_CAPABILITY=`--cross-kernels` (default "default": no AVX2), and in
this process at 1 thread. Prints CPU seconds per submission on both sides, the
ratio, the pieces of `judge` (held-out evaluation, apply) and the one-off
per-process cost (load, for_training, dataset). About 440 CPU seconds:
5.3 minutes wall on 2 quiet cores, 12-13 minutes at load average ~10.

    .venv/bin/python bench/verify.py --model smollm2 [--honest 3] [--cross 1] [--cross-kernels default] [--out /tmp/verify-lora.json]

Prints the figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
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


# --- LoRA (smollm2) cost ----------------------------------------------------------------------

# The SmolLM2 localnet's training values, over the training module's defaults.
LORA_PARAMS = {"steps": 4, "batch_size": 4, "seq_len": 64, "learning_rate_micro": 1000,
               "lora_rank": 8, "lora_alpha": 16, "lora_targets": "q_proj,v_proj"}  # fmt: skip


def lora_setup(base_path: str, corpus_path: str, params: dict) -> tuple:
    """(family, base for the params' LoRA spec, dataset, {one-off piece: CPU s}): what a worker does once per process."""
    from abci_app.ml.family import load_model

    cpu = {}
    t0 = time.process_time()
    family, base = load_model(base_path)
    t1 = time.process_time()
    base = family.for_training(base, params)
    t2 = time.process_time()
    dataset = family.dataset(base, corpus_path)
    t3 = time.process_time()
    cpu = {"load_model": t1 - t0, "for_training": t2 - t1, "dataset": t3 - t2}
    return family, base, dataset, cpu


def lora_worker(spec_path: Path) -> None:
    """A worker process. role "trainer": train_submission + save_delta for every job; role "judge": judge every
    job's delta file on this process's kernel path. result.json with CPU seconds either way."""
    from abci_app.ml import determinism, train
    from abci_app.workers.recompute import Work, delta_extra, heldout_loss, judge, train_submission

    spec = json.loads(spec_path.read_text())
    kernel = determinism.pin(spec["threads"])
    family, base, dataset, setup = lora_setup(spec["base"], spec["corpus"], spec["params"])
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    records = []
    if spec["role"] == "judge":
        base_loss = heldout_loss(family, base, dataset)  # once per round, as Validator.base_loss
        for job in spec["jobs"]:
            delta, dmeta = family.load_delta(job["path"], base)
            work = Work(**job["work"], kernel_path=dmeta.extra["kernel_path"])
            t0 = time.process_time()
            verdict = judge(family, base, dataset, work, delta, kernel_path=kernel, base_loss=base_loss)
            records.append({"id": job["id"], "kernel_path": kernel, "accept": verdict.verdict != "fraud", "by_hash": verdict.by_hash,
                            "error_ppm": verdict.error_ppm, "reason": verdict.reason, "cpu_judge_s": time.process_time() - t0})  # fmt: skip
            print(f"validator on {kernel}: {job['id']} {verdict}", file=sys.stderr, flush=True)
        (out / "result.json").write_text(json.dumps({"kernel_path": kernel, "setup_cpu_s": setup, "jobs": records}))
        return
    for job in spec["jobs"]:
        work = Work(**job["work"], kernel_path=kernel)
        t0, w0 = time.process_time(), time.perf_counter()
        trained = train_submission(family, base, dataset, work)
        t1, w1 = time.process_time(), time.perf_counter()
        path = out / f"{job['id']}.delta.safetensors"
        family.save_delta(path, trained.delta, base, parent=str(work.base_version), extra=delta_extra(work, trained, kernel))
        t2, w2 = time.process_time(), time.perf_counter()
        records.append({"id": job["id"], "path": str(path), "sha256": train.state_sha256(trained.delta), "cpu_train_s": t1 - t0,
                        "cpu_save_s": t2 - t1, "wall_train_s": w1 - w0, "wall_save_s": w2 - w1, "losses": trained.train_losses,
                        "heldout_before": trained.heldout_before, "heldout_after": trained.heldout_after, "bytes": path.stat().st_size})  # fmt: skip
        print(f"trainer: {job['id']} {t1 - t0:.1f} + {t2 - t1:.1f} CPU s", file=sys.stderr, flush=True)
    info = {"kernel_path": kernel, "threads": spec["threads"], "pid": os.getpid(), "cwd": os.getcwd(), "setup_cpu_s": setup, "jobs": records,
            "trainable": sum(t.numel() for t in family.trainable_state(base).values())}  # fmt: skip
    (out / "result.json").write_text(json.dumps(info))


def lora_main(args: argparse.Namespace) -> None:
    from abci_app.ml import determinism, smollm2, train
    from abci_app.workers.recompute import Work, heldout_loss, judge

    start = time.monotonic()
    n_honest = args.honest if args.honest is not None else 3
    params = detbench.default_params() | LORA_PARAMS
    model_path = smollm2.genesis_checkpoint()
    corpus_path = detbench.cache_folder() / "kjv.txt"
    if not corpus_path.exists():
        from abci_app import localnet

        corpus_path = localnet.genesis_assets("test")[1]
    meta = detbench.machine()
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="gradchain-verify-lora-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        kernel = determinism.pin(2)  # the validator; it loads first because the Works need the tokenized dataset's sha256
        family, base, dataset, val_setup = lora_setup(str(model_path), str(corpus_path), params)
        works = detbench.make_works(n_honest, 1, dataset.sha256, params, tag="verify-lora", base_version=0)

        def run_worker(role: str, jobs: list[dict], hashseed: int, capability: str = "") -> dict:
            """This script's --lora-worker in a fresh process: own cwd, PYTHONHASHSEED, 2 threads, optionally other CPU kernels."""
            cwd = workdir / role
            cwd.mkdir(exist_ok=True)
            spec = cwd / "spec.json"
            spec.write_text(json.dumps({"role": role.split("-")[0], "base": str(model_path), "corpus": str(corpus_path),
                                        "out": str(cwd / "out"), "threads": 2, "params": params, "jobs": jobs}))  # fmt: skip
            drop = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED", "ATEN_CPU_CAPABILITY")
            env = {k: v for k, v in os.environ.items() if k not in drop} | {"PYTHONHASHSEED": str(hashseed)}
            if capability:
                env["ATEN_CPU_CAPABILITY"] = capability
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--lora-worker", str(spec)], cwd=cwd, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{role} process failed (exit {proc.returncode})")
            return json.loads((cwd / "out" / "result.json").read_text())

        print(f"trainer process: {n_honest} LoRA submissions ...", file=sys.stderr, flush=True)
        trainer = run_worker("trainer", [{"id": f"h{i}", "work": w} for i, w in enumerate(works)], hashseed=11)

        # A validator evaluates the round's base once (Validator.base_loss), not once per check.
        t0 = time.process_time()
        base_loss = heldout_loss(family, base, dataset)
        t_eval = time.process_time() - t0
        print(f"validator (this process, {kernel}): judging them ...", file=sys.stderr, flush=True)
        rows = []
        for job, w in zip(trainer["jobs"], works):
            t0 = time.process_time()
            delta, dmeta = family.load_delta(job["path"], base)
            t1 = time.process_time()
            work = Work(**w, kernel_path=dmeta.extra["kernel_path"])
            verdict = judge(family, base, dataset, work, delta, kernel_path=kernel, base_loss=base_loss)
            t2 = time.process_time()
            rows.append({"id": job["id"], "accept": verdict.verdict != "fraud", "by_hash": verdict.by_hash, "error_ppm": verdict.error_ppm,
                         "reason": verdict.reason, "submitted_sha256": train.state_sha256(delta) == job["sha256"],
                         "cpu_load_s": t1 - t0, "cpu_judge_s": t2 - t1, "cpu_train_s": job["cpu_train_s"], "cpu_save_s": job["cpu_save_s"]})  # fmt: skip
            print(f"validator: {job['id']} {t1 - t0:.1f} + {t2 - t1:.1f} CPU s, {verdict}", file=sys.stderr, flush=True)

        # Pieces of judge: one apply (fold the adapters, rebuild the model); the evaluation was timed above.
        t0 = time.process_time()
        family.apply(base, delta)
        t_apply = time.process_time() - t0

        # Other kernel paths compare within tolerance: this validator at 1 thread, and a process on other CPU kernels.
        cross = []
        if args.cross and args.cross_kernels:
            print(f"validator process on ATEN_CPU_CAPABILITY={args.cross_kernels}: judging {args.cross} ...", file=sys.stderr, flush=True)
            jobs = [{"id": j["id"], "work": w, "path": j["path"]} for j, w in list(zip(trainer["jobs"], works))[: args.cross]]
            other = run_worker("judge-kernels", jobs, hashseed=23, capability=args.cross_kernels)
            cross += [c | {"process": f"own process, ATEN_CPU_CAPABILITY={args.cross_kernels}"} for c in other["jobs"]]
        if args.cross:
            kernel1 = determinism.pin(1)
            for job, w in list(zip(trainer["jobs"], works))[: args.cross]:
                delta, dmeta = family.load_delta(job["path"], base)
                work = Work(**w, kernel_path=dmeta.extra["kernel_path"])
                t0 = time.process_time()
                verdict = judge(family, base, dataset, work, delta, kernel_path=kernel1)
                cross.append({"id": job["id"], "kernel_path": kernel1, "accept": verdict.verdict != "fraud", "by_hash": verdict.by_hash, "process": "this one",
                              "error_ppm": verdict.error_ppm, "reason": verdict.reason, "cpu_judge_s": time.process_time() - t0})  # fmt: skip
                print(f"validator at 1 thread: {job['id']} {verdict}", file=sys.stderr, flush=True)
            determinism.pin(2)

    # --- Report ---
    judge_s = [r["cpu_judge_s"] for r in rows]
    check_s = [r["cpu_judge_s"] + r["cpu_load_s"] for r in rows]
    train_s = [r["cpu_train_s"] + r["cpu_save_s"] for r in rows]
    spec_ = smollm2.LoraSpec.from_params(params)
    n_params = sum(p.numel() for n, p in base.module.named_parameters() if ".lora_" not in n)
    print(f"\nmodel: {family.name} ({model_path.name}, version 0 as the base); LoRA r={spec_.r} alpha={spec_.alpha} on "
          f"{','.join(spec_.targets)}: {trainer['trainable']:,} trainable of {n_params:,} parameters")  # fmt: skip
    print(f"params: k={params['steps']}, batch {params['batch_size']} x seq_len {params['seq_len']}, lr {params['learning_rate_micro'] / MICRO:g}, "
          f"tolerance_ppm {params['tolerance_ppm']}, all k steps recomputed; dataset {corpus_path.name} ({dataset.train.numel():,} train tokens)")  # fmt: skip
    print(f"{meta['torch']}, {meta['cpu']}, {meta['cores']} cores, OMP_WAIT_POLICY={meta['OMP_WAIT_POLICY']}; "
          f"trainer {trainer['kernel_path']} (own process), validator {kernel}; load average start {tuple(round(x, 2) for x in load_start)}, "
          f"end {tuple(round(x, 2) for x in os.getloadavg())}\n")  # fmt: skip
    print(f"{'CPU seconds per submission':<46}{'mean':>9}{'median':>9}   each")
    print("-" * 90)

    def line(label, xs):
        print(f"{label:<46}{statistics.mean(xs):>9.2f}{statistics.median(xs):>9.2f}   {' '.join(f'{x:.2f}' for x in xs)}")

    line("trainer: train_submission", [r["cpu_train_s"] for r in rows])
    line("trainer: save_delta", [r["cpu_save_s"] for r in rows])
    line("trainer: train_submission + save_delta", train_s)
    line("validator: load_delta", [r["cpu_load_s"] for r in rows])
    line("validator: judge", judge_s)
    line("validator: load_delta + judge", check_s)
    ratio_mean = statistics.mean(judge_s) / statistics.mean(train_s)
    ratio_median = statistics.median(judge_s) / statistics.median(train_s)
    print(f"ratio validator/trainer (judge / train+save): {ratio_mean:.2f} (means), {ratio_median:.2f} (medians); "
          f"(load_delta + judge) / (train+save): {statistics.mean(check_s) / statistics.mean(train_s):.2f} (means)")  # fmt: skip
    print(f"pieces (validator, measured once): one held-out evaluation {t_eval:.2f} s, apply (fold + rebuild) {t_apply:.2f} s; "
          f"judge = k steps + 1 held-out evaluation + apply + compare (the base's evaluation once per round, not counted); "
          f"train_submission = k steps + 2 evaluations")  # fmt: skip
    print("one-off per process (CPU s): " + "; ".join(f"{who} " + ", ".join(f"{k} {v:.1f}" for k, v in s.items())
                                                      for who, s in (("trainer", trainer["setup_cpu_s"]), ("validator", val_setup))))  # fmt: skip
    matched = sum(r["by_hash"] and r["accept"] for r in rows)
    print(f"\nsame kernel path ({kernel}): compared by hash in {sum(r['by_hash'] for r in rows)} of {len(rows)}; "
          f"recomputation sha256-equal (accepted) {matched} of {len(rows)}; error_ppm {[r['error_ppm'] for r in rows]}")  # fmt: skip
    for r in rows:
        if not r["accept"]:
            print(f"  {r['id']}: {r['reason']}")
    for c in cross:
        print(f"other kernel path ({c['kernel_path']}, {c['process']}; the trainer's {trainer['kernel_path']}): {c['id']} compared by "
              f"{'hash' if c['by_hash'] else 'tolerance'}: relative L2 error {c['error_ppm']} ppm (tolerance {params['tolerance_ppm']}), "
              f"{'accepted' if c['accept'] else 'rejected: ' + c['reason']}; judge {c['cpu_judge_s']:.1f} CPU s")  # fmt: skip
    print("held-out loss (trainer): " + ", ".join(f"{j['heldout_before']:.4f} -> {j['heldout_after']:.4f}" for j in trainer["jobs"])
          + f"; delta file {trainer['jobs'][0]['bytes']:,} bytes")  # fmt: skip
    print(f"\nwall {time.monotonic() - start:.0f} s", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps({"meta": meta | {"params": params, "validator_kernel_path": kernel, "load_start": load_start},
                                        "trainer": trainer, "validator_setup_cpu_s": val_setup, "rows": rows, "cross": cross,
                                        "eval_s": t_eval, "apply_s": t_apply, "ratio_mean": ratio_mean, "ratio_median": ratio_median},
                                       indent=1))  # fmt: skip
        print(f"raw numbers: {args.out}")


# --- Main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the raw numbers here as JSON")
    ap.add_argument("--model", default="auto", help="auto | test | genesis | a checkpoint (default auto: genesis-size only if cached) | smollm2 (LoRA cost section)")
    ap.add_argument("--honest", type=int, help="honest submissions, trained in another process and judged here (default 200; smollm2: 3)")
    ap.add_argument("--rounds", type=int, default=20, help="R: rounds per (k, f, mode) for the detection rate")
    ap.add_argument("--fractions", default="0.1,0.5,1.0")
    ap.add_argument("--ks", default="", help="step counts for the detection rate (default: the Params default k, and 10)")
    ap.add_argument("--modes", default="skip,noise")
    ap.add_argument("--samples", default="1,2,3", help="s values for the analytic s-of-k table")
    ap.add_argument("--validators", type=int, default=4)
    ap.add_argument("--compare-ppm", type=int, default=2000, help="also count detections as error_ppm > this (another tolerance)")
    ap.add_argument("--keep", type=Path, help="keep the worker directory here")
    ap.add_argument("--cross", type=int, default=1, help="smollm2: submissions judged again on other kernel paths (1 thread; --cross-kernels)")
    ap.add_argument("--cross-kernels", default="default", help="smollm2: ATEN_CPU_CAPABILITY of the other-kernels validator process ('' = skip it)")
    ap.add_argument("--lora-worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.lora_worker:
        return lora_worker(args.lora_worker)
    if args.model == "smollm2":
        return lora_main(args)
    if args.honest is None:
        args.honest = 200

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
        base_loss = heldout_loss(family, base, dataset)  # once per round, as Validator.base_loss
        honest = []
        for job, w in zip(trainer_info["jobs"], works):
            work = Work(**w)
            t0 = time.process_time()
            delta, _meta = family.load_delta(job["path"], base)
            t1 = time.process_time()
            verdict = judge(family, base, dataset, work, delta, base_loss=base_loss)
            t2 = time.process_time()
            honest.append({"id": job["id"], "accept": verdict.verdict != "fraud", "error_ppm": verdict.error_ppm, "reason": verdict.reason,
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
                        verdict = judge(family, base, dataset, work, delta, base_loss=base_loss)
                        rows.append({"round": r, "faked": sorted(faked), "accept": verdict.verdict != "fraud", "error_ppm": verdict.error_ppm})
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
          f"judge = k steps + 1 held-out evaluation (of base + delta) + compare; the base's evaluation is once per round")  # fmt: skip
    sampled = {s: (statistics.median(judge_s) - (k0 - s) * t_step) / statistics.median(train_s) for s in samples if s <= k0}
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
                   "ratio_median": ratio_median, "eval_s": t_eval, "step_s": t_step, "sampled_ratio_estimate": sampled},
                   "false_rejects": len(rejects), "detection": detection, "analytic": analytic}  # fmt: skip
        args.out.write_text(json.dumps(report, indent=1))
        print(f"raw numbers: {args.out}")


if __name__ == "__main__":
    main()
