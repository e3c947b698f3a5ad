"""What sampled verification (issue 12) costs and what it catches, by running trainers and auditors.

    .venv/bin/python bench/verify.py [--json] [--smollm2 [--smollm2-subs 2]] [--cost-subs 3] [--rounds 10 --subs-per-round 60]
        [--cheaters 2] [--honest 200] [--honest-genesis 10]
    .venv/bin/python bench/verify.py --quick [--json]      # the unit test's run: TEST_CONFIG, k = 8, s = 5, seconds

Every role runs in its own process, pinned as the workers pin themselves
(abci_app.ml.determinism.pin(2): 2 threads, deterministic algorithms;
OMP_WAIT_POLICY=PASSIVE; own cwd and PYTHONHASHSEED), one after the other so
they do not share the cores. CPU = time.process_time() of that process
(every thread). Content moves through a local store that, like IPFS, hands
out a file by CID and checks its sha256 (tests/unit/test_spotcheck.py's).

  trainer     spotcheck.train_trajectory (k steps, the k + 1 state files
              written and hashed, held-out loss before and after) +
              family.save_delta + the manifest (a CID for every state
              file, manifest_bytes) per submission; honest and cheating.
  validator   the trainer's kernel path: one spotcheck.Auditor.audit per
              submission with the sample its ed25519 key draws
              (audit_sample(sign(audit_message(round, index, trajectory,
              beacon)), k, s)): manifest, endpoints (state 0 = the base,
              delta = w_k - w_0), s replayed steps compared by hash and
              gradient commitment, held-out loss after on the chain's
              audit_heldout_windows. The base's held-out loss (same windows)
              is computed once per round and shared by the round's
              submissions (Auditor.base_loss): counted once per round,
              divided by the round's submissions.
  validator-k another CPU kernel set (ATEN_CPU_CAPABILITY=default where
              the machine runs AVX2/AVX512, avx2 elsewhere): the same audits
              compare each replayed step with the published post-state
              within step_tolerance_ppm.

Sections (Params: the training module's defaults with the localnet's
training values for the model, abci_app.localnet.localnet_app_state):
1. Cost: `--cost-subs` honest submissions of the tiny GPT genesis model
   (cached ~/.cache/gradchain/genesis/tiny-gpt-genesis-*.safetensors, else
   GENESIS_CONFIG from seed 0; KJV corpus cached, else the unit tests'
   synthetic corpus) at (k, s) = (64, 12); ratio = validator CPU per checked
   submission / trainer CPU per submission, with the pieces of both. With
   --smollm2 the same for SmolLM2-135M LoRA (its cached converted
   checkpoint, as abci_app.localnet finds it; skipped when absent).
2. Detection: a cheating trainer (train_trajectory(faked_steps=...)) fakes
   m = max(1, round(f k)) of its k steps at random positions, `--cheaters`
   trajectories per f. Over `--rounds` rounds of `--subs-per-round`
   submissions, each a cheater's trajectory, 4 validators, each with its own
   ed25519 key, sign the real audit message with the round's fresh beacon
   and audit their sample with a real Auditor; detected = at least one
   returns fraud. One faked trajectory serves many (round, index, beacon)
   draws: the sample depends on the signature, so draws are independent.
   To keep CPU bounded the auditors of this section share, within the
   process, the outcome of a step already replayed from the same trajectory
   (and of its endpoints and held-out loss): each distinct step is
   recomputed once, for real. Printed next to audit.escape_probability_ppm.
3. Honest false rejects: `--honest` honest submissions of the tiny GPT
   test preset (cached tiny-gpt-test-*, else TEST_CONFIG from seed 0) and
   `--honest-genesis` of the genesis model, k = 64, batch 1, each audited
   once by the validator (hash) and once by validator-k (tolerance).
   A false reject is a fraud verdict on honest work (no gain is not one).
4. Network-wide verification CPU / training CPU = per-audit CPU x auditors
   per submission / trainer CPU: 4 and 8 validators with committee_size 0
   (every validator audits), and committees of c of 100 validators.
5. Bytes: what a trainer uploads (k + 1 states, delta, manifest) and what an
   auditor fetched (distinct files: manifest, s pre-states, state k, delta,
   and on another kernel path the s post-states), measured.

Prints tables (stderr with --json, which prints every figure as JSON on
stdout). Asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# OpenMP spin-waiting burns CPU seconds on shared cores without changing a bit (bench/determinism.py); before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

THREADS = 2
VALIDATORS = 4
FRACTIONS = (0.05, 0.1, 0.5)


# --- Models, params, work ------------------------------------------------------------------------------


def tiny_assets(preset: str, workdir: Path, synthetic: bool = False) -> dict:
    """A tiny GPT ("genesis" or "test" preset) and its corpus: the cached files when present, else built from seed 0."""
    from abci_app.ml import genesis_cache_dir, model
    from abci_app.ml.family import TinyGPT

    cache = genesis_cache_dir()
    cached = [] if synthetic else sorted(cache.glob(f"tiny-gpt-{preset}-*.safetensors"))
    if cached:
        model_path, label = cached[-1], f"cached {cached[-1].name}"
    else:
        config = model.GENESIS_CONFIG if preset == "genesis" else model.TEST_CONFIG
        model_path, label = workdir / f"{preset}-seed0.safetensors", f"{'GENESIS' if preset == 'genesis' else 'TEST'}_CONFIG from seed 0 (untrained)"
        if not model_path.exists():
            TinyGPT().save(TinyGPT().build(config, seed=0), model_path)
    corpus = cache / "kjv.txt"
    if synthetic or not corpus.exists():
        from tests.unit.conftest import synthetic_corpus

        corpus = workdir / "synthetic-corpus.txt"
        if not corpus.exists():
            synthetic_corpus(corpus)
    return {"name": f"tiny-gpt {preset}", "label": label, "model": str(model_path), "corpus": str(corpus)}


def smollm2_assets() -> dict | None:
    """The converted SmolLM2 checkpoint where abci_app.ml.smollm2.genesis_checkpoint caches it, without converting; None when absent."""
    from abci_app.ml import checkpoint, genesis_cache_dir, smollm2

    cache = genesis_cache_dir()
    corpus = cache / "kjv.txt"
    try:
        gguf = smollm2.gguf_path()
    except FileNotFoundError:
        return None
    path = cache / f"smollm2-135m-instruct-{checkpoint.file_sha256(gguf)[:12]}.safetensors"
    if not path.exists() or not corpus.exists():
        return None
    return {"name": "smollm2-lora", "label": f"cached {path.name}", "model": str(path), "corpus": str(corpus)}


def chain_params(model: str, **over) -> dict:
    """The chain's training Params as the localnet runs `model` ("tiny" | "smollm2"): the training module's defaults
    with every localnet value, so the audit uses the chain's audit_heldout_windows, step_tolerance_ppm, max_state_bytes."""
    from dataclasses import asdict

    from abci_app import localnet
    from abci_app.modules.training import Params

    params = Params(**(asdict(Params()) | localnet.localnet_app_state(model)["training"]["params"] | over))
    params.validate()
    return asdict(params)


