"""Per-step training states and one-step replay (issue 12): abci_app.ml.trajectory, recompute.batch_at.

The tiny test GPT trains k = 6 steps; every step replays bit for bit from its
recorded pre-state, here and in a fresh process; the states are files with one
encoding; the endpoints tie to the delta today's train_delta submits.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from abci_app.ml import determinism, model, train
from abci_app.ml import trajectory as tj
from abci_app.ml.corpus import load_dataset
from abci_app.ml.family import TinyGPT
from abci_app.modules import training
from abci_app.workers.recompute import Work, batch_at, batches, lr_of, train_delta

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6
PARAMS = asdict(training.Params()) | {"steps": STEPS, "batch_size": 4, "seq_len": 32}
CAP = 10**8  # bytes: far above a TEST_CONFIG state (~0.5 MB)



def synthetic_corpus(path: Path) -> Path:
    """600 lines of pseudo-scripture: learnable structure, enough lines for a held-out split."""
    words = "in the beginning god created the heaven and the earth and the earth was without form and void".split()
    rng = random.Random(12)
    path.write_text("".join(" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + ".\n" for _ in range(600)))
    return path


# A fresh process: rebuild state 0, replay every recorded step from its file, report hashes and proofs.
REPLAY_SCRIPT = """
import json, sys
from safetensors.torch import load_file
from abci_app.ml import determinism, model, trajectory as tj
from abci_app.ml.family import TinyGPT

determinism.pin(2)
spec = json.loads(open(sys.argv[1]).read())
family = TinyGPT()
work = family.build(model.TEST_CONFIG, seed=1)
shapes = tj.trainable_shapes(family, work)
batches = load_file(spec["batches"])
out = {"initial": tj.state_hash(tj.initial_state(family, work)), "reread": [], "posts": [], "proofs": []}
for i, path in enumerate(spec["paths"]):
    pre = tj.read_state(path, spec["cap"], shapes)
    out["reread"].append(tj.state_hash(pre))
    if i < len(spec["paths"]) - 1:
        post, proof = tj.replay_step(family, work, pre, (batches[f"x{i}"], batches[f"y{i}"]), spec["lr"])
        out["posts"].append(tj.state_hash(post))
        out["proofs"].append(proof.hex())
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    determinism.pin(2)
    family = TinyGPT()
    base = family.build(model.TEST_CONFIG, seed=1)
    root = tmp_path_factory.mktemp("trajectory")
    dataset = load_dataset(synthetic_corpus(root / "corpus.txt"))
    work = Work(0, 0, hashlib.sha256(b"trajectory round").hexdigest(), "trainer-a", dataset.sha256, PARAMS)
    steps = batches(family, base, dataset, work)
    trained = family.clone(base)
    recorded = tj.record(family, trained, steps, lr_of(work), root / "states")
    return family, base, dataset, work, steps, trained, recorded


