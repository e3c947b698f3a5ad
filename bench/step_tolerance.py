"""Per-step recomputation error across CPU kernel sets: the data for issue 12's per-step tolerance.

    .venv/bin/python bench/step_tolerance.py [--trajectories 8 --steps 32] [--cheat-every 4] [--json]
        [--smollm2 [--smollm2-trajectories 2 --smollm2-steps 8]]

What it does. A trainer process (this one, 2 threads, the machine's own CPU
kernels) records `--trajectories` honest trajectories of `--steps` steps each
with abci_app.ml.trajectory.record: one Work per trajectory (its own round
seed and trainer address, the training module's default Params: batch 8 x
seq 64, lr 1e-3, fresh AdamW), on the tiny GPT genesis model (the cached
~/.cache/gradchain/genesis/tiny-gpt-genesis-*.safetensors, else
GENESIS_CONFIG built from seed 0) and the KJV corpus (the cached kjv.txt,
else the unit tests' synthetic corpus). Then two validator processes, each
with its own cwd and PYTHONHASHSEED and 2 threads, replay every step from its
recorded pre-state with trajectory.replay_step, deriving the batch themselves
(recompute.batch_at):

  same    the trainer's kernel set          -> bitwise-equal steps (post-state hash and gradient proof)
  other   ATEN_CPU_CAPABILITY=default (avx2 where the machine's own set is neither AVX2 nor AVX512)
                                            -> the honest cross-kernel error distribution

Each honest step's error is trajectory.step_error_ppm(trainer's post, the
validator's post, pre) (the validator's is the reference, as in
recompute.judge). For contrast, on every `--cheat-every`-th step three cheats
are measured against the same recomputations: the post-state of the same
pre-state on another trainer's batch (computed by the trainer process), the
honest update x1.01, and the honest moments (m, v) x1.01.

Prints a table, a suggested per-step tolerance (8x the worst honest
cross-kernel error, rounded up, and its margin below the smallest cheat), the
state file size and the per-step cost of recording (write + hash) and of a
replay against a plain training step; `--json` prints every figure as JSON
on stdout (the table then goes to stderr). Asserts nothing about timing.
`--smollm2` also measures SmolLM2-135M LoRA steps (fewer: ~1 s a step) when
its converted checkpoint is cached (abci_app.ml.smollm2.genesis_checkpoint).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no OpenMP spin-waiting on shared cores (bench/determinism.py); no effect on bits

THREADS = 2
SAFETY = 8  # suggested tolerance = SAFETY x the worst honest cross-kernel error
CHEATS = ("other_batch", "update_x1.01", "moments_x1.01")


# --- Model, data and work ------------------------------------------------------------


def tiny_assets(workdir: Path) -> dict:
    """The tiny GPT genesis model and corpus: cached files when present, else built here."""
    from abci_app.ml import genesis_cache_dir, model
    from abci_app.ml.family import TinyGPT

    cache = genesis_cache_dir()
    cached = sorted(cache.glob("tiny-gpt-genesis-*.safetensors"))
    if cached:
        model_path, label = cached[-1], f"cached {cached[-1].name}"
    else:
        family = TinyGPT()
        model_path, label = workdir / "genesis-seed0.safetensors", "GENESIS_CONFIG from seed 0 (untrained)"
        family.save(family.build(model.GENESIS_CONFIG, seed=0), model_path)
    corpus = cache / "kjv.txt"
    if not corpus.exists():
        from tests.unit.test_trajectory import synthetic_corpus

        corpus = synthetic_corpus(workdir / "corpus.txt")
    return {"name": "tiny-gpt", "label": label, "model": str(model_path), "corpus": str(corpus)}


def smollm2_assets() -> dict | None:
    from abci_app.ml import genesis_cache_dir

    cache = genesis_cache_dir()
    cached = sorted(cache.glob("smollm2-*.safetensors"))
    corpus = cache / "kjv.txt"
    if not cached or not corpus.exists():
        return None
    return {"name": "smollm2-lora", "label": f"cached {cached[-1].name}", "model": str(cached[-1]), "corpus": str(corpus)}


def load(assets: dict, params: dict):
    """(family, base shaped for training, dataset) in this process."""
    from abci_app.ml.family import load_model

    family, base = load_model(assets["model"])
    base = family.for_training(base, params)
    return family, base, family.dataset(base, assets["corpus"])


def works(count: int, steps: int, dataset_sha256: str, params: dict, tag: str) -> list:
    from abci_app.workers.recompute import Work

    p = params | {"steps": steps}
    return [
        Work(1, 0, hashlib.sha256(f"gradchain/bench/step-tolerance/{tag}/round/{t}".encode()).hexdigest(),
             f"bench-trainer-{tag}-{t}", dataset_sha256, p)
        for t in range(count)
    ]  # fmt: skip


def default_params() -> dict:
    from abci_app.modules.training import Params

    return asdict(Params())


# --- The trainer process -----------------------------------------------------------------


def record_all(assets: dict, trajectories: int, steps: int, cheat_every: int, workdir: Path, log) -> dict:
    """Record the honest trajectories and the other-batch cheats; time the pieces. Returns the spec workers read."""
    from abci_app.ml import trajectory as tj
    from abci_app.workers.recompute import batch_at, lr_of

    params = default_params()
    family, base, dataset = load(assets, params)
    ws = works(trajectories, steps, dataset.sha256, params, assets["name"])
    shapes = tj.trainable_shapes(family, base)
    cap = 1 << 62
    timing = {"record_s": 0.0, "record_steps": 0}
    spec = {"assets": assets, "params": params, "steps": steps, "trajectories": [], "cheat_every": cheat_every}
    work_model = family.clone(base)
    for t, w in enumerate(ws):
        folder = workdir / assets["name"] / f"t{t:03d}"
        model = family.clone(base)
        start = time.perf_counter()
        rec = tj.record(family, model, (batch_at(family, base, dataset, w, i) for i in range(steps)), lr_of(w), folder)
        timing["record_s"] += time.perf_counter() - start
        timing["record_steps"] += steps
        cheats = {}
        other = ws[(t + 1) % len(ws)]
        for i in range(0, steps, cheat_every):  # the same pre-state, another trainer's batch at the same step
            pre = tj.read_state(rec.state_paths[i], cap, shapes)
            post, _ = tj.replay_step(family, work_model, pre, batch_at(family, base, dataset, other, i), lr_of(w))
            path = folder / f"cheat-other-batch-{i:04d}.safetensors"
            tj.write_state(path, post)
            cheats[str(i)] = str(path)
        spec["trajectories"].append({"work": asdict(w), "paths": [str(p) for p in rec.state_paths], "hashes": rec.state_hashes,
                                     "proofs": [p.hex() for p in rec.grad_proofs], "cheats": cheats})  # fmt: skip
        log(f"  {assets['name']} trajectory {t + 1}/{len(ws)} recorded: loss {rec.losses[0]:.4f} -> {rec.losses[-1]:.4f}")
    timing |= time_pieces(family, base, dataset, ws[0], min(steps, 8), workdir / assets["name"] / "timing")
    timing["state_bytes"] = rec.state_sizes[0]
    spec["timing"] = timing
    return spec


def time_pieces(family, base, dataset, work, steps: int, folder: Path) -> dict:
    """Seconds per step: plain training, recording (training + write + hash), writing + hashing one state, one replay."""
    from abci_app.ml import trajectory as tj
    from abci_app.workers.recompute import batch_at, lr_of

    batches = [batch_at(family, base, dataset, work, i) for i in range(steps)]
    lr = lr_of(work)
    start = time.perf_counter()
    family.train_steps(family.clone(base), batches, lr)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    rec = tj.record(family, family.clone(base), batches, lr, folder)
    record_s = time.perf_counter() - start
    state = tj.read_state(rec.state_paths[steps // 2], 1 << 62, tj.trainable_shapes(family, base))
    start = time.perf_counter()
    for i in range(steps):
        tj.write_state(folder / "again.safetensors", state)
    write_s = time.perf_counter() - start
    work_model = family.clone(base)
    start = time.perf_counter()
    for i in range(steps):
        tj.replay_step(family, work_model, state, batches[i], lr)
    replay_s = time.perf_counter() - start
    return {"train_step_s": train_s / steps, "record_step_s": record_s / steps, "write_hash_s": write_s / steps,
            "replay_step_s": replay_s / steps, "timed_steps": steps}  # fmt: skip


# --- Validator processes ---------------------------------------------------------------------


def launch(spec_path: Path, workdir: Path, role: str, hashseed: int, capability: str | None) -> subprocess.Popen:
    cwd = workdir / role
    cwd.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED")}
    env |= {"PYTHONHASHSEED": str(hashseed), "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path), "--role", role]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(cwd / "worker.log", "w"), stderr=subprocess.STDOUT)


def run_worker(spec_path: Path, role: str) -> None:
    """Replay every recorded step; write per-step results to <role>/result.json (cwd)."""
    from abci_app.ml import determinism
    from abci_app.ml import trajectory as tj
    from abci_app.workers.recompute import Work, batch_at, lr_of

    kernel = determinism.pin(THREADS)
    spec = json.loads(spec_path.read_text())
    family, base, dataset = load(spec["assets"], spec["params"])
    shapes = tj.trainable_shapes(family, base)
    cap = 1 << 62
    work_model = family.clone(base)
    steps, replay_s = [], 0.0
    for t, traj in enumerate(spec["trajectories"]):
        w = Work(**traj["work"])
        lr = lr_of(w)
        for i in range(spec["steps"]):
            pre = tj.read_state(traj["paths"][i], cap, shapes)
            start = time.perf_counter()
            mine, proof = tj.replay_step(family, work_model, pre, batch_at(family, base, dataset, w, i), lr)
            replay_s += time.perf_counter() - start
            theirs = tj.read_state(traj["paths"][i + 1], cap, shapes)
            row = {"trajectory": t, "step": i, "bitwise": tj.state_hash(mine) == traj["hashes"][i + 1],
                   "proof_equal": proof.hex() == traj["proofs"][i], "error_ppm": tj.step_error_ppm(theirs, mine, pre),
                   "check_ppm": tj.step_check_ppm(theirs, mine, pre, lr)}  # fmt: skip
            if str(i) in traj["cheats"]:
                other = tj.read_state(traj["cheats"][str(i)], cap, shapes)
                scaled = dict(theirs)
                moments = dict(theirs)
                for n in shapes:
                    scaled[f"w/{n}"] = pre[f"w/{n}"] + (theirs[f"w/{n}"] - pre[f"w/{n}"]) * 1.01
                    moments[f"m/{n}"] = theirs[f"m/{n}"] * 1.01
                    moments[f"v/{n}"] = theirs[f"v/{n}"] * 1.01
                cheats = {"other_batch": other, "update_x1.01": scaled, "moments_x1.01": moments}
                row["cheats"] = {c: tj.step_error_ppm(post, mine, pre) for c, post in cheats.items()}
                row["cheats_check"] = {c: tj.step_check_ppm(post, mine, pre, lr) for c, post in cheats.items()}
            steps.append(row)
    Path("result.json").write_text(json.dumps({"kernel_path": kernel, "replay_s": replay_s, "steps": steps}))


# --- Summary ---------------------------------------------------------------------------


def pct(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of sorted values."""
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))]


