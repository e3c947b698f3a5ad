"""Spot-checks off chain (issue 12): an auditor recomputes only its sampled steps from the committed states.

Each adversarial trajectory of the issue, against a real tiny GPT: faked steps at the start, in the middle
and at the end; a correct final delta with a made-up trajectory; states that do not hash to the manifest;
withheld states; a state over the cap; and a judge that settles one claimed step.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from abci_app.ipfs.cid import cid_of_file
from abci_app.ml import determinism, trajectory
from abci_app.modules import audit, training
from abci_app.workers.recompute import Work
from abci_app.workers.spotcheck import Auditor, Mismatch, Unavailable, manifest_bytes, train_trajectory
from tests.unit.conftest import fixed_key, tiny_gpt

K = 8
PARAMS = asdict(training.Params()) | {"steps": K, "audit_steps": 3, "batch_size": 4, "seq_len": 32, "max_state_bytes": 1 << 20,
                                      "max_heldout_regression_ppm": 1_000_000}
SEED = hashlib.sha256(b"spotcheck round").hexdigest()
TRAINER = fixed_key(40).address


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_gpt(tmp_path_factory, seed=3)


class Store:
    """Content by CID, like IPFS: `withheld` CIDs time out."""

    def __init__(self):
        self.files: dict[str, Path] = {}
        self.withheld: set[str] = set()

    def add(self, path: Path) -> str:
        cid = cid_of_file(path)
        self.files[cid] = path
        return cid

    def fetch(self, cid: str, sha256: str, suffix: str) -> Path:
        if cid in self.withheld or cid not in self.files:
            raise Unavailable(f"{cid} not found in time")
        path = self.files[cid]
        if hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            raise Mismatch(f"{cid} does not hash to {sha256}")
        return path


def publish(tiny, tmp_path: Path, faked=(), edit_states=None, kernel_path=None, params=PARAMS, work=None):
    """Train (or fake) a trajectory, optionally edit the state files, add everything to the store: (store, work, sub, traj).

    `work` (another trainer, round or base) replaces TRAINER's work in round 0."""
    family, base, dataset = tiny
    kernel_path = kernel_path or determinism.kernel_path()
    work = work or Work(0, 0, SEED, TRAINER, dataset.sha256, params, kernel_path)
    traj = train_trajectory(family, base, dataset, work, tmp_path / "states", faked_steps=faked)
    if edit_states:
        edit_states(traj, tmp_path)
    store = Store()
    delta_path = tmp_path / "delta.safetensors"
    sha256 = family.save_delta(delta_path, traj.delta, base, parent="0")
    states = [(store.add(p), hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in traj.recorded.state_paths]
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(manifest_bytes(work, kernel_path, states))
    sub = {"round": work.round_id, "index": 0, "trainer": work.trainer, "steps": work.params["steps"], "cid": store.add(delta_path), "sha256": sha256,
           "trajectory_cid": store.add(manifest), "trajectory_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
           "kernel_path": kernel_path, "grad_commitments": traj.grad_commitments().hex()}
    return store, work, sub, traj


def auditor(tiny, store, kernel_path=None, params=PARAMS) -> Auditor:
    family, base, dataset = tiny
    return Auditor(family, base, dataset, params, kernel_path or determinism.kernel_path(), store.fetch)


def test_honest_work_passes_every_sample_and_proves_it(tiny, tmp_path):
    store, work, sub, traj = publish(tiny, tmp_path)
    result = auditor(tiny, store).audit(work, sub, list(range(K)))
    assert result.verdict in ("accept", "no_gain") and result.error_ppm == 0
    commitments = bytes.fromhex(sub["grad_commitments"])
    assert [audit.grad_commitment(p) for p in result.proofs] == [commitments[32 * i : 32 * i + 32] for i in range(K)]
    # The submitted delta is the one plain training gives.
    from abci_app.workers.recompute import train_delta

    family, base, dataset = tiny
    plain, _, _ = train_delta(family, base, dataset, work)
    assert all(torch.equal(plain[n], traj.delta[n]) for n in plain)


def test_another_kernel_path_compares_within_tolerance_and_proves_nothing(tiny, tmp_path):
    store, work, sub, _ = publish(tiny, tmp_path, kernel_path="torch-x/avx512/t2")
    result = auditor(tiny, store).audit(work, sub, [0, 5])
    assert result.verdict in ("accept", "no_gain") and result.proofs == [] and result.error_ppm <= PARAMS["step_tolerance_ppm"]


@pytest.mark.parametrize("faked", [[0], [4], [K - 1]], ids=["start", "middle", "end"])
def test_a_faked_step_is_fraud_when_sampled_and_invisible_otherwise(tiny, tmp_path, faked):
    store, work, sub, _ = publish(tiny, tmp_path, faked=faked)
    check = auditor(tiny, store)
    caught = check.audit(work, sub, [faked[0]])
    assert (caught.verdict, caught.fraud_step) == ("fraud", faked[0])
    others = [i for i in range(K) if i != faked[0]][:3]
    assert check.audit(work, sub, others).verdict != "fraud"  # the sample missed it: what sampling arithmetic is for
    assert check.judge(work, sub, faked[0], []) is False  # the dispute upholds the claim
    assert check.judge(work, sub, others[0], []) is True  # and refutes a claim on an honest step


def test_a_correct_delta_with_a_made_up_trajectory_is_caught_at_any_sampled_step(tiny, tmp_path):
    """The trainer trains honestly but publishes straight-line intermediate states with fresh moments."""
    family, base, dataset = tiny

    def interpolate(traj, tmp):
        first = trajectory.read_state(traj.recorded.state_paths[0], 1 << 20, trajectory.trainable_shapes(family, base))
        last = trajectory.read_state(traj.recorded.state_paths[-1], 1 << 20, trajectory.trainable_shapes(family, base))
        for i in range(1, K):
            made_up = {n: (first[n] + (last[n] - first[n]) * i / K if n.startswith("w/") else last[n]) for n in first}
            trajectory.write_state(traj.recorded.state_paths[i], made_up)

    store, work, sub, _ = publish(tiny, tmp_path, edit_states=interpolate)
    check = auditor(tiny, store)
    for step in (0, 3, K - 1):
        result = check.audit(work, sub, [step])
        assert (result.verdict, result.fraud_step) == ("fraud", step)


def test_files_that_do_not_match_are_an_endpoint_claim(tiny, tmp_path):
    """A state whose bytes are not what the manifest says; a state 0 that is not the base; a delta that is not w_k - w_0."""
    family, base, dataset = tiny
    store, work, sub, traj = publish(tiny, tmp_path)
    path = traj.recorded.state_paths[2]
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")  # the CID still names it, but its sha256 no longer matches
    result = auditor(tiny, store).audit(work, sub, [2])
    assert (result.verdict, result.fraud_step) == ("fraud", K)

    def shift_start(traj, tmp):
        first = trajectory.read_state(traj.recorded.state_paths[0], 1 << 20, trajectory.trainable_shapes(family, base))
        trajectory.write_state(traj.recorded.state_paths[0], {n: t + 1e-3 if n.startswith("w/") else t for n, t in first.items()})

    store, work, sub, _ = publish(tiny, tmp_path / "b", edit_states=shift_start)
    assert auditor(tiny, store).audit(work, sub, [5]).fraud_step == K

    store, work, sub, traj = publish(tiny, tmp_path / "c")
    scaled = tmp_path / "scaled.safetensors"
    sub["sha256"] = family.save_delta(scaled, {n: t * 1.01 for n, t in traj.delta.items()}, base, parent="0")
    sub["cid"] = store.add(scaled)
    result = auditor(tiny, store).audit(work, sub, [1])
    assert (result.verdict, result.fraud_step) == ("fraud", K) and "last state" in result.reason


def test_withheld_states_are_unavailable_and_over_cap_states_are_refused(tiny, tmp_path):
    store, work, sub, traj = publish(tiny, tmp_path)
    store.withheld.add(cid_of_file(traj.recorded.state_paths[3]))
    result = auditor(tiny, store).audit(work, sub, [3])
    assert (result.verdict, result.fraud_step) == ("fraud", K + 1)
    assert auditor(tiny, store).judge(work, sub, K + 1, [3]) is False
    assert auditor(tiny, store).judge(work, sub, K + 1, [4]) is True  # what that claimant needed is there

    small = PARAMS | {"max_state_bytes": traj.recorded.state_sizes[0] - 1}
    result = auditor(tiny, store, params=small).audit(Work(0, 0, SEED, TRAINER, work.dataset_sha256, small, work.kernel_path), sub, [4])
    assert (result.verdict, result.fraud_step) == ("fraud", K)  # the manifest lists states over the cap


def test_the_audit_sample_is_the_signers_and_unpredictable_to_the_trainer():
    """Deterministic per (validator, submission, beacon); different across validators and beacons."""
    message = audit.audit_message(0, 1, "ab" * 32, "cd" * 32)
    a, b = fixed_key(1), fixed_key(2)
    sample_a = audit.audit_sample(a.sign(message), 64, 12)
    assert sample_a == audit.audit_sample(a.sign(message), 64, 12) and len(set(sample_a)) == 12 and all(0 <= i < 64 for i in sample_a)
    assert sample_a != audit.audit_sample(b.sign(message), 64, 12)
    assert sample_a != audit.audit_sample(a.sign(audit.audit_message(0, 1, "ab" * 32, "ce" * 32)), 64, 12)
    assert sorted(audit.audit_sample(a.sign(message), 8, 8)) == list(range(8))  # s = k: full recomputation


def test_escape_probability_arithmetic():
    assert audit.escape_probability_ppm(64, 0, 12, 4) == 1_000_000
    assert audit.escape_probability_ppm(64, 64, 12, 1) == 0
    # k 64, m 6, s 12, 4 auditors: (C(58,12)/C(64,12))^4 ~ 0.0054
    assert 5_000 < audit.escape_probability_ppm(64, 6, 12, 4) < 6_000


def test_the_auditor_judges_gain_on_audit_heldout_windows(tiny, tmp_path, monkeypatch):
    """The held-out check of an audit evaluates `audit_heldout_windows` windows (base once per round), not the 64 a trainer reports."""
    store, work, sub, _ = publish(tiny, tmp_path)
    family = tiny[0]
    seen: list[int] = []
    real = type(family).evaluate_loss

    def counting(self, loaded, tokens, windows=64):
        seen.append(windows)
        return real(self, loaded, tokens, windows)

    monkeypatch.setattr(type(family), "evaluate_loss", counting)
    check = auditor(tiny, store, params=PARAMS | {"audit_heldout_windows": 5})
    check.audit(work, sub, [0])
    check.audit(work, sub, [1])
    assert seen == [5, 5, 5]  # the base once, each submission's result once