def make_work(tag: str, round_id: int, params: dict, dataset_sha256: str) -> dict:
    return {"round_id": round_id, "base_version": 0, "round_seed": hashlib.sha256(f"gradchain/bench/verify/round/{tag}".encode()).hexdigest(),
            "trainer": f"bench-verify-trainer-{tag}", "dataset_sha256": dataset_sha256, "params": params}  # fmt: skip


def beacon(tag: str) -> str:
    return hashlib.sha256(f"gradchain/bench/verify/beacon/{tag}".encode()).hexdigest()


def validator_seed(v: int) -> str:
    return hashlib.sha256(f"gradchain/bench/verify/validator/{v}".encode()).hexdigest()


def other_capability() -> str:
    from abci_app.ml import determinism

    return "default" if determinism.cpu_capability() in ("AVX2", "AVX512") else "avx2"


# --- Worker processes ----------------------------------------------------------------------------------


class Store:
    """Content by CID with sha256 checks, like IPFS; counts the bytes each audit fetched (distinct CIDs)."""

    def __init__(self, index: dict[str, str], remember_checks: bool = False):
        self.index, self.remember_checks, self.checked = index, remember_checks, set()
        self.fetched: dict[str, int] = {}

    def fetch(self, cid: str, sha256: str, suffix: str) -> Path:
        from abci_app.workers.spotcheck import Mismatch, Unavailable

        if cid not in self.index:
            raise Unavailable(f"{cid} not found")
        path = Path(self.index[cid])
        if (cid, sha256) not in self.checked:
            if hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
                raise Mismatch(f"{cid} does not hash to {sha256}")
            if self.remember_checks:
                self.checked.add((cid, sha256))
        self.fetched[cid] = path.stat().st_size
        return path


class Models:
    """(family, base shaped for the params, dataset) per (assets, params), loaded once per process."""

    def __init__(self):
        self.cache: dict[str, tuple] = {}
        self.setup_cpu: dict[str, float] = {}

    def get(self, assets: dict, params: dict):
        from abci_app.ml.family import load_model

        key = json.dumps([assets["model"], assets["corpus"], params], sort_keys=True)
        if key not in self.cache:
            t0 = time.process_time()
            family, base = load_model(assets["model"])
            base = family.for_training(base, params)
            self.cache[key] = (family, base, family.dataset(base, assets["corpus"]))
            self.setup_cpu[assets["name"]] = time.process_time() - t0
        return self.cache[key]