def dist(values: list[int]) -> dict:
    v = sorted(values)
    return {"n": len(v), "min": v[0], "median": pct(v, 50), "p99": pct(v, 99), "max": v[-1]} if v else {"n": 0}


def nice_ceiling(x: int) -> int:
    """The smallest of 1, 2, 5 x 10^n that is >= x."""
    if x <= 1:
        return 1
    scale = 10 ** (len(str(x)) - 1)
    return next(m * scale for m in (1, 2, 5, 10) if m * scale >= x)


def summarise(spec: dict, results: dict[str, dict]) -> dict:
    same, other = results["same"], results["other"]
    honest_other = [s["error_ppm"] for s in other["steps"]]
    summary = {
        "model": spec["assets"], "steps": len(honest_other), "kernel_paths": {r: results[r]["kernel_path"] for r in results},
        "same_kernels": {"bitwise_equal": sum(s["bitwise"] for s in same["steps"]), "proofs_equal": sum(s["proof_equal"] for s in same["steps"]),
                         "error_ppm": dist([s["error_ppm"] for s in same["steps"]])},
        "other_kernels": {"bitwise_equal": sum(s["bitwise"] for s in other["steps"]), "proofs_equal": sum(s["proof_equal"] for s in other["steps"]),
                          "error_ppm": dist(honest_other)},
        "cheats_vs_other_kernels": {c: dist([s["cheats"][c] for s in other["steps"] if "cheats" in s]) for c in CHEATS},
        "cheats_vs_same_kernels": {c: dist([s["cheats"][c] for s in same["steps"] if "cheats" in s]) for c in CHEATS},
        "step_check": {"same_kernels": dist([s["check_ppm"] for s in same["steps"]]), "other_kernels": dist([s["check_ppm"] for s in other["steps"]]),
                       "cheats_vs_other_kernels": {c: dist([s["cheats_check"][c] for s in other["steps"] if "cheats" in s]) for c in CHEATS}},
        "timing": spec["timing"] | {f"replay_step_s_{r}": results[r]["replay_s"] / max(1, len(results[r]["steps"])) for r in results},
    }  # fmt: skip
    worst_check = max(s["check_ppm"] for s in other["steps"])
    smallest_cheat_check = min(min(s["cheats_check"].values()) for r in ("same", "other") for s in results[r]["steps"] if "cheats" in s)
    summary["step_check"] |= {"suggested_tolerance_ppm": nice_ceiling(SAFETY * max(1, worst_check)), "smallest_cheat_ppm": smallest_cheat_check}
    summary["worst_honest_steps"] = [{"trajectory": r["trajectory"], "step": r["step"], "error_ppm": r["error_ppm"]}
                                     for r in sorted(other["steps"], key=lambda r: -r["error_ppm"])[:8]]  # fmt: skip
    worst = max(honest_other)
    smallest_cheat = min(min(s["cheats"].values()) for r in ("same", "other") for s in results[r]["steps"] if "cheats" in s)
    tolerance = nice_ceiling(SAFETY * max(1, worst))
    summary["suggested_tolerance_ppm"] = tolerance
    summary["tolerance_margins"] = {"x_worst_honest": tolerance / max(1, worst), "smallest_cheat_ppm": smallest_cheat,
                                    "smallest_cheat_over_tolerance": smallest_cheat / tolerance}  # fmt: skip
    return summary


