"""Honest recomputation error between a trainer process and a validator process.

    .venv/bin/python bench/determinism.py --out /tmp/determinism.json
        [--model auto|test|genesis|FILE] [--rounds 20 --trainers 10] [--series equal,threads,kernels]
        [--k-sweep 16,64 --k-sweep-works 10] [--stale 50] [--tolerance-ppm 100]

What it does. A "round" of the training module is simulated off chain: the
genesis model (version 0, from ~/.cache/gradchain/genesis, see
abci_app.localnet.genesis_assets) gets one merged round to make version 1,
the current base; then `--rounds` x `--trainers` Works (round seed, bech32
trainer address, dataset sha256, the training module's default Params) are
written to a spec file. Separate Python processes each compute
`abci_app.workers.recompute.train_submission` for every Work in a loop and
write the deltas (float32, flattened in name order) and their state_sha256:

  trainer    cwd trainer/, environment in the parent's order, PYTHONHASHSEED=11,
             2 threads (determinism.pin), the machine's own CPU kernels
  validator  cwd validator/, environment in reverse order plus an extra
             variable, PYTHONHASHSEED=22, 2 threads           -> series "equal"
  validator1 as validator, PYTHONHASHSEED=33, 1 thread        -> series "threads"
  validatork as validator, PYTHONHASHSEED=44, 2 threads, ATEN_CPU_CAPABILITY
             set to another kernel set (default if the machine runs AVX2/AVX512,
             avx2 otherwise)                                  -> series "kernels"

The trainer process also trains `--stale` of the Works from version 0 (a
trainer on a stale base) and, with `--k-sweep`, a few Works with more steps
(the error between thread counts grows with k). Every series compares the
trainer's delta with the validator's recomputation: bitwise identical
(state_sha256), relative L2 error ||a - b|| / ||b|| in float64 (b = the
validator's, as in recompute.judge) and error_ppm as judge rounds it
(recompute.to_micro: ceiling, integer millionths). Cheats are measured on the
same data against the same validator recomputation: the honest delta x1.01,
+1% gaussian noise, x10, another trainer's delta from the same round, a delta
trained on the stale base, a noise delta (workers.trainer.CHEATS["noise"]),
and a zero delta.

Prints a summary table and a tolerance recommendation; --out gets every raw
number as JSON. Asserts nothing about timing. With the test-size model the
whole run takes about 2.5 CPU minutes (220 s wall on 2 shared cores); the
genesis-size model costs ~10x more. `--model auto` uses the genesis-size
model only if its cached file exists.

`bench/verify.py` reuses `launch_worker` and the worker mode below.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# On a shared machine OpenMP's default spin-waiting burns CPU while a sibling
# thread waits for a core (measured here under load: 0.65 vs 0.11 CPU s per
# submission). It does not change any result, only CPU seconds; set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MICRO = 1_000_000
PERCENTILES = (50, 90, 99)
SERIES = {
    # name: (validator role, what differs besides cwd / env order / PYTHONHASHSEED)
    "equal": ("validator", "2 vs 2 threads, same kernels"),
    "threads": ("validator1", "2 vs 1 thread, same kernels"),
    "kernels": ("validatork", "2 threads, other CPU kernel set"),
}
SHORT = {"equal": "2 vs 2 threads", "threads": "2 vs 1 thread", "kernels": "other kernels"}


# --- Model and data ---------------------------------------------------------------


def cached_model(preset: str) -> Path | None:
    """The cached genesis checkpoint of `preset` if it exists (where localnet.genesis_assets keeps it), else None."""
    from abci_app import localnet
    from abci_app.ml import genesis_cache_dir

    corpus = genesis_cache_dir() / "kjv.txt"
    if not corpus.exists():
        return None
    path = localnet.tiny_genesis_path(preset, corpus)
    return path if path.exists() else None


def resolve_model(choice: str) -> tuple[str, Path, Path]:
    """(label, model file, corpus file). "auto": the genesis-size model if cached, else the test one (trained in seconds if absent)."""
    from abci_app import localnet

    if choice not in ("auto", "test", "genesis"):
        path = Path(choice)
        if not path.exists():
            raise SystemExit(f"{path}: no such checkpoint")
        return f"file {path.name}", path, localnet.genesis_assets("test")[1]
    if choice == "auto":
        choice = "genesis" if cached_model("genesis") else "test"
    model_path, corpus_path = localnet.genesis_assets(choice, echo=lambda m: print(m, file=sys.stderr))
    return f"{choice} preset", model_path, corpus_path


def trainer_address(tag: str) -> str:
    from abci_app import crypto

    return crypto.bech32_encode(crypto.ADDRESS_HRP, hashlib.sha256(f"gradchain/bench/trainer/{tag}".encode()).digest()[:20])


def round_seed(tag: str) -> str:
    return hashlib.sha256(f"gradchain/bench/round/{tag}".encode()).hexdigest()


def default_params() -> dict:
    from abci_app.modules.training import Params

    return asdict(Params())


def make_works(rounds: int, trainers: int, dataset_sha256: str, params: dict, tag: str = "det", base_version: int = 1) -> list[dict]:
    """rounds x trainers Works as JSON: round r, trainer t -> index r * trainers + t."""
    addrs = [trainer_address(f"{tag}/{t}") for t in range(trainers)]
    return [
        {"round_id": r + 1, "base_version": base_version, "round_seed": round_seed(f"{tag}/{r}"), "trainer": addrs[t],
         "dataset_sha256": dataset_sha256, "params": params}
        for r in range(rounds) for t in range(trainers)
    ]  # fmt: skip


def make_version1(model_path: Path, corpus_path: Path, out: Path, threads: int = 2) -> tuple[str, float]:
    """Version 1 = version 0 + the merge of 4 honest deltas of one round (what a chain round registers)."""
    from abci_app.ml import determinism
    from abci_app.ml.family import load_model
    from abci_app.workers.recompute import Work, merged_checkpoint, train_submission

    determinism.pin(threads)
    fam, base = load_model(model_path)
    data = fam.dataset(base, corpus_path)
    works = [Work(**w) for w in make_works(1, 4, data.sha256, default_params(), tag="v1", base_version=0)]
    deltas = [train_submission(fam, base, data, w).delta for w in works]
    sha, merged = merged_checkpoint(fam, base, deltas, 0, 0, out)
    return sha, fam.evaluate_loss(merged, data.heldout)


# --- Worker processes -----------------------------------------------------------------


def launch_worker(spec: Path, workdir: Path, role: str, threads: int, hashseed: int, reverse_env: bool, capability: str | None = None) -> subprocess.Popen:
    """Start `python bench/determinism.py --worker SPEC` as one party: its own cwd, env order, hash seed, threads, kernels."""
    cwd = workdir / role
    cwd.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED")}
    env["PYTHONHASHSEED"] = str(hashseed)
    env["OMP_WAIT_POLICY"] = os.environ["OMP_WAIT_POLICY"]
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    if reverse_env:
        env["GRADCHAIN_BENCH_PARTY"] = role  # one more variable, and every variable in another order
        env = dict(reversed(list(env.items())))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec), "--role", role, "--threads", str(threads)]
    log = open(cwd / "worker.log", "w")
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs: dict[str, subprocess.Popen], workdir: Path) -> None:
    for role, proc in procs.items():
        if proc.wait() != 0:
            log = (workdir / role / "worker.log").read_text()[-3000:]
            raise SystemExit(f"worker {role} failed (exit {proc.returncode}):\n{log}")


def run_parties(spec: Path, workdir: Path, parties: list[tuple], parallel: int = 2) -> None:
    """parties: (role, threads, hashseed, reverse_env, capability); at most `parallel` at a time."""
    for i in range(0, len(parties), parallel):
        batch = parties[i : i + parallel]
        wait_all({p[0]: launch_worker(spec, workdir, *p) for p in batch}, workdir)


def worker_main(spec_path: Path, role: str, threads: int) -> None:
    """One party: compute train_submission for every job in the spec; write deltas.npy and result.json under out/ROLE."""
    import numpy as np

    from abci_app.ml import determinism, train
    from abci_app.ml.family import load_model
    from abci_app.workers.recompute import Work, train_submission

    kernel = determinism.pin(threads)
    spec = json.loads(spec_path.read_text())
    out = Path(spec["out"]) / role
    out.mkdir(parents=True, exist_ok=True)
    fam, current = load_model(spec["base"])
    data = fam.dataset(current, spec["corpus"])
    stale = load_model(spec["stale_base"])[1] if spec.get("stale_base") else None
    jobs = [j for j in spec["jobs"] if role in j.get("roles", [role])]
    save = spec.get("save_deltas", False)
    names = sorted(fam.trainable_names(current))
    size = sum(current.module.get_parameter(n).numel() for n in names)
    deltas = np.lib.format.open_memmap(out / "deltas.npy", mode="w+", dtype=np.float32, shape=(len(jobs), size))
    records = []
    for row, job in enumerate(jobs):
        work = Work(**job["work"])
        base = stale if job.get("base") == "stale" else current
        t0 = time.process_time()
        trained = train_submission(fam, base, data, work)
        t1 = time.process_time()
        record = {"id": job["id"], "sha256": train.state_sha256(trained.delta), "cpu_train_s": t1 - t0,
                  "heldout_before": trained.heldout_before, "heldout_after": trained.heldout_after, "losses": trained.train_losses}  # fmt: skip
        if save:
            from abci_app.workers.recompute import delta_extra

            path = out / f"{job['id']}.delta.safetensors"
            record["file_sha256"] = fam.save_delta(path, trained.delta, base, parent=str(work.base_version), extra=delta_extra(work, trained, kernel))
            record["cpu_save_s"] = time.process_time() - t1
            record["path"] = str(path)
        deltas[row] = np.concatenate([trained.delta[n].reshape(-1).numpy() for n in names])
        records.append(record)
    deltas.flush()
    info = {
        "role": role, "pid": os.getpid(), "cwd": os.getcwd(), "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED"),
        "hash_of_gradchain": hash("gradchain"), "env_first_keys": list(os.environ)[:3],
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "kernel_path": kernel,
        "threads": __import__("torch").get_num_threads(), "layout": [[n, current.module.get_parameter(n).numel()] for n in names],
        "jobs": records,
    }  # fmt: skip
    (out / "result.json").write_text(json.dumps(info))


# --- Comparison -----------------------------------------------------------------------


def rel_l2(a, b) -> float:
    """||a - b|| / ||b|| in float64 (train.relative_l2 over all tensors together, flattened)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ref = float(np.dot(b, b))
    diff = float(np.dot(a - b, a - b))
    if ref == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return math.sqrt(diff / ref)