def train_jobs(spec: dict, out: Path) -> dict:
    """The trainer: every job's trajectory (honest or faking), delta, manifest, CIDs; CPU per piece."""
    from abci_app.ipfs.cid import cid_of_file
    from abci_app.ml import determinism, trajectory
    from abci_app.workers.recompute import Work, batches, heldout_loss
    from abci_app.workers.spotcheck import manifest_bytes, train_trajectory

    kernel = determinism.kernel_path()
    models = Models()
    results, index, pieces = {}, {}, {}
    for job in spec["jobs"]:
        family, base, dataset = models.get(job["assets"], job["work"]["params"])
        work = Work(**job["work"], kernel_path=kernel)
        folder = out / job["id"]
        t0 = time.process_time()
        traj = train_trajectory(family, base, dataset, work, folder / "states", faked_steps=job.get("faked", ()))
        t1 = time.process_time()
        delta_path = folder / "delta.safetensors"
        sha256 = family.save_delta(delta_path, traj.delta, base, parent="0")
        t2 = time.process_time()
        states = [(cid_of_file(p), h, n) for p, h, n in zip(traj.recorded.state_paths, traj.recorded.state_hashes, traj.recorded.state_sizes)]
        manifest = folder / "manifest.json"
        manifest.write_bytes(manifest_bytes(work, kernel, states))
        sub = {"steps": work.params["steps"], "cid": cid_of_file(delta_path), "sha256": sha256, "trajectory_cid": cid_of_file(manifest),
               "trajectory_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(), "kernel_path": kernel,
               "grad_commitments": traj.grad_commitments().hex()}  # fmt: skip
        t3 = time.process_time()
        for (cid, _, _), p in zip(states, traj.recorded.state_paths):
            index[cid] = str(p)
        index[sub["cid"]], index[sub["trajectory_cid"]] = str(delta_path), str(manifest)
        results[job["id"]] = {"sub": sub, "work": job["work"], "faked": traj.faked_steps, "cpu_train_trajectory_s": t1 - t0,
                              "cpu_save_delta_s": t2 - t1, "cpu_manifest_s": t3 - t2, "cpu_s": t3 - t0,
                              "upload_bytes": {"states": sum(traj.recorded.state_sizes), "delta": delta_path.stat().st_size,
                                               "manifest": manifest.stat().st_size},
                              "state_bytes": traj.recorded.state_sizes[0], "heldout": [traj.heldout_before, traj.heldout_after]}  # fmt: skip
        print(f"trainer: {job['id']} {t3 - t0:.2f} CPU s", file=sys.stderr, flush=True)
    # The trainer's pieces, once per model of the cost section: k plain steps (no states), one held-out evaluation.
    for job in spec.get("pieces", []):
        family, base, dataset = models.get(job["assets"], job["work"]["params"])
        work = Work(**job["work"], kernel_path=kernel)
        t0 = time.process_time()
        family.train_steps(family.clone(base), batches(family, base, dataset, work), work.params["learning_rate_micro"] / 1_000_000)
        t1 = time.process_time()
        heldout_loss(family, base, dataset)
        t2 = time.process_time()
        pieces[job["assets"]["name"]] = {"plain_steps_s": t1 - t0, "heldout_s": t2 - t1, "state_count": work.params["steps"] + 1,
                                         "trainable": sum(t.numel() for n, t in trajectory.initial_state(family, base).items() if n.startswith("w/"))}  # fmt: skip
    return {"kernel_path": kernel, "results": results, "index": index, "pieces": pieces, "setup_cpu_s": models.setup_cpu}


def audit_tasks(spec: dict, out: Path) -> dict:
    """A validator: each task is one audit by one validator key of one submission, with the sample its signature draws."""
    from abci_app import crypto
    from abci_app.ml import determinism
    from abci_app.modules import audit
    from abci_app.workers.recompute import Work
    from abci_app.workers.spotcheck import Auditor

    kernel = determinism.kernel_path()
    subs = spec["subs"]
    models = Models()
    shared_memo: dict = {}
    memo_store = Store(spec["index"], remember_checks=True)  # section 2: a file's sha256 is checked once per process
    auditors: dict[tuple, Auditor] = {}
    keys = {v: crypto.PrivateKey(bytes.fromhex(validator_seed(v))) for v in range(spec["validators"])}
    rows, base_loss_s = [], {}
    for task in spec["tasks"]:
        s = subs[task["sub"]]
        family, base, dataset = models.get(s["assets"], s["work"]["params"])
        memo = task.get("memo", False)
        store = memo_store if memo else Store(spec["index"])
        store.fetched = {}
        # One Auditor per (validator, round), as a validator builds one per round; its base loss is the round's.
        akey = (task["validator"], task["round"], s["assets"]["name"], json.dumps(s["work"]["params"], sort_keys=True), memo)
        if akey not in auditors:
            cls = MemoAuditor if memo else TimedAuditor
            auditors[akey] = cls(family, base, dataset, s["work"]["params"], kernel, store.fetch)
            if memo:
                auditors[akey].memo = shared_memo
            t0 = time.process_time()
            auditors[akey].base_loss()
            base_loss_s.setdefault(f"{task.get('group', '')}/{s['assets']['name']}", []).append(time.process_time() - t0)
        auditor = auditors[akey]
        auditor.fetch = store.fetch
        work = Work(**s["work"], kernel_path=s["sub"]["kernel_path"])
        sub = s["sub"] | {"index": task["index"]}
        t0 = time.process_time()
        signature = keys[task["validator"]].sign(audit.audit_message(task["round"], task["index"], sub["trajectory_sha256"], task["beacon"]))
        sample = audit.audit_sample(signature, sub["steps"], work.params["audit_steps"])
        auditor.pieces = {}
        result = auditor.audit(work, sub, sample)
        cpu = time.process_time() - t0
        rows.append({"sub": task["sub"], "round": task["round"], "index": task["index"], "validator": task["validator"], "sample": sample,
                     "verdict": result.verdict, "fraud_step": result.fraud_step, "error_ppm": result.error_ppm, "reason": result.reason,
                     "proofs": len(result.proofs), "cpu_s": cpu, "pieces": auditor.pieces, "fetched_bytes": sum(store.fetched.values()),
                     "fetched_files": len(store.fetched)})  # fmt: skip
    return {"kernel_path": kernel, "rows": rows, "base_loss_cpu_s": base_loss_s, "setup_cpu_s": models.setup_cpu,
            "replayed_steps": sum(1 for k in shared_memo if k[0] == "step")}  # fmt: skip