def table(s: dict) -> str:
    t = s["timing"]
    d = s["other_kernels"]["error_ppm"]
    lines = [
        f"model: {s['model']['name']} ({s['model']['label']}); {s['steps']} honest steps; trainer {s['kernel_paths']['same']}, "
        f"other validator {s['kernel_paths']['other']}",
        f"{'step_error_ppm (update, m, v vs the recomputation)':<34}",
        f"{'series':<34}{'n':>6}{'min':>10}{'median':>10}{'p99':>10}{'max':>12}",
        f"{'honest, same kernels':<34}{s['same_kernels']['error_ppm']['n']:>6}{s['same_kernels']['error_ppm']['min']:>10}"
        f"{s['same_kernels']['error_ppm']['median']:>10}{s['same_kernels']['error_ppm']['p99']:>10}{s['same_kernels']['error_ppm']['max']:>12}",
        f"{'honest, other kernels':<34}{d['n']:>6}{d['min']:>10}{d['median']:>10}{d['p99']:>10}{d['max']:>12}",
    ]
    for c in CHEATS:
        e = s["cheats_vs_other_kernels"][c]
        lines.append(f"{'cheat ' + c + ', other kernels':<34}{e['n']:>6}{e['min']:>10}{e['median']:>10}{e['p99']:>10}{e['max']:>12}")
    c = s["step_check"]
    lines.append("step_check_ppm (moments vs the recomputation; update vs the claimed moments):")
    for label, e in [("honest, same kernels", c["same_kernels"]), ("honest, other kernels", c["other_kernels"])] + [
            ("cheat " + k + ", other kernels", c["cheats_vs_other_kernels"][k]) for k in CHEATS]:  # fmt: skip
        lines.append(f"{label:<34}{e['n']:>6}{e['min']:>10}{e['median']:>10}{e['p99']:>10}{e['max']:>12}")
    lines.append(f"  suggested tolerance for step_check_ppm: {c['suggested_tolerance_ppm']} ppm; smallest cheat {c['smallest_cheat_ppm']} ppm")
    sk, ok = s["same_kernels"], s["other_kernels"]
    m = s["tolerance_margins"]
    lines += [
        f"bitwise-equal post-states: same kernels {sk['bitwise_equal']}/{s['steps']} (gradient proofs {sk['proofs_equal']}), "
        f"other kernels {ok['bitwise_equal']}/{s['steps']} (gradient proofs {ok['proofs_equal']})",
        f"suggested per-step tolerance: {s['suggested_tolerance_ppm']} ppm = {m['x_worst_honest']:.1f}x the worst honest cross-kernel "
        f"error; the smallest cheat ({m['smallest_cheat_ppm']} ppm) is {m['smallest_cheat_over_tolerance']:.0f}x above it",
        f"state file {t['state_bytes']:,} bytes; per step: train {t['train_step_s'] * 1e3:.1f} ms, record {t['record_step_s'] * 1e3:.1f} ms "
        f"(write + hash alone {t['write_hash_s'] * 1e3:.1f} ms), replay {t['replay_step_s'] * 1e3:.1f} ms "
        f"(validator processes incl. batch: same {t['replay_step_s_same'] * 1e3:.1f} ms, other kernels {t['replay_step_s_other'] * 1e3:.1f} ms)",
    ]  # fmt: skip
    return "\n".join(lines)