def to_micro(value: float) -> int:
    from abci_app.workers.recompute import to_micro as chain_to_micro

    return chain_to_micro(value)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a measured value)."""
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)] if s else math.nan


def summarize(errors: list[float], identical: int | None = None, tolerance_ppm: int | None = None) -> dict:
    ppm = [to_micro(e) for e in errors]
    out = {"n": len(errors), "min": min(errors), "max": max(errors), "mean": sum(errors) / len(errors),
           **{f"p{q}": percentile(errors, q) for q in PERCENTILES}, "max_ppm": max(ppm),
           "nonzero": sum(e > 0 for e in errors)}  # fmt: skip
    if identical is not None:
        out["identical"] = identical
    if tolerance_ppm is not None:
        out["over_tolerance"] = sum(p > tolerance_ppm for p in ppm)
    return out


def load_party(outdir: Path, role: str):
    import numpy as np

    info = json.loads((outdir / role / "result.json").read_text())
    arr = np.load(outdir / role / "deltas.npy", mmap_mode="r")
    return info, {j["id"]: (j, arr[row]) for row, j in enumerate(info["jobs"])}


def cheat_errors(trainer: dict, validator: dict, layout: list, works: list[dict], n_trainers: int, stale_ids: list[str]) -> dict[str, list[float]]:
    """Each cheat's relative L2 error against the validator's honest recomputation of the same Work."""
    import numpy as np

    cheats: dict[str, list[float]] = {k: [] for k in ("x1.01", "+1% noise", "x10", "other trainer's delta", "stale base", "noise delta", "zero delta")}
    bounds = np.cumsum([0] + [n for _, n in layout])
    for i in range(len(works)):
        job_id = f"w{i}"
        a = np.asarray(trainer[job_id][1], dtype=np.float32)
        b = validator[job_id][1]
        g = np.random.default_rng(i)
        noisy, rand = a.copy(), np.empty_like(a)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            seg = a[lo:hi].astype(np.float64)
            rms, std = math.sqrt(float(np.mean(seg**2))), float(np.std(seg))
            noisy[lo:hi] += (0.01 * rms * g.standard_normal(hi - lo)).astype(np.float32)
            rand[lo:hi] = (std * g.standard_normal(hi - lo)).astype(np.float32)
        r, t = divmod(i, n_trainers)
        other = f"w{r * n_trainers + (t + 1) % n_trainers}"  # another trainer of the same round
        cheats["x1.01"].append(rel_l2(a * np.float32(1.01), b))
        cheats["+1% noise"].append(rel_l2(noisy, b))
        cheats["x10"].append(rel_l2(a * np.float32(10), b))
        cheats["other trainer's delta"].append(rel_l2(trainer[other][1], b))
        cheats["noise delta"].append(rel_l2(rand, b))
        cheats["zero delta"].append(rel_l2(np.zeros_like(a), b))
    for sid in stale_ids:
        cheats["stale base"].append(rel_l2(trainer[sid][1], validator[sid.removeprefix("stale-")][1]))
    return cheats


def compare(outdir: Path, parties: dict[str, dict], series: list[str], works: list[dict], n_trainers: int, stale_ids: list[str],
            k_sweep: dict[int, list[str]], tolerance_ppm: int) -> dict:  # fmt: skip
    trainer_info, trainer = parties["trainer"]
    result: dict = {"series": {}, "cheats": {}, "k_sweep": {}}
    main_ids = [f"w{i}" for i in range(len(works))]
    for name in series:
        role = SERIES[name][0]
        info, val = parties[role]
        rows = []
        for jid in main_ids:
            a, b = trainer[jid], val[jid]
            err = rel_l2(a[1], b[1])
            rows.append({"id": jid, "identical": a[0]["sha256"] == b[0]["sha256"], "rel_l2": err, "error_ppm": to_micro(err),
                         "heldout_after_equal": a[0]["heldout_after"] == b[0]["heldout_after"]})  # fmt: skip
        result["series"][name] = {
            "what": SERIES[name][1], "trainer": {k: trainer_info[k] for k in ("cwd", "PYTHONHASHSEED", "threads", "kernel_path", "env_first_keys", "hash_of_gradchain")},
            "validator": {k: info[k] for k in ("cwd", "PYTHONHASHSEED", "threads", "kernel_path", "env_first_keys", "hash_of_gradchain", "ATEN_CPU_CAPABILITY")},
            "summary": summarize([r["rel_l2"] for r in rows], sum(r["identical"] for r in rows), tolerance_ppm), "pairs": rows,
        }  # fmt: skip
        for k, ids in k_sweep.items():
            if all(jid in val for jid in ids):
                errs = [rel_l2(trainer[j][1], val[j][1]) for j in ids]
                same = sum(trainer[j][0]["sha256"] == val[j][0]["sha256"] for j in ids)
                result["k_sweep"].setdefault(name, {})[str(k)] = summarize(errs, same, tolerance_ppm) | {"errors": errs}
    reference = parties[SERIES[series[0]][0]][1]  # the first series' validator recomputation (series "equal" by default)
    cheats = cheat_errors(trainer, reference, trainer_info["layout"], works, n_trainers, stale_ids)
    result["cheats"] = {k: summarize(v) | {"errors": v} for k, v in cheats.items() if v}
    return result


NICE_PPM = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000)


def pick_tolerance(honest_max: float, cheat_min: float, current_ppm: int) -> dict:
    """A tolerance with 10x margin on both sides if one exists (the current value if it qualifies, else the
    smallest 1-2-5 value); otherwise the 1-2-5 value nearest the geometric middle of the gap."""
    low, high = 10 * honest_max, cheat_min / 10
    if low <= high:
        inside = [p for p in NICE_PPM if low <= p / MICRO <= high]
        pick = current_ppm if low <= current_ppm / MICRO <= high else (inside[0] if inside else math.ceil(low * MICRO))
    else:
        middle = math.log(math.sqrt(max(honest_max, 1e-12) * cheat_min) * MICRO)
        pick = min(NICE_PPM, key=lambda p: abs(math.log(p) - middle))
    return {"honest_max": honest_max, "window_low": low, "window_high": high, "window_exists": low <= high, "recommended_ppm": pick,
            "margin_over_honest": pick / MICRO / honest_max if honest_max else math.inf, "margin_under_cheat": cheat_min / (pick / MICRO),
            "current_ok": low <= current_ppm / MICRO <= high}  # fmt: skip


def recommend(result: dict, current_ppm: int) -> dict:
    """Tolerances from the distribution: for validators on the trainer's kernel path (thread counts may differ), and for any pair
    of kernel paths (heterogeneous hardware). The chain default must cover the latter: an honest trainer cannot pick its validators' CPUs."""
    cheat_min = min(c["min"] for c in result["cheats"].values())
    same = [s["summary"]["max"] for s in result["series"].values() if s["validator"]["kernel_path"] == s["trainer"]["kernel_path"]]
    rec = {"cheat_min": cheat_min, "current_ppm": current_ppm}
    if same:
        rec["same_kernel"] = pick_tolerance(max(same), cheat_min, current_ppm)
    rec["any_kernel"] = pick_tolerance(max(s["summary"]["max"] for s in result["series"].values()), cheat_min, current_ppm)
    rec["recommended_ppm"] = rec["any_kernel"]["recommended_ppm"]
    return rec