@pytest.fixture(scope="module")
def fresh_process(setup, tmp_path_factory):
    """What REPLAY_SCRIPT reports from another process (another PYTHONHASHSEED, cwd and environment order)."""
    family, base, dataset, work, steps, trained, recorded = setup
    root = tmp_path_factory.mktemp("fresh")
    save_file({f"{xy}{i}": t.contiguous() for i, b in enumerate(steps) for xy, t in zip("xy", b)}, root / "batches.safetensors")
    spec = {"paths": [str(p) for p in recorded.state_paths], "batches": str(root / "batches.safetensors"), "lr": lr_of(work), "cap": CAP}
    (root / "spec.json").write_text(json.dumps(spec))
    env = dict(reversed(list(os.environ.items()))) | {"PYTHONHASHSEED": "77", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", REPLAY_SCRIPT, str(root / "spec.json")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_every_step_replays_bit_for_bit_from_its_recorded_pre_state(setup):
    family, base, dataset, work, steps, trained, recorded = setup
    assert len(recorded.state_paths) == len(recorded.state_hashes) == len(recorded.state_sizes) == STEPS + 1
    assert len(recorded.grad_proofs) == len(recorded.losses) == STEPS
    assert all(len(p) == 32 for p in recorded.grad_proofs) and len(set(recorded.grad_proofs)) == STEPS
    assert len(set(recorded.state_hashes)) == STEPS + 1
    shapes = tj.trainable_shapes(family, base)
    work_model = family.clone(base)
    for i in range(STEPS):
        pre = tj.read_state(recorded.state_paths[i], CAP, shapes)
        assert tj.state_hash(pre) == recorded.state_hashes[i]
        post, proof = tj.replay_step(family, work_model, pre, batch_at(family, base, dataset, work, i), lr_of(work))
        assert (tj.state_hash(post), proof) == (recorded.state_hashes[i + 1], recorded.grad_proofs[i]), f"step {i}"
        assert tj.step_error_ppm(post, tj.read_state(recorded.state_paths[i + 1], CAP, shapes), pre) == 0


def test_every_step_replays_bit_for_bit_in_a_fresh_process(setup, fresh_process):
    _, _, _, _, _, _, recorded = setup
    assert fresh_process["initial"] == recorded.state_hashes[0]
    assert fresh_process["reread"] == recorded.state_hashes
    assert fresh_process["posts"] == recorded.state_hashes[1:]
    assert fresh_process["proofs"] == [p.hex() for p in recorded.grad_proofs]


def test_a_tampered_pre_state_gives_another_post_state(setup):
    family, base, dataset, work, steps, trained, recorded = setup
    shapes = tj.trainable_shapes(family, base)
    pre = tj.read_state(recorded.state_paths[3], CAP, shapes)
    name = "w/" + sorted(shapes)[0]
    pre[name] = pre[name].clone()
    pre[name].view(-1)[0] += 1e-3
    post, proof = tj.replay_step(family, family.clone(base), pre, steps[3], lr_of(work))
    assert tj.state_hash(post) != recorded.state_hashes[4]
    assert proof != recorded.grad_proofs[3]


def test_state_0_replayed_as_step_0_is_the_first_step_of_a_fresh_optimizer(setup):
    family, base, dataset, work, steps, trained, recorded = setup
    fresh = family.clone(base)
    state_0 = tj.initial_state(family, fresh)
    assert tj.state_hash(state_0) == recorded.state_hashes[0]
    params = tj.trainable_parameters(family, fresh)
    after: list = []
    family.train_steps(fresh, steps[:1], lr_of(work), on_step=lambda i, loss, opt: after.append((tj._state_of(params, opt), tj.grad_proof(params))))
    replayed, proof = tj.replay_step(family, family.clone(base), state_0, steps[0], lr_of(work))
    assert (tj.state_hash(replayed), proof) == (tj.state_hash(after[0][0]), after[0][1]) == (recorded.state_hashes[1], recorded.grad_proofs[0])


def test_the_submitted_delta_is_unchanged_and_equals_w_k_minus_w_0(setup):
    family, base, dataset, work, steps, trained, recorded = setup
    today, losses, _ = train_delta(family, base, dataset, work)
    assert train.state_sha256(family.delta(trained, base)) == train.state_sha256(today)
    assert recorded.losses == losses
    shapes = tj.trainable_shapes(family, base)
    first, last = (tj.read_state(recorded.state_paths[i], CAP, shapes) for i in (0, STEPS))
    assert train.state_sha256(tj.delta_of(first, last)) == train.state_sha256(today)


def test_batch_at_is_the_step_s_batch_of_batches(setup):
    family, base, dataset, work, steps, trained, recorded = setup
    for i in range(STEPS):
        x, y = batch_at(family, base, dataset, work, i)
        assert torch.equal(x, steps[i][0]) and torch.equal(y, steps[i][1])
    with pytest.raises(ValueError, match="outside the submission's 6 steps"):
        batch_at(family, base, dataset, work, STEPS)
    assert lr_of(work) == PARAMS["learning_rate_micro"] / 1_000_000


def test_a_state_file_has_one_encoding(setup, fresh_process, tmp_path):
    family, base, dataset, work, steps, trained, recorded = setup
    state = tj.read_state(recorded.state_paths[2], CAP, tj.trainable_shapes(family, base))
    blob = tj.state_file_bytes(state)
    assert blob == tj.state_file_bytes(dict(reversed(list(state.items())))) == recorded.state_paths[2].read_bytes()
    assert tj.write_state(tmp_path / "again.safetensors", state) == (hashlib.sha256(blob).hexdigest(), len(blob))
    assert (tmp_path / "again.safetensors").read_bytes() == blob
    assert fresh_process["reread"][2] == tj.state_hash(state)  # re-encoded in another process


def test_read_state_refuses_oversize_corrupt_and_misshapen_files(setup, tmp_path):
    family, base, dataset, work, steps, trained, recorded = setup
    shapes = tj.trainable_shapes(family, base)
    path, size = recorded.state_paths[1], recorded.state_sizes[1]
    assert tj.read_state(path, size, shapes)
    with pytest.raises(tj.TrajectoryError, match=f"state file is {size} bytes, over the cap of {size - 1}"):
        tj.read_state(path, size - 1, shapes)
    state = tj.read_state(path, CAP, shapes)
    name = sorted(shapes)[0]
    wrong_shape = state | {f"m/{name}": torch.zeros(3, 3)}
    extra = state | {"w/intruder": torch.zeros(2)}
    missing = {n: t for n, t in state.items() if n != f"v/{name}"}
    wrong_dtype = state | {f"t/{name}": torch.tensor(1.0, dtype=torch.float64)}
    for label, bad, reason in [("shape", wrong_shape, "has shape"), ("extra", extra, "unexpected"),
                               ("missing", missing, "missing"), ("dtype", wrong_dtype, "dtype")]:  # fmt: skip
        tj.write_state(tmp_path / f"{label}.safetensors", bad)
        with pytest.raises(tj.TrajectoryError, match=reason):
            tj.read_state(tmp_path / f"{label}.safetensors", CAP, shapes)
    (tmp_path / "junk.safetensors").write_bytes(b"\x10" + bytes(100))
    with pytest.raises(tj.TrajectoryError, match="corrupt state file"):
        tj.read_state(tmp_path / "junk.safetensors", CAP, shapes)
    with pytest.raises(tj.TrajectoryError, match="cannot read state file"):
        tj.read_state(tmp_path / "absent.safetensors", CAP, shapes)
    with pytest.raises(tj.TrajectoryError, match="not a w/, m/, v/ or t/ tensor"):
        tj.state_file_bytes({"x/a": torch.zeros(1)})
    with pytest.raises(tj.TrajectoryError, match="pre-state: tensor names differ"):
        tj.replay_step(family, family.clone(base), missing, steps[1], lr_of(work))


def test_step_error_is_zero_for_equal_states_and_large_for_another_batch(setup):
    family, base, dataset, work, steps, trained, recorded = setup
    shapes = tj.trainable_shapes(family, base)
    work_model = family.clone(base)
    for i in (0, STEPS - 1):
        pre = tj.read_state(recorded.state_paths[i], CAP, shapes)
        honest = tj.read_state(recorded.state_paths[i + 1], CAP, shapes)
        assert tj.step_error_ppm(honest, honest, pre) == 0
        other_batch, _ = tj.replay_step(family, work_model, pre, steps[(i + 1) % STEPS], lr_of(work))
        assert tj.step_error_ppm(other_batch, honest, pre) > 100_000  # > 10%: measured 1.3e6 at step 0, 1.8e5 at step 5
        nudged = dict(honest)
        name = "m/" + sorted(shapes)[0]
        nudged[name] = honest[name] * 1.01
        assert 0 < tj.step_error_ppm(nudged, honest, pre) <= 10_000
        later = honest | {f"t/{n}": honest[f"t/{n}"] + 1 for n in shapes}
        assert tj.step_error_ppm(later, honest, pre) == tj.MAX_ERROR_PPM


def test_step_check_holds_honest_steps_to_their_own_moments_and_catches_a_scaled_update(setup):
    family, base, dataset, work, steps, trained, recorded = setup
    shapes = tj.trainable_shapes(family, base)
    lr = lr_of(work)
    for i in (0, STEPS - 1):
        pre = tj.read_state(recorded.state_paths[i], CAP, shapes)
        honest = tj.read_state(recorded.state_paths[i + 1], CAP, shapes)
        assert tj.implied_update_error_ppm(honest, pre, lr) == 0  # torch's own arithmetic, on the kernels that made it
        assert tj.step_check_ppm(honest, honest, pre, lr) == 0
        scaled = honest | {f"w/{n}": pre[f"w/{n}"] + (honest[f"w/{n}"] - pre[f"w/{n}"]) * 1.01 for n in shapes}
        assert 9_000 < tj.step_check_ppm(scaled, honest, pre, lr) <= 10_001
        moments = honest | {f"v/{n}": honest[f"v/{n}"] * 1.01 for n in shapes}
        assert 9_000 < tj.step_check_ppm(moments, honest, pre, lr) <= 10_001
        assert tj.implied_update_error_ppm(honest, honest, lr) == tj.MAX_ERROR_PPM  # the step count must be pre's + 1