def measure(assets: dict, trajectories: int, steps: int, cheat_every: int, workdir: Path, log) -> dict:
    from abci_app.ml import determinism

    kernel = determinism.kernel_path()
    capability = "default" if determinism.cpu_capability() in ("AVX2", "AVX512") else "avx2"
    log(f"{assets['name']}: recording {trajectories} x {steps} steps on {kernel} ...")
    spec = record_all(assets, trajectories, steps, cheat_every, workdir, log)
    spec_path = workdir / assets["name"] / "spec.json"
    spec_path.write_text(json.dumps(spec))
    results = {}
    for role, seed, cap in (("same", 22, None), ("other", 44, capability)):  # one at a time: 2 threads each on shared cores
        log(f"{assets['name']}: replaying every step in a '{role}' validator process{' (ATEN_CPU_CAPABILITY=' + cap + ')' if cap else ''} ...")
        proc = launch(spec_path, workdir / assets["name"], role, seed, cap)
        if proc.wait() != 0:
            raise SystemExit(f"worker {role} failed:\n{(workdir / assets['name'] / role / 'worker.log').read_text()[-3000:]}")
        results[role] = json.loads((workdir / assets["name"] / role / "result.json").read_text())
    if results["same"]["kernel_path"] != kernel or results["other"]["kernel_path"] == kernel:
        raise SystemExit(f"kernel paths are not as intended: trainer {kernel}, validators {results['same']['kernel_path']}, {results['other']['kernel_path']}")
    return summarise(spec, results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trajectories", type=int, default=8, help="honest trajectories (one trainer / round seed each)")
    ap.add_argument("--steps", type=int, default=32, help="steps per trajectory (k)")
    ap.add_argument("--cheat-every", type=int, default=4, help="measure the cheats on every n-th step")
    ap.add_argument("--smollm2", action="store_true", help="also measure SmolLM2 LoRA steps (if its converted checkpoint is cached)")
    ap.add_argument("--smollm2-trajectories", type=int, default=2)
    ap.add_argument("--smollm2-steps", type=int, default=8)
    ap.add_argument("--workdir", type=Path, help="keep the state files here (default: a temporary folder, removed)")
    ap.add_argument("--json", action="store_true", help="print every figure as JSON on stdout (the table goes to stderr)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--role", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run_worker(args.worker, args.role)
        return

    from abci_app.ml import determinism

    determinism.pin(THREADS)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="step-tolerance-"))
    out = print if not args.json else log
    summaries = []
    try:
        started = time.perf_counter()
        summaries.append(measure(tiny_assets(workdir), args.trajectories, args.steps, args.cheat_every, workdir, log))
        if args.smollm2:
            assets = smollm2_assets()
            if assets is None:
                log("smollm2: no cached converted checkpoint (and KJV corpus) in the genesis cache: skipped")
            else:
                summaries.append(measure(assets, args.smollm2_trajectories, args.smollm2_steps, max(1, args.cheat_every // 2), workdir, log))
        for s in summaries:
            out(table(s))
            out("")
        out(f"wall {time.perf_counter() - started:.0f} s")
        if args.json:
            print(json.dumps(summaries, indent=1))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