# --- Report ---------------------------------------------------------------------------


def fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.2e}"


def print_report(meta: dict, result: dict, rec: dict) -> None:
    print(f"\nmodel: {meta['model']} ({meta['model_params']:,} params), k={meta['params']['steps']} steps, batch {meta['params']['batch_size']}"
          f"x{meta['seq_len']}, lr {meta['params']['learning_rate_micro'] / MICRO:g}; {meta['torch']} on {meta['cpu']} ({meta['cores']} cores)")  # fmt: skip
    print(f"{meta['works']} Works ({meta['rounds']} rounds x {meta['trainers']} trainers), each computed once by the trainer process and once per validator process\n")
    head = f"{'series (trainer vs validator)':<44}{'pairs':>6}{'identical':>10}{'max rel L2':>12}{'p50':>10}{'p90':>10}{'p99':>10}{'max ppm':>9}{'> tol':>7}"
    print(head)
    print("-" * len(head))
    for name, s in result["series"].items():
        m = s["summary"]
        label = f"{s['what']} [{s['validator']['kernel_path'].split('/')[-1]}]"
        print(f"{label:<44}{m['n']:>6}{m['identical']:>10}{fmt(m['max']):>12}{fmt(m['p50']):>10}{fmt(m['p90']):>10}{fmt(m['p99']):>10}{m['max_ppm']:>9}{m['over_tolerance']:>7}")
    for name, ks in result["k_sweep"].items():
        for k, m in ks.items():
            label = f"  {SHORT[name]}, k={k}"
            print(f"{label:<44}{m['n']:>6}{m['identical']:>10}{fmt(m['max']):>12}{fmt(m['p50']):>10}{fmt(m['p90']):>10}{fmt(m['p99']):>10}{m['max_ppm']:>9}{m['over_tolerance']:>7}")
    print(f"\n{'cheat (vs the validator recomputation)':<40}{'n':>5}{'min rel L2':>12}{'median':>10}{'max':>10}{'min ppm':>10}")
    print("-" * 87)
    for name, c in result["cheats"].items():
        print(f"{name:<40}{c['n']:>5}{fmt(c['min']):>12}{fmt(c['p50']):>10}{fmt(c['max']):>10}{to_micro(c['min']):>10}")
    print(f"\nsmallest cheat error {fmt(rec['cheat_min'])}; current default tolerance_ppm {rec['current_ppm']} = {rec['current_ppm'] / MICRO:g}")
    for key, what in (("same_kernel", "validator on the trainer's kernel path"), ("any_kernel", "any kernel paths (heterogeneous CPUs)")):
        if key in rec:
            r = rec[key]
            window = f"[{fmt(r['window_low'])}, {fmt(r['window_high'])}]" if r["window_exists"] else "none (gap < 100x)"
            print(f"{what}: honest max {fmt(r['honest_max'])}; 10x-both-sides window {window}; current {'inside' if r['current_ok'] else 'outside'}; "
                  f"pick {r['recommended_ppm']} ppm = {r['margin_over_honest']:.0f}x honest max, {r['margin_under_cheat']:.0f}x below the smallest cheat")  # fmt: skip
    print(f"recommended default tolerance_ppm: {rec['recommended_ppm']}")
    for name, s in result["series"].items():
        over = {p: sum(r["error_ppm"] > p for r in s["pairs"]) for p in (10, 50, 100, 200, 500, 1000)}
        print(f"  {s['what']}: pairs over " + ", ".join(f"{p} ppm: {n}" for p, n in over.items()))


