"""Spot-checks off chain: what a trainer publishes of its trajectory, what an auditor checks of it, and how a
judge settles a fraud claim (the chain side is abci_app/modules/training.py and audit.py).

A trainer records states 0..k (`abci_app.ml.trajectory`), adds each state file
to IPFS, lists them in a manifest (`manifest_bytes`) and submits the
manifest's CID and sha256 with one gradient commitment per step. An auditor
recomputes only its sampled steps from the committed pre-states
(`Auditor.audit`) and ties the endpoints to the base and the submitted delta;
on the trainer's kernel path it compares hashes and returns the gradient
proofs that show it recomputed, elsewhere it compares within
`step_tolerance_ppm`. A judge recomputes one claimed step (`Auditor.judge`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abci_app.context import is_cid, is_sha256_hex
from abci_app.ml import checkpoint, train, trajectory
from abci_app.ml.checkpoint import CheckpointError
from abci_app.ml.corpus import Dataset
from abci_app.ml.family import LoadedModel, ModelFamily, State
from abci_app.modules import audit
from abci_app.modules.training import ACCEPT, CLAIM_DATASET_OFFSET, CLAIM_ENDPOINTS_OFFSET, CLAIM_UNAVAILABLE_OFFSET, FRAUD, NO_GAIN
from abci_app.workers.recompute import MICRO, Work, batch_at, heldout_loss, lr_of, to_micro

MANIFEST_FORMAT = "gradchain-trajectory/1"


class Unavailable(Exception):
    """A file the chain references could not be fetched within the fetch deadline."""


class DatasetUnavailable(Exception):
    """A dataset of the mix (not the trainer's file) that a step draws from could not be loaded: its owner's doing,
    which must never count against the trainer (training.CLAIM_DATASET_OFFSET)."""


class Mismatch(Exception):
    """A fetched file is not what the manifest or the chain says (hash, size, format, shape)."""


# (cid, sha256, suffix) -> a local file whose bytes have that CID and sha256; raises Unavailable or Mismatch.
Fetch = Callable[[str, str, str], Path]


# --- The trainer's side ------------------------------------------------------------------


def manifest_bytes(work: Work, kernel_path: str, states: list[tuple[str, str, int]]) -> bytes:
    """The trajectory manifest: canonical JSON listing states 0..k as (cid, sha256, bytes)."""
    doc = {
        "format": MANIFEST_FORMAT, "round": work.round_id, "trainer": work.trainer, "base_version": work.base_version,
        "steps": work.params["steps"], "kernel_path": kernel_path,
        "states": [{"cid": c, "sha256": s, "bytes": n} for c, s, n in states],
    }
    return checkpoint.canonical_json(doc).encode()


def parse_manifest(raw: bytes, work: Work) -> list[dict]:
    """The manifest's k + 1 state entries; Mismatch when it is not a manifest of this submission or a state is over the cap."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise Mismatch("the trajectory manifest is not JSON") from None
    steps, cap = work.params["steps"], work.params["max_state_bytes"]
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise Mismatch(f"the trajectory manifest is not a {MANIFEST_FORMAT} document")
    if (doc.get("round"), doc.get("trainer"), doc.get("base_version"), doc.get("steps")) != (work.round_id, work.trainer, work.base_version, steps):
        raise Mismatch("the trajectory manifest names another round, trainer, base or step count")
    states = doc.get("states")
    if not isinstance(states, list) or len(states) != steps + 1:
        raise Mismatch(f"the trajectory manifest lists {len(states) if isinstance(states, list) else 'no'} states, not {steps + 1}")
    for i, s in enumerate(states):
        if not (isinstance(s, dict) and isinstance(s.get("cid"), str) and is_cid(s["cid"]) and isinstance(s.get("sha256"), str)
                and is_sha256_hex(s["sha256"]) and isinstance(s.get("bytes"), int) and 0 < s["bytes"] <= cap):
            raise Mismatch(f"state {i} of the trajectory manifest is malformed or over max_state_bytes ({cap})")
    return states


@dataclass
class Trajectory:
    """What a trainer submits: the delta, the recorded states and proofs, and the held-out losses."""

    delta: State
    recorded: trajectory.Recorded
    heldout_before: float
    heldout_after: float
    faked_steps: list[int] = field(default_factory=list)

    @property
    def losses(self) -> list[float]:
        return self.recorded.losses

    def grad_commitments(self) -> bytes:
        return b"".join(audit.grad_commitment(p) for p in self.recorded.grad_proofs)


def train_trajectory(family: ModelFamily, base: LoadedModel, dataset: Dataset, work: Work, out_dir: Path, on_step=None,
                     faked_steps: Iterable[int] = (), base_loss: float | None = None) -> Trajectory:
    """k steps from `base` on the trainer's assigned batches, every state written to out_dir.

    `faked_steps` makes a cheating trainer (tests, benches, demonstrations): it skips those steps' compute,
    passes the pre-state on unchanged but for the step count, and commits a made-up gradient proof; the
    other steps are real, from the faked states on.
    """
    faked = sorted(set(faked_steps))
    model = family.clone(base)
    lr = lr_of(work)
    if not faked:
        from abci_app.workers.recompute import batches

        recorded = trajectory.record(family, model, batches(family, base, dataset, work), lr, out_dir, on_step=on_step)
        delta = family.delta(model, base)
    else:
        recorded = _record_faking(family, model, base, dataset, work, Path(out_dir), faked, on_step)
        delta = trajectory.delta_of(trajectory.initial_state(family, base), trajectory.read_state(
            recorded.state_paths[-1], work.params["max_state_bytes"], trajectory.trainable_shapes(family, base)))
    before = heldout_loss(family, base, dataset) if base_loss is None else base_loss
    after = heldout_loss(family, family.apply(base, delta), dataset)
    return Trajectory(delta, recorded, before, after, faked)


def _record_faking(family, model, base, dataset, work, out_dir: Path, faked: list[int], on_step) -> trajectory.Recorded:
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = trajectory.Recorded([], [], [], [], [], None)  # type: ignore[arg-type]
    state = trajectory.initial_state(family, base)

    def keep(i: int, st: State) -> None:
        path = out_dir / f"state-{i:04d}.safetensors"
        sha256, size = trajectory.write_state(path, st)
        rec.state_paths.append(path)
        rec.state_hashes.append(sha256)
        rec.state_sizes.append(size)

    keep(0, state)
    for i in range(work.params["steps"]):
        if i in faked:
            state = {n: (t + 1 if n.startswith("t/") else t.clone()) for n, t in state.items()}
            proof, loss = hashlib.sha256(b"made up %d" % i).digest(), float("nan")
        else:
            state, proof = trajectory.replay_step(family, model, state, batch_at(family, base, dataset, work, i), lr_of(work))
            loss = float("nan")
        rec.grad_proofs.append(proof)
        rec.losses.append(loss)
        keep(i + 1, state)
        if on_step is not None:
            on_step(i, loss, None)
    return rec


# --- The auditor's side -------------------------------------------------------------------


@dataclass(frozen=True)
class AuditResult:
    """An auditor's finding on one submission: what its AuditVerdict says."""

    verdict: str  # accept | no_gain | fraud
    steps: list[int]  # the sample it checked
    proofs: list[bytes]  # gradient proofs of the sampled steps, in sample order; empty off the trainer's kernel path
    fraud_step: int = 0
    error_ppm: int = 0  # worst per-step error measured (0 on the trainer's kernel path when bitwise equal)
    reason: str = ""

    @property
    def verdict_code(self) -> int:
        return (ACCEPT, NO_GAIN, FRAUD).index(self.verdict)


class _Bad(Exception):
    def __init__(self, step: int, reason: str, error_ppm: int = 0):
        super().__init__(reason)
        self.step, self.reason, self.error_ppm = step, reason, error_ppm


class Auditor:
    """Checks submissions of one round against one base (`family.for_training`-shaped) and dataset."""

    def __init__(self, family: ModelFamily, base: LoadedModel, dataset: Dataset, params: dict[str, Any], kernel_path: str, fetch: Fetch,
                 load_source: Callable[[str], Any] | None = None):
        """`load_source(sha256)`: the train tokens of a mixed dataset a step draws from and `dataset.sources` lacks
        (raises Unavailable when it cannot be fetched); None when `dataset` already holds every source."""
        self.family, self.base, self.dataset, self.params, self.kernel_path, self.fetch = family, base, dataset, params, kernel_path, fetch
        self.load_source = load_source
        self.shapes = trajectory.trainable_shapes(family, base)
        self.state0 = trajectory.initial_state(family, base)
        self.state0_hash = trajectory.state_hash(self.state0)
        self._work_model: LoadedModel | None = None
        self._base_loss: float | None = None

    @property
    def work_model(self) -> LoadedModel:
        if self._work_model is None:
            self._work_model = self.family.clone(self.base)  # one copy per round, reused by every replay
        return self._work_model

    def base_loss(self) -> float:
        if self._base_loss is None:
            self._base_loss = heldout_loss(self.family, self.base, self.dataset, self.params["audit_heldout_windows"])
        return self._base_loss

    def audit(self, work: Work, sub: dict, sample: list[int]) -> AuditResult:
        """Check the endpoints and recompute the sampled steps; a mismatch is fraud at that step (k: endpoints,
        k + 1: the trainer's files unavailable); a match is accept, or no gain when the held-out loss regressed. A step
        whose mixed dataset cannot be loaded is skipped, and unless another step or file shows fraud the verdict is
        k + 2, dataset unavailable: the trainer is not blamed for data its owner withholds unless the judges load it
        and find the skipped steps bad."""
        k = sub["steps"]
        proofs: list[bytes] = []
        worst = 0
        missing: DatasetUnavailable | None = None
        try:
            states = self._manifest(work, sub)
            delta = self._check_endpoints(sub, states)
            for i in sample:
                try:
                    error, proof = self._check_step(work, sub, states, i)
                except DatasetUnavailable as exc:
                    missing = missing or exc
                    continue
                worst = max(worst, error)
                proofs.append(proof)
        except _Bad as bad:
            return AuditResult(FRAUD, list(sample), [], bad.step, bad.error_ppm, bad.reason[:120])
        except Unavailable as exc:
            return AuditResult(FRAUD, list(sample), [], k + CLAIM_UNAVAILABLE_OFFSET, 0, f"unavailable: {exc}"[:120])
        except Mismatch as exc:
            return AuditResult(FRAUD, list(sample), [], k + CLAIM_ENDPOINTS_OFFSET, 0, f"files: {exc}"[:120])
        if missing is not None:
            return AuditResult(FRAUD, list(sample), [], k + CLAIM_DATASET_OFFSET, 0, f"dataset unavailable: {missing}"[:120])
        same_path = self.kernel_path == sub["kernel_path"]
        proofs = proofs if same_path else []
        before = self.base_loss()
        after = heldout_loss(self.family, self.family.apply(self.base, delta), self.dataset, self.params["audit_heldout_windows"])
        if to_micro(after) > to_micro(before) * (MICRO + self.params["max_heldout_regression_ppm"]) // MICRO:
            return AuditResult(NO_GAIN, list(sample), proofs, 0, worst, f"no gain: held-out loss {before:.4f} -> {after:.4f}")
        return AuditResult(ACCEPT, list(sample), proofs, 0, worst)

    def judge(self, work: Work, sub: dict, step: int, claimant_steps: list[int]) -> bool | None:
        """A dispute: True when the claimed step reproduces (the endpoints hold, the trainer's files are available,
        the claimant's steps reproduce on the drawn datasets), i.e. the claim is false; False when it holds; None
        (abstain) when a mixed dataset the claim needs cannot be loaded: a judge upholds nothing it could not check."""
        k = sub["steps"]
        try:
            if step == k + CLAIM_DATASET_OFFSET:
                # The data first (abstain without it), then the claimant's steps it could not check: served to the judges
                # only, the data must not let steps nobody recomputed through (a trainer and an owner in collusion).
                self._sources(work, claimant_steps)
            states = self._manifest(work, sub)
            if step == k + CLAIM_DATASET_OFFSET:
                for i in claimant_steps:
                    if work.step_sources and work.step_sources[i] != work.dataset_sha256:  # the claimant checked the others
                        self._check_step(work, sub, states, i)
            elif step < k:
                self._check_step(work, sub, states, step)
            elif step == k + CLAIM_ENDPOINTS_OFFSET:
                self._check_endpoints(sub, states)
            else:  # availability: the trainer's files the claimant needed for its sample (the datasets are k + 2's)
                self._delta(sub)
                for i in claimant_steps:
                    self._state(states, i)
                    if self.kernel_path != sub["kernel_path"]:
                        self._state(states, i + 1)
        except DatasetUnavailable:
            return None
        except (_Bad, Unavailable, Mismatch):
            return False
        return True

    # --- pieces ---

    def _manifest(self, work: Work, sub: dict) -> list[dict]:
        path = self.fetch(sub["trajectory_cid"], sub["trajectory_sha256"], ".trajectory.json")
        if path.stat().st_size > 1 << 20:
            raise Mismatch("the trajectory manifest is over 1 MiB")
        return parse_manifest(path.read_bytes(), work)

    def _state(self, states: list[dict], i: int) -> State:
        entry = states[i]
        path = self.fetch(entry["cid"], entry["sha256"], ".state.safetensors")
        try:
            return trajectory.read_state(path, self.params["max_state_bytes"], self.shapes)
        except trajectory.TrajectoryError as exc:
            raise Mismatch(f"state {i}: {exc}") from None

    def _delta(self, sub: dict) -> State:
        path = self.fetch(sub["cid"], sub["sha256"], ".delta.safetensors")
        try:
            delta, _ = self.family.load_delta(path, self.base)
        except CheckpointError as exc:
            raise Mismatch(f"delta: {exc}") from None
        return delta

    def _check_endpoints(self, sub: dict, states: list[dict]) -> State:
        """State 0 is the registered base with a fresh optimiser; the delta is exactly w_k - w_0. Returns the delta."""
        k = sub["steps"] + CLAIM_ENDPOINTS_OFFSET
        if states[0]["sha256"] != self.state0_hash:
            raise _Bad(k, "state 0 is not the registered base with a fresh optimiser")
        delta = self._delta(sub)
        expected = trajectory.delta_of(self.state0, self._state(states, len(states) - 1))
        if set(delta) != set(expected) or train.state_sha256(delta) != train.state_sha256(expected):
            raise _Bad(k, "the delta is not the last state's weights minus the base's")
        return delta

    def _sources(self, work: Work, steps: Iterable[int]) -> None:
        """Load the datasets `steps` draw from (only those: a dataset nobody serves concerns only the submissions whose
        sample draws from it); DatasetUnavailable when one cannot be fetched or read."""
        sources = getattr(self.dataset, "sources", None)
        if self.load_source is None or sources is None:
            return
        for i in steps:
            sha256 = work.step_sources[i] if work.step_sources else work.dataset_sha256
            if sha256 != work.dataset_sha256 and sha256 not in sources:
                try:
                    sources[sha256] = self.load_source(sha256)  # type: ignore[index]  (round_data's Mix holds a dict)
                except (Unavailable, Mismatch) as exc:
                    raise DatasetUnavailable(str(exc)) from None

    def _check_step(self, work: Work, sub: dict, states: list[dict], i: int) -> tuple[int, bytes]:
        """Recompute step i from its committed pre-state: (error ppm, gradient proof); _Bad(i) when it does not reproduce."""
        self._sources(work, [i])
        pre = self._state(states, i)
        post, proof = trajectory.replay_step(self.family, self.work_model, pre, batch_at(self.family, self.base, self.dataset, work, i), lr_of(work))
        if self.kernel_path == sub["kernel_path"]:
            if trajectory.state_hash(post) != states[i + 1]["sha256"]:
                raise _Bad(i, f"step {i} does not reproduce on the trainer's kernel path {sub['kernel_path']}")
            commitments = bytes.fromhex(sub["grad_commitments"])
            if audit.grad_commitment(proof) != commitments[audit.DIGEST_BYTES * i : audit.DIGEST_BYTES * (i + 1)]:
                raise _Bad(i, f"step {i}'s gradient is not the one the submission committed to")
            return 0, proof
        claimed = self._state(states, i + 1)
        error = trajectory.step_check_ppm(claimed, post, pre, lr_of(work))
        if error > self.params["step_tolerance_ppm"]:
            raise _Bad(i, f"step {i} differs by {error} ppm > step_tolerance_ppm {self.params['step_tolerance_ppm']}", error)
        return error, proof