def _auditor_classes():
    from abci_app.workers import spotcheck

    class TimedAuditor(spotcheck.Auditor):
        """An Auditor that adds up the CPU of its pieces (the held-out evaluation is the rest)."""

        pieces: dict

        def _timed(self, name, fn, *args):
            t0 = time.process_time()
            try:
                return fn(*args)
            finally:
                self.pieces[name] = self.pieces.get(name, 0.0) + time.process_time() - t0

        def _manifest(self, work, sub):
            return self._timed("manifest", super()._manifest, work, sub)

        def _check_endpoints(self, sub, states):
            return self._timed("endpoints", super()._check_endpoints, sub, states)

        def _check_step(self, work, sub, states, i):
            return self._timed("steps", super()._check_step, work, sub, states, i)

    class MemoAuditor(spotcheck.Auditor):
        """An Auditor whose deterministic pieces, once computed for a trajectory, are reused by later audits of it
        in this process (section 2: many independent samples of one faked trajectory)."""

        memo: dict
        pieces: dict

        def _once(self, key, fn, *args):
            if key not in self.memo:
                try:
                    self.memo[key] = (True, fn(*args))
                except spotcheck._Bad as bad:  # a fraud found once is found again: keep the exception
                    self.memo[key] = (False, bad)
            ok, value = self.memo[key]
            if not ok:
                raise value
            return value

        def _manifest(self, work, sub):
            return self._once(("manifest", sub["trajectory_sha256"]), super()._manifest, work, sub)

        def _check_endpoints(self, sub, states):
            return self._once(("endpoints", sub["trajectory_sha256"], sub["sha256"]), super()._check_endpoints, sub, states)

        def _check_step(self, work, sub, states, i):
            return self._once(("step", sub["trajectory_sha256"], i), super()._check_step, work, sub, states, i)

    return TimedAuditor, MemoAuditor


TimedAuditor = MemoAuditor = None  # set in the worker (they import torch)


class _MemoFamily:
    """The family as MemoAuditor sees it: `apply` and `evaluate_loss` of a delta already evaluated are reused."""

    def __init__(self, family, memo: dict):
        self._family, self._memo = family, memo

    def __getattr__(self, name):
        return getattr(self._family, name)

    def apply(self, base, delta):
        key = ("apply", id(delta))
        if key not in self._memo:
            self._memo[key] = (delta, self._family.apply(base, delta))  # keeps delta alive, so its id stays unique
        return self._memo[key][1]

    def evaluate_loss(self, loaded, tokens, *args):
        key = ("loss", id(loaded), id(tokens))
        if key not in self._memo:
            self._memo[key] = (loaded, self._family.evaluate_loss(loaded, tokens, *args))
        return self._memo[key][1]


def worker_main(spec_path: Path) -> None:
    global TimedAuditor, MemoAuditor
    from abci_app.ml import determinism

    determinism.pin(THREADS)
    TimedAuditor, Memo = _auditor_classes()

    family_memo: dict = {}  # shared by every MemoAuditor of the process, like their step outcomes

    class MemoAuditorWithFamily(Memo):
        def __init__(self, family, *args):
            super().__init__(_MemoFamily(family, family_memo), *args)

    MemoAuditor = MemoAuditorWithFamily
    spec = json.loads(spec_path.read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    result = train_jobs(spec, out) if spec["role"] == "train" else audit_tasks(spec, out)
    (out / "result.json").write_text(json.dumps(result))


def run_process(workdir: Path, name: str, spec: dict, hashseed: int, capability: str | None = None, log=print) -> dict:
    """This script's --worker in a fresh process (own cwd, PYTHONHASHSEED, optionally other CPU kernels); its result."""
    cwd = workdir / name
    cwd.mkdir(parents=True, exist_ok=True)
    spec = spec | {"out": str(cwd / "out")}
    (cwd / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED")}
    env |= {"PYTHONHASHSEED": str(hashseed), "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    log(f"{name}: {len(spec.get('jobs', spec.get('tasks', [])))} {'jobs' if spec['role'] == 'train' else 'audits'} "
        f"{'(ATEN_CPU_CAPABILITY=' + capability + ')' if capability else ''}...")  # fmt: skip
    t0 = time.monotonic()
    with open(cwd / "worker.log", "w") as logf:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(cwd / "spec.json")], cwd=cwd, env=env,
                              stdout=logf, stderr=subprocess.STDOUT)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{name} process failed (exit {proc.returncode}); its log:\n" + (cwd / "worker.log").read_text()[-3000:])
    result = json.loads((cwd / "out" / "result.json").read_text())
    result["wall_s"] = time.monotonic() - t0
    return result


# --- The run -------------------------------------------------------------------------------------------


def faked_positions(k: int, f: float, tag: str) -> list[int]:
    import random

    m = max(1, round(f * k))
    return sorted(random.Random(f"gradchain/bench/verify/fake/{tag}").sample(range(k), m))


def dataset_sha256(assets: dict) -> str:
    """The dataset sha256 a Work names: sha256 of the corpus file as the family tokenizes it (abci_app.ml.corpus)."""
    from abci_app.ml.corpus import load_dataset

    return load_dataset(assets["corpus"]).sha256