# --- Main -----------------------------------------------------------------------------


def machine() -> dict:
    import torch

    from abci_app.ml import determinism

    from machine import cpu_model  # bench/machine.py

    cpu = cpu_model()
    return {"torch": f"torch {torch.__version__}", "kernel_path": determinism.kernel_path(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "load_average": os.getloadavg()}  # fmt: skip


def other_capability(current: str) -> str:
    return "default" if current in ("AVX2", "AVX512") else "avx2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write every raw number here as JSON")
    ap.add_argument("--model", default="auto", help="auto | test | genesis | a checkpoint file (default auto: genesis-size only if cached)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--trainers", type=int, default=10)
    ap.add_argument("--series", default="equal,threads,kernels", help="comma list of: " + ", ".join(SERIES))
    ap.add_argument("--stale", type=int, default=50, help="Works the trainer also trains on the stale base (version 0)")
    ap.add_argument("--k-sweep", default="16,64", help="extra step counts, comma list ('' for none)")
    ap.add_argument("--k-sweep-works", type=int, default=10)
    ap.add_argument("--tolerance-ppm", type=int, help="tolerance to count against (default: the training module's Params default)")
    ap.add_argument("--parallel", type=int, default=2, help="worker processes at a time")
    ap.add_argument("--keep", type=Path, help="keep the worker directory here instead of a temp dir")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.worker, args.role, args.threads)
        return

    from abci_app.ml import determinism
    from abci_app.ml.family import load_model

    series = [s for s in args.series.split(",") if s]
    unknown = set(series) - set(SERIES)
    if unknown:
        raise SystemExit(f"unknown series {sorted(unknown)}; known: {', '.join(SERIES)}")
    params = default_params()
    tolerance = args.tolerance_ppm if args.tolerance_ppm is not None else params["tolerance_ppm"]
    label, model_path, corpus_path = resolve_model(args.model)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gradchain-determinism-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        v1 = workdir / "version1.safetensors"
        v1_sha, v1_loss = make_version1(model_path, corpus_path, v1)
        fam, base1 = load_model(v1)
        data_sha = hashlib.sha256(corpus_path.read_bytes()).hexdigest()
        works = make_works(args.rounds, args.trainers, data_sha, params)
        all_roles = ["trainer"] + [SERIES[s][0] for s in series]
        jobs = [{"id": f"w{i}", "work": w} for i, w in enumerate(works)]
        stale_ids = [f"stale-w{i}" for i in range(min(args.stale, len(works)))]
        jobs += [{"id": sid, "work": works[int(sid[7:])] | {"base_version": 0}, "base": "stale", "roles": ["trainer"]} for sid in stale_ids]
        k_sweep: dict[int, list[str]] = {}
        for k in (int(x) for x in args.k_sweep.split(",") if x):
            ids = [f"k{k}-w{i}" for i in range(min(args.k_sweep_works, len(works)))]
            k_sweep[k] = ids
            sweep_roles = ["trainer"] + [SERIES[s][0] for s in series]
            jobs += [{"id": jid, "work": works[i] | {"params": params | {"steps": k}}, "roles": sweep_roles} for i, jid in enumerate(ids)]
        spec = workdir / "spec.json"
        spec.write_text(json.dumps({"base": str(v1), "stale_base": str(model_path), "corpus": str(corpus_path), "out": str(workdir / "out"), "jobs": jobs}))
        cap = other_capability(determinism.cpu_capability())
        parties = [("trainer", 2, 11, False, None)]
        seeds = {"validator": (2, 22, True, None), "validator1": (1, 33, True, None), "validatork": (2, 44, True, cap)}
        parties += [(SERIES[s][0], *seeds[SERIES[s][0]]) for s in series]
        print(f"{len(works)} Works + {len(stale_ids)} stale + {sum(map(len, k_sweep.values()))} k-sweep jobs; parties: "
              f"{', '.join(p[0] for p in parties)} ({args.parallel} at a time) ...", file=sys.stderr)  # fmt: skip
        run_parties(spec, workdir, parties, args.parallel)
        loaded = {role: load_party(workdir / "out", role) for role in all_roles}
        result = compare(workdir / "out", loaded, series, works, args.trainers, stale_ids, k_sweep, tolerance)
        cpu = {role: sum(j["cpu_train_s"] for j in info["jobs"]) / len(info["jobs"]) for role, (info, _) in loaded.items()}
    meta = machine() | {
        "model": label, "model_file": str(model_path), "model_params": base1.module.num_params(), "version1_sha256": v1_sha,
        "version1_heldout": v1_loss, "params": params, "seq_len": min(params["seq_len"], base1.config.block_size),
        "works": len(works), "rounds": args.rounds, "trainers": args.trainers, "tolerance_ppm": tolerance,
        "mean_cpu_s_per_job": cpu, "wall_s": round(time.monotonic() - start, 1),
    }  # fmt: skip
    rec = recommend(result, tolerance)
    print_report(meta, result, rec)
    print(f"\nwall {meta['wall_s']} s", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "recommendation": rec, **result}, indent=1))
        print(f"raw numbers: {args.out}")


if __name__ == "__main__":
    main()