def plan(args, workdir: Path) -> dict:
    """Jobs and audits of every section."""
    if args.quick:
        cost_assets = honest_assets = tiny_assets("test", workdir, synthetic=True)
        honest_genesis_assets = None
        cost_params = chain_params("tiny", steps=8, audit_steps=5, batch_size=2, seq_len=32, learning_rate_micro=1_000, max_state_bytes=1 << 20)
        honest_params = cost_params | {"batch_size": 1}
    else:
        cost_assets = tiny_assets("genesis", workdir)
        honest_assets, honest_genesis_assets = tiny_assets("test", workdir), cost_assets
        cost_params = chain_params("tiny")
        honest_params = chain_params("tiny", batch_size=1, learning_rate_micro=1_000)  # the test preset is far from converged
    jobs, subs = [], {}

    def job(jid: str, assets: dict, work: dict, faked=()):
        jobs.append({"id": jid, "assets": assets, "work": work, "faked": list(faked)})
        subs[jid] = {"assets": assets, "work": work}

    sha = {a["corpus"]: dataset_sha256(a) for a in (cost_assets, honest_assets, honest_genesis_assets) if a}
    k = cost_params["steps"]
    for i in range(args.cost_subs):
        job(f"cost{i}", cost_assets, make_work(f"cost/{i}", 1, cost_params, sha[cost_assets["corpus"]]))
    for f in FRACTIONS:
        for c in range(args.cheaters):
            job(f"cheat{f}-{c}", cost_assets, make_work(f"cheat/{f}/{c}", 1, cost_params, sha[cost_assets["corpus"]]),
                faked_positions(k, f, f"{f}/{c}"))  # fmt: skip
    for i in range(args.honest):
        job(f"honest{i}", honest_assets, make_work(f"honest/{i}", 1, honest_params, sha[honest_assets["corpus"]]))
    if honest_genesis_assets is not None:
        gparams = chain_params("tiny", batch_size=1)
        for i in range(args.honest_genesis):
            job(f"honestg{i}", honest_genesis_assets, make_work(f"honestg/{i}", 1, gparams, sha[honest_genesis_assets["corpus"]]))
    pieces = [{"assets": cost_assets, "work": subs["cost0"]["work"]}] if args.cost_subs else []

    # Audits: the cost submissions and every honest one once by validator 0 of round 1 (index = position in the round);
    # cheaters: rounds x subs-per-round submissions, each audited by every validator with the round's beacon.
    cost = [{"sub": f"cost{i}", "round": 1, "index": i, "validator": 0, "beacon": beacon("cost"), "group": "cost"} for i in range(args.cost_subs)]
    honest = [{"sub": j["id"], "round": 1, "index": n, "validator": 0, "beacon": beacon("honest"), "group": "honest"}
              for n, j in enumerate(j for j in jobs if j["id"].startswith("honest"))]  # fmt: skip
    detect = []
    for f in FRACTIONS:
        for r in range(args.rounds):
            for n in range(args.subs_per_round):
                for v in range(VALIDATORS):
                    detect.append({"sub": f"cheat{f}-{n % args.cheaters}", "round": 1000 + r, "index": n, "validator": v,
                                   "beacon": beacon(f"detect/{f}/{r}"), "memo": True})  # fmt: skip
    return {"jobs": jobs, "subs": subs, "pieces": pieces, "cost": cost, "honest": honest, "detect": detect, "cost_params": cost_params,
            "honest_params": honest_params, "assets": {"cost": cost_assets, "honest": honest_assets, "honest_genesis": honest_genesis_assets}}  # fmt: skip


def smollm2_section(args, workdir: Path, log) -> dict:
    assets = smollm2_assets()
    if assets is None:
        log("smollm2: no cached converted SmolLM2 checkpoint (abci_app.ml.smollm2.genesis_checkpoint; `make localnet` makes it) "
            "or KJV corpus: section skipped")  # fmt: skip
        return {"skipped": "no cached SmolLM2 checkpoint or corpus"}
    params = chain_params("smollm2")
    sha = dataset_sha256(assets)
    jobs = [{"id": f"lora{i}", "assets": assets, "work": make_work(f"lora/{i}", 1, params, sha)} for i in range(args.smollm2_subs)]
    trainer = run_process(workdir, "smollm2-trainer", {"role": "train", "jobs": jobs,
                                                       "pieces": [{"assets": assets, "work": jobs[0]["work"]}]}, 11, log=log)  # fmt: skip
    subs = {j["id"]: {"assets": assets, "work": j["work"], "sub": trainer["results"][j["id"]]["sub"]} for j in jobs}
    tasks = [{"sub": j["id"], "round": 1, "index": i, "validator": 0, "beacon": beacon("lora"), "group": "cost"} for i, j in enumerate(jobs)]
    validator = run_process(workdir, "smollm2-validator", {"role": "audit", "subs": subs, "tasks": tasks, "index": trainer["index"],
                                                           "validators": VALIDATORS}, 22, log=log)  # fmt: skip
    return {"assets": assets, "params": params, "trainer": trainer, "validator": validator}


def cost_summary(trainer: dict, validator: dict, ids: list[str], model: str) -> dict:
    t = [trainer["results"][i] for i in ids]
    rows = [r for r in validator["rows"] if r["sub"] in ids]
    base_loss = statistics.mean(validator["base_loss_cpu_s"][f"cost/{model}"])
    per_round = base_loss / len(ids)  # once per round, shared by the round's submissions (here: the measured ones)
    train_s = statistics.median(x["cpu_s"] for x in t)
    audit_s = statistics.median(r["cpu_s"] for r in rows)
    pieces_v = {p: statistics.median(r["pieces"].get(p, 0.0) for r in rows) for p in ("manifest", "endpoints", "steps")}
    pieces_v["held-out after + apply + rest"] = audit_s - sum(pieces_v.values())
    tp = trainer["pieces"].get(model, {})
    traj = statistics.median(x["cpu_train_trajectory_s"] for x in t)
    pieces_t = {"k plain steps": tp.get("plain_steps_s", 0.0), "2 held-out evaluations": 2 * tp.get("heldout_s", 0.0)}
    pieces_t["state snapshots, writes, hashes, gradient proofs"] = traj - sum(pieces_t.values())
    pieces_t["save_delta"] = statistics.median(x["cpu_save_delta_s"] for x in t)
    pieces_t["manifest (CIDs of k + 1 states)"] = statistics.median(x["cpu_manifest_s"] for x in t)
    return {"model": model, "submissions": len(ids), "trainer_cpu_s": [x["cpu_s"] for x in t], "audit_cpu_s": [r["cpu_s"] for r in rows],
            "trainer_median_s": train_s, "audit_median_s": audit_s, "base_loss_per_round_s": base_loss, "base_loss_share_s": per_round,
            "validator_per_submission_s": audit_s + per_round, "ratio": (audit_s + per_round) / train_s, "trainer_pieces_s": pieces_t,
            "ratio_by_round_size": {n: (audit_s + base_loss / n) / train_s for n in (1, 2, 4, 16)},
            "validator_pieces_s": pieces_v, "verdicts": [r["verdict"] for r in rows], "heldout_s": tp.get("heldout_s"),
            "plain_step_s": tp.get("plain_steps_s", 0.0) / max(1, tp.get("state_count", 1) - 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print every figure as JSON on stdout (tables go to stderr)")
    ap.add_argument("--quick", action="store_true", help="TEST_CONFIG, synthetic corpus, k = 8, s = 5, few submissions (the unit test)")
    ap.add_argument("--smollm2", action="store_true", help="also the SmolLM2-135M LoRA cost (minutes)")
    ap.add_argument("--smollm2-subs", type=int, default=2, help="SmolLM2 submissions in its round, sharing the base evaluation (default 2)")
    ap.add_argument("--cost-subs", type=int, help="honest submissions timed (default 3; quick 1)")
    ap.add_argument("--cheaters", type=int, help="faked trajectories per f (default 2; quick 1)")
    ap.add_argument("--rounds", type=int, help="detection rounds per f (default 10; quick 3)")
    ap.add_argument("--subs-per-round", type=int, help="cheating submissions per round (default 60; quick 4)")
    ap.add_argument("--honest", type=int, help="honest submissions of the test preset for false rejects (default 200; quick 4)")
    ap.add_argument("--honest-genesis", type=int, help="honest submissions of the genesis model for false rejects (default 10)")
    ap.add_argument("--keep", type=Path, help="keep the work directory here")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args.worker)
    defaults = {"cost_subs": (3, 1), "cheaters": (2, 1), "rounds": (10, 3), "subs_per_round": (60, 4), "honest": (200, 4), "honest_genesis": (10, 0)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.cost_subs = max(1, args.cost_subs)
    args.cheaters = max(1, args.cheaters)
    err = sys.stderr if args.json else sys.stdout

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import cpu_model  # bench/machine.py

    import torch

    start, load_start = time.monotonic(), os.getloadavg()
    capability = other_capability()
    with tempfile.TemporaryDirectory(prefix="gradchain-verify-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        p = plan(args, workdir)
        trainer = run_process(workdir, "trainer", {"role": "train", "jobs": p["jobs"], "pieces": p["pieces"]}, 11, log=log)
        subs = {jid: s | {"sub": trainer["results"][jid]["sub"]} for jid, s in p["subs"].items()}
        common = {"role": "audit", "subs": subs, "index": trainer["index"], "validators": VALIDATORS}
        validator = run_process(workdir, "validator", common | {"tasks": p["cost"] + p["honest"] + p["detect"]}, 22, log=log)
        validator_k = run_process(workdir, "validator-k", common | {"tasks": p["cost"] + p["honest"]}, 33, capability, log=log)
        lora = smollm2_section(args, workdir, log) if args.smollm2 else None
    wall = time.monotonic() - start

    # --- Figures ---
    cost_ids = [f"cost{i}" for i in range(args.cost_subs)]
    cost_name = p["assets"]["cost"]["name"]
    cost = cost_summary(trainer, validator, cost_ids, cost_name)
    cost_k = cost_summary(trainer, validator_k, cost_ids, cost_name)
    lora_cost = None
    if lora and "skipped" not in lora:
        lora_ids = list(lora["trainer"]["results"])
        lora_cost = cost_summary(lora["trainer"], lora["validator"], lora_ids, lora["assets"]["name"])
    k, s = p["cost_params"]["steps"], p["cost_params"]["audit_steps"]
    from abci_app.modules import audit

    detection = []
    for f in FRACTIONS:
        rows = [r for r in validator["rows"] if r["sub"].startswith(f"cheat{f}-")]
        by_sub: dict[tuple, list] = {}
        for r in rows:
            by_sub.setdefault((r["round"], r["index"]), []).append(r)
        m = len(trainer["results"][f"cheat{f}-0"]["faked"])
        caught = sum(any(x["verdict"] == "fraud" for x in v) for v in by_sub.values())
        per_round = {}
        for (rnd, _), v in by_sub.items():
            per_round.setdefault(rnd, [0, 0])
            per_round[rnd][0] += any(x["verdict"] == "fraud" for x in v)
            per_round[rnd][1] += 1
        wrong_step = sum(1 for r in rows if r["verdict"] == "fraud" and r["fraud_step"] not in trainer["results"][r["sub"]]["faked"])
        single = sum(r["verdict"] == "fraud" for r in rows) / len(rows) if rows else 0.0
        detection.append({"f": f, "k": k, "s": s, "m": m, "validators": VALIDATORS, "rounds": args.rounds, "submissions": len(by_sub),
                          "audits": len(rows), "detected": caught, "rate": caught / len(by_sub) if by_sub else 0.0,
                          "min_round_rate": min(c / n for c, n in per_round.values()) if per_round else 0.0,
                          "single_auditor_rate": single, "fraud_at_unfaked_step": wrong_step,
                          "formula_detect_ppm": 1_000_000 - audit.escape_probability_ppm(k, m, s, VALIDATORS),
                          "formula_single_ppm": 1_000_000 - audit.escape_probability_ppm(k, m, s, 1),
                          "faked_positions": {c: trainer["results"][f"cheat{f}-{c}"]["faked"] for c in range(args.cheaters)}})  # fmt: skip

    honest_ids = [j["id"] for j in p["jobs"] if j["id"].startswith("honest")]
    false = {}
    for who, res in (("same kernel path (hash)", validator), (f"other kernel set ({capability}; tolerance)", validator_k)):
        for group, prefix in (("test preset", "honest"), ("genesis", "honestg")):
            rows = [r for r in res["rows"] if r["sub"] in honest_ids and (r["sub"].startswith("honestg") == (prefix == "honestg"))]
            if not rows:
                continue
            errors = sorted(r["error_ppm"] for r in rows)
            false[f"{group}, {who}"] = {"submissions": len(rows), "false_rejects": sum(r["verdict"] == "fraud" for r in rows),
                                        "no_gain": sum(r["verdict"] == "no_gain" for r in rows), "max_error_ppm": errors[-1],
                                        "median_error_ppm": errors[len(errors) // 2], "kernel_path": res["kernel_path"],
                                        "rejects": [f"{r['sub']}: {r['reason']}" for r in rows if r["verdict"] == "fraud"][:5]}  # fmt: skip
    false_total = sum(v["false_rejects"] for v in false.values())
    honest_subs = len(honest_ids)

    def network(c: dict) -> dict:
        ratio = c["ratio"]
        return {"4 validators, committee = all": 4 * ratio, "8 validators, committee = all": 8 * ratio,
                **{f"100 validators, committee_size {n}": n * ratio for n in (4, 8, 16)},
                "100 validators, committee = all": 100 * ratio}  # fmt: skip

    def bytes_of(trainer_res: dict, val: dict, ids: list[str]) -> dict:
        up = trainer_res["results"][ids[0]]["upload_bytes"]
        fetched = [r["fetched_bytes"] for r in val["rows"] if r["sub"] in ids]
        return {"upload": up | {"total": sum(up.values())}, "state_file": trainer_res["results"][ids[0]]["state_bytes"],
                "download_median": statistics.median(fetched), "download_max": max(fetched),
                "files_median": statistics.median(r["fetched_files"] for r in val["rows"] if r["sub"] in ids)}  # fmt: skip

    report = {
        "meta": {"torch": torch.__version__, "kernel_path": trainer["kernel_path"], "other_kernel_path": validator_k["kernel_path"],
                 "cpu": cpu_model(), "cores": os.cpu_count(), "threads": THREADS, "load_average_start": load_start,
                 "load_average_end": os.getloadavg(), "wall_s": wall, "quick": args.quick,
                 "models": {n: a["label"] for n, a in p["assets"].items() if a}, "corpus": p["assets"]["cost"]["corpus"],
                 "k": k, "s": s, "params": p["cost_params"], "honest_params": p["honest_params"]},
        "cost": {"tiny": cost, "tiny_other_kernels": cost_k, "smollm2": lora_cost if lora_cost else (lora or {}).get("skipped")},
        "detection": detection,
        "false_rejects": {"submissions": honest_subs, "audits": sum(v["submissions"] for v in false.values()), "total": false_total, "by": false},
        "network": {"tiny": network(cost), **({"smollm2": network(lora_cost)} if lora_cost else {})},
        "bytes": {"tiny": {"same_path": bytes_of(trainer, validator, cost_ids), "other_kernels": bytes_of(trainer, validator_k, cost_ids)},
                  **({"smollm2": {"same_path": bytes_of(lora["trainer"], lora["validator"], list(lora["trainer"]["results"]))}} if lora_cost else {})},
        "detection_replayed_steps": validator["replayed_steps"],
    }  # fmt: skip
    print_report(report, err)
    if args.json:
        print(json.dumps(report, indent=1))


def print_report(r: dict, out) -> None:
    def w(line: str = "") -> None:
        print(line, file=out)

    m = r["meta"]
    w(f"\n{m['cpu']}, {m['cores']} cores; torch {m['torch']}; trainer {m['kernel_path']}, other kernels {m['other_kernel_path']}; "
      f"every role its own process, {m['threads']} threads; load average {m['load_average_start'][0]:.2f} -> {m['load_average_end'][0]:.2f}; "
      f"wall {m['wall_s']:.0f} s")  # fmt: skip
    w("models: " + "; ".join(f"{n}: {label}" for n, label in m["models"].items()) + f"; corpus {Path(m['corpus']).name}")
    pp = m["params"]
    w(f"Params: k {m['k']}, s {m['s']}, batch {pp['batch_size']} x seq {pp['seq_len']}, lr {pp['learning_rate_micro']}e-6, "
      f"step_tolerance_ppm {pp['step_tolerance_ppm']}, audit_heldout_windows {pp['audit_heldout_windows']}, "
      f"max_state_bytes {pp['max_state_bytes']:,}")  # fmt: skip

    for name, c in (("tiny GPT", r["cost"]["tiny"]), ("tiny GPT, validator on other kernels", r["cost"]["tiny_other_kernels"]),
                    ("SmolLM2 LoRA", r["cost"]["smollm2"])):  # fmt: skip
        if not isinstance(c, dict):
            if c:
                w(f"\n1. cost, {name}: skipped ({c})")
            continue
        w(f"\n1. CPU per submission, {name} ({c['model']}; {c['submissions']} submissions; medians, CPU s)")
        w(f"   trainer (train_trajectory + save_delta + manifest)      {c['trainer_median_s']:>8.2f}   each " + " ".join(f"{x:.2f}" for x in c["trainer_cpu_s"]))
        for piece, v in c["trainer_pieces_s"].items():
            w(f"     {piece:<54}{v:>8.2f}")
        w(f"   validator: one Auditor.audit (s steps, endpoints, after)  {c['audit_median_s']:>8.2f}   each " + " ".join(f"{x:.2f}" for x in c["audit_cpu_s"]))
        for piece, v in c["validator_pieces_s"].items():
            w(f"     {piece:<54}{v:>8.2f}")
        w(f"   + base held-out loss, once per round ({c['base_loss_per_round_s']:.2f} s) / {c['submissions']} submissions  {c['base_loss_share_s']:>5.2f}")
        w(f"   validator per checked submission                        {c['validator_per_submission_s']:>8.2f}")
        w(f"   ratio validator / trainer: {c['ratio']:.3f}   (target <= 0.25; full recomputation was 0.72 for SmolLM2 at k = 4; "
          f"one plain step {c['plain_step_s'] * 1000:.0f} ms, one trainer held-out evaluation {c['heldout_s'] or 0:.2f} s)   verdicts {sorted(set(c['verdicts']))}")  # fmt: skip
        w("   ratio with n submissions sharing the round's base evaluation: "
          + ", ".join(f"n {n}: {v:.3f}" for n, v in c["ratio_by_round_size"].items()))  # fmt: skip

    w(f"\n2. detection of a trainer faking m of k = {m['k']} steps: {VALIDATORS} validators (own ed25519 keys, fresh beacon per round), s = {m['s']}")
    w(f"   {'f':>5}{'m':>4}{'rounds':>8}{'subs':>6}{'audits':>8}{'detected':>10}{'rate':>9}{'worst round':>13}{'formula':>9}"
      f"{'1 auditor':>11}{'formula':>9}")  # fmt: skip
    for d in r["detection"]:
        w(f"   {d['f']:>5}{d['m']:>4}{d['rounds']:>8}{d['submissions']:>6}{d['audits']:>8}{d['detected']:>10}{d['rate']:>9.2%}"
          f"{d['min_round_rate']:>13.1%}{d['formula_detect_ppm'] / 1e4:>8.2f}%{d['single_auditor_rate']:>11.2%}{d['formula_single_ppm'] / 1e4:>8.2f}%")  # fmt: skip
    w(f"   (formula: 1 - audit.escape_probability_ppm(k, m, s, validators); each faked trajectory serves many (round, index, beacon) draws; "
      f"{r['detection_replayed_steps']} distinct steps replayed for real, repeats reuse their outcome; "
      f"fraud named at an unfaked step: {sum(d['fraud_at_unfaked_step'] for d in r['detection'])})")  # fmt: skip

    fr = r["false_rejects"]
    w(f"\n3. honest false rejects: {fr['total']} in {fr['audits']} audits of {fr['submissions']} honest submissions (k = {m['honest_params']['steps']}, "
      f"batch {m['honest_params']['batch_size']}, s = {m['honest_params']['audit_steps']})")  # fmt: skip
    for who, v in fr["by"].items():
        w(f"   {who:<62} {v['false_rejects']:>3} of {v['submissions']:>3}  (no gain {v['no_gain']}; step error max {v['max_error_ppm']} ppm, "
          f"median {v['median_error_ppm']}; {v['kernel_path']})")  # fmt: skip
        for line in v["rejects"]:
            w(f"      {line}")

    w("\n4. network-wide verification CPU / training CPU (per-audit CPU x auditors per submission / trainer CPU)")
    for model, n in r["network"].items():
        w(f"   {model}: " + "; ".join(f"{k} {v:.2f}" for k, v in n.items()))
    d01 = next((d for d in r["detection"] if d["f"] == 0.1), None)
    if d01:
        from abci_app.modules import audit

        w(f"   detection at f = 0.1 (m = {d01['m']}) by committee size (formula): "
          + ", ".join(f"c {c}: {(1_000_000 - audit.escape_probability_ppm(m['k'], d01['m'], m['s'], c)) / 1e4:.2f}%" for c in (1, 2, 4, 8, 16)))  # fmt: skip

    w("\n5. bytes per submission")
    for model, b in r["bytes"].items():
        for path, x in b.items():
            up = x["upload"]
            w(f"   {model}, {path}: trainer uploads {up['total']:,} ({up['states']:,} in k + 1 states of {x['state_file']:,}, delta {up['delta']:,}, "
              f"manifest {up['manifest']:,}); a validator fetched {x['download_median']:,.0f} (median; max {x['download_max']:,}; {x['files_median']:.0f} files)")  # fmt: skip


if __name__ == "__main__":
    main()
