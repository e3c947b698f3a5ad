"""Adversarial cases of issues 6 and 12, each with its outcome asserted.

1. The audit (abci_app.workers.spotcheck.Auditor, what a committee member
   runs; here often over every step, s = k): honest work passes with a proof of
   every step; a scaled or noise delta (at the endpoints), a delta copied from
   another trainer (at the endpoints, or at every step when its trajectory is
   copied too) and a trajectory from a stale base (state 0) are fraud; honest
   work that raises the held-out loss is no gain, not fraud; steps compare by
   hash on the trainer's kernel path and within step_tolerance_ppm elsewhere.
2. The workers: a delta whose bytes do not match the sha256 (or the CID) on
   chain, that is no delta, or that nobody serves is fraud at the endpoints
   (or unavailable) in the validator's sealed verdict; the validator evaluates
   the base once a round; the trainer loads the latest version before a round
   opens and waits for its bond to commit (test_workers_audit: the daemons).
3. The chain: invalid training txs (submissions, commits, reveals, judgements,
   sealed merge votes and their reveals) get their error code and change no
   state but the fee (and the nonce that paid it); judges pay for wrong judgements and for missing ones
   that were needed, not for ones the others made unnecessary.

The model is tiny-gpt's TEST_CONFIG from a random init and the corpus a
synthetic text (conftest's synthetic_corpus), so nothing is downloaded or trained for long.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from abci_app import crypto, tx
from abci_app.ipfs.cid import cid_of_bytes
from abci_app.ipfs.client import IpfsError
from abci_app.ml import determinism, trajectory
from abci_app.modules import audit, auth, bank, training
from abci_app.workers.recompute import Work
from abci_app.workers.spotcheck import Auditor
from abci_app.workers.trainer import CHEATS
from abci_app.workers.validator import Validator, load_openings
from tests.unit.conftest import fixed_key, tiny_gpt
from tests.unit.test_spotcheck import PARAMS as WORK_PARAMS
from tests.unit.test_spotcheck import K, SEED, TRAINER, auditor, publish
from tests.unit.test_staking import cons_key
from tests.unit.test_training import (CID, PARAMS, TrainingChain, audit_round, bond_all, cid, codes, commit, commit_merge, judge, reveal,
                                      reveal_merge, sealed_vote, sha, submit, tokens, until_phase, verdict)

# test_spotcheck's work: k = 8 AdamW steps on the assigned windows, s = 3 sampled, the chain's step tolerance.
ALICE = TRAINER  # the trainer whose submission is audited
BOB = fixed_key(32).address
VALIDATOR = fixed_key(1)
OTHER_VALIDATOR = fixed_key(2).address
BEACON = hashlib.sha256(b"adversarial beacon").hexdigest()
OTHER_PATH = "torch-0.0/DEFAULT/t2"  # a kernel path that is not this machine's


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """One base model and one dataset, shared by the module: (family, base, dataset)."""
    return tiny_gpt(tmp_path_factory, seed=1)


@pytest.fixture(scope="module")
def honest(tiny, tmp_path_factory: pytest.TempPathFactory):
    """Alice's honest submission, published once: (store, work, sub, trajectory)."""
    return publish(tiny, tmp_path_factory.mktemp("honest"))


def work_of(tiny, trainer: str, round_id: int = 0, base_version: int = 0) -> Work:
    return Work(round_id, base_version, SEED, trainer, tiny[2].sha256, WORK_PARAMS, determinism.kernel_path())


def with_delta(tiny, honest, delta, tmp_path: Path) -> dict:
    """Alice's submission with another delta file in place of hers; her states and commitments unchanged."""
    family, base, _ = tiny
    store, _, sub, _ = honest
    path = tmp_path / "other-delta.safetensors"
    sha256 = family.save_delta(path, delta, base, parent="0")
    return sub | {"cid": store.add(path), "sha256": sha256}


# --- 1. the audit -------------------------------------------------------------------


def test_honest_work_is_accepted_with_every_step_proven(tiny, honest) -> None:
    store, work, sub, traj = honest
    result = auditor(tiny, store).audit(work, sub, list(range(K)))  # s = k: full recomputation
    assert (result.verdict, result.fraud_step, result.error_ppm, result.reason) == ("accept", 0, 0, "")
    assert b"".join(audit.grad_commitment(p) for p in result.proofs) == bytes.fromhex(sub["grad_commitments"])  # bit for bit
    assert traj.heldout_after < traj.heldout_before  # k steps of honest work help


@pytest.mark.parametrize("cheat", ["scale", "noise"])
def test_a_scaled_or_noise_delta_is_fraud_at_the_endpoints(tiny, honest, tmp_path: Path, cheat: str) -> None:
    """Every published step is honest and reproduces, but the delta is not w_k - w_0: fraud at step k, whatever the sample."""
    store, work, sub, traj = honest
    cheating = with_delta(tiny, honest, CHEATS[cheat](traj.delta), tmp_path)
    check = auditor(tiny, store)
    for sample in ([], list(range(K))):
        result = check.audit(work, cheating, sample)
        assert (result.verdict, result.fraud_step, result.proofs) == ("fraud", K, []) and "last state" in result.reason
    assert check.judge(work, cheating, K, []) is False  # the endpoint claim holds in a dispute
    assert check.judge(work, sub, K, []) is True  # and is refuted against the honest delta


def test_a_delta_copied_from_another_trainer_is_fraud(tiny, tmp_path: Path) -> None:
    """Bob's honest work is honest for Bob's batches only. Alice submitting his delta over her own trajectory fails at
    the endpoints; submitting his whole trajectory (states, commitments, delta) fails at every step, on her batches,
    on either kernel path."""
    bob_store, bob_work, bob_sub, bob = publish(tiny, tmp_path / "bob", work=work_of(tiny, BOB))
    assert auditor(tiny, bob_store).audit(bob_work, bob_sub, list(range(K))).verdict == "accept"

    store, work, sub, _ = publish(tiny, tmp_path / "delta", edit_states=lambda traj, _: setattr(traj, "delta", bob.delta))
    result = auditor(tiny, store).audit(work, sub, [])
    assert (result.verdict, result.fraud_step) == ("fraud", K) and "last state" in result.reason

    def copy_trajectory(traj, _) -> None:
        for mine, his in zip(traj.recorded.state_paths, bob.recorded.state_paths):
            mine.write_bytes(his.read_bytes())
        traj.recorded.grad_proofs[:] = bob.recorded.grad_proofs
        traj.delta = bob.delta

    store, work, sub, _ = publish(tiny, tmp_path / "all", edit_states=copy_trajectory)
    check = auditor(tiny, store)
    assert check.audit(work, sub, []).verdict == "accept"  # the endpoints alone hold: state 0 is the base, the delta w_k - w_0
    for step in range(K):
        same = check.audit(work, sub, [step])
        assert (same.verdict, same.fraud_step) == ("fraud", step) and "does not reproduce" in same.reason
        other = check.audit(work, sub | {"kernel_path": OTHER_PATH}, [step])
        assert (other.verdict, other.fraud_step) == ("fraud", step) and other.error_ppm > WORK_PARAMS["step_tolerance_ppm"]


def test_a_trajectory_from_a_stale_base_is_fraud(tiny, honest, tmp_path: Path) -> None:
    """Round 1 trains version 1 (version 0 plus Alice's round-0 delta). A trainer that trains version 0 again, on round 1's
    batches and labels, publishes steps that all reproduce from its states, but a state 0 that is not the registered base."""
    family, base, dataset = tiny
    round1 = work_of(tiny, ALICE, round_id=1, base_version=1)
    store, _, sub, _ = publish(tiny, tmp_path, work=round1)  # trained from tiny's base: version 0
    assert auditor(tiny, store).audit(round1, sub, list(range(K))).verdict == "accept"  # honest work, on the wrong base
    version1 = Auditor(family, family.apply(base, honest[3].delta), dataset, WORK_PARAMS, determinism.kernel_path(), store.fetch)
    for sample in ([], [0, 5]):
        result = version1.audit(round1, sub, sample)
        assert (result.verdict, result.fraud_step, result.reason) == ("fraud", K, "state 0 is not the registered base with a fresh optimiser")


def test_honest_work_that_raises_the_heldout_loss_is_no_gain_not_fraud(tiny, tmp_path: Path) -> None:
    """Issue 12: steps that reproduce are no fraud, whatever the held-out loss; one that rose beyond
    max_heldout_regression_ppm is no gain (not merged, not slashed). An over-large learning rate makes such honest
    steps; compared within step_tolerance_ppm (another kernel path), as by hash (test_honest_work)."""
    params = WORK_PARAMS | {"learning_rate_micro": 1_000_000, "max_heldout_regression_ppm": training.Params().max_heldout_regression_ppm}
    store, work, sub, traj = publish(tiny, tmp_path, params=params)
    assert traj.heldout_after > traj.heldout_before * 1.05
    result = auditor(tiny, store, params=params).audit(work, sub | {"kernel_path": OTHER_PATH}, list(range(K)))
    assert (result.verdict, result.fraud_step, result.proofs) == ("no_gain", 0, [])
    assert result.error_ppm <= params["step_tolerance_ppm"] and result.reason.startswith("no gain: held-out loss")


def test_the_trainers_kernel_path_compares_by_hash_another_within_tolerance(tiny, tmp_path: Path) -> None:
    """On the trainer's kernel path an honest replay is bitwise equal: a state nudged far inside the tolerance (one weight
    by one part in 1e4) is caught by hash there, on the step into it and the step out of it. Across paths (or with no
    path claimed) the same trajectory passes within step_tolerance_ppm, and the verdict proves nothing."""
    family, base, _ = tiny

    def nudge(traj, _) -> None:
        path = traj.recorded.state_paths[3]
        state = trajectory.read_state(path, WORK_PARAMS["max_state_bytes"], trajectory.trainable_shapes(family, base))
        weights = state[sorted(n for n in state if n.startswith("w/"))[0]].view(-1)
        weights[int(weights.abs().argmax())] *= 1 + 1e-4
        trajectory.write_state(path, state)

    store, work, sub, _ = publish(tiny, tmp_path, edit_states=nudge)
    check = auditor(tiny, store)
    for step in (2, 3):
        result = check.audit(work, sub, [step])
        assert (result.verdict, result.fraud_step, result.proofs) == ("fraud", step, [])
        assert result.reason.startswith(f"step {step} does not reproduce on the trainer's kernel path {sub['kernel_path']}")
    assert check.audit(work, sub, [0, 1, 4]).verdict == "accept"  # the sample missed it: what sampling arithmetic is for
    for claimed in (OTHER_PATH, ""):
        result = check.audit(work, sub | {"kernel_path": claimed}, list(range(K)))
        assert (result.verdict, result.proofs) == ("accept", []) and 0 < result.error_ppm <= WORK_PARAMS["step_tolerance_ppm"]


# --- 2. the validator worker and the files ------------------------------------------


class FakeIpfs:
    """Serves bytes by CID, like a Kubo node: `served` may lie about what a CID holds, and a CID it lacks times out.
    `add` publishes a file, as a trainer does."""

    def __init__(self, served: dict[str, bytes] | None = None):
        self.served = dict(served or {})
        self.requests: list[str] = []
        self.pinned: list[str] = []

    def cat_stream(self, cid: str, chunk_size: int = 1 << 20, timeout: float | None = None) -> Iterator[bytes]:
        self.requests.append(cid)
        if cid not in self.served:
            raise IpfsError(f"{cid} not found within {timeout}s")
        data = self.served[cid]
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    def add(self, path: Path) -> str:
        data = Path(path).read_bytes()
        self.served[cid_of_bytes(data)] = data
        return cid_of_bytes(data)

    def pin_add(self, cid: str, timeout: float | None = None) -> None:
        """Pin content it serves (a merge voter pins the accepted deltas); what it lacks times out."""
        if cid not in self.served:
            raise IpfsError(f"{cid} not found within {timeout}s")
        self.pinned.append(cid)

    def close(self) -> None:
        pass


class FakeChain:
    """A node as the workers see it: `answers` to queries by path (the params always), and the txs they send.
    `before_send(msg)` runs first, and may raise what the chain would."""

    def __init__(self, params: dict, answers: dict | None = None):
        self.params, self.answers = params, dict(answers or {})
        self.sent: list = []
        self.before_send = None

    def query_json(self, path: str, data: str = ""):
        return self.params if path == "/training/params" else self.answers[path]

    def send(self, key, msg, **kwargs):
        if self.before_send is not None:
            self.before_send(msg)
        self.sent.append(msg)
        return SimpleNamespace(height=len(self.sent))

    def close(self) -> None:
        pass


def served_by(store) -> dict[str, bytes]:
    """What an IPFS node holding test_spotcheck's Store serves."""
    return {cid: path.read_bytes() for cid, path in store.files.items()}


def make_validator(tiny, home: Path, served: dict[str, bytes], params: dict = WORK_PARAMS) -> Validator:
    """VALIDATOR's daemon on a fake chain and IPFS, with version 0 and dataset 0 (tiny's) already loaded."""
    family, base, dataset = tiny
    validator = Validator(VALIDATOR, "http://127.0.0.1:9", "http://127.0.0.1:9", home)
    validator.chain.close()
    validator.ipfs.close()
    validator.chain, validator.ipfs = FakeChain(params), FakeIpfs(served)
    validator._models[0] = (family, base)
    validator._datasets[0] = ({"id": 0, "sha256": dataset.sha256}, dataset)
    return validator


def round_view(subs: list[dict], phase: str = "commit", **fields) -> dict:
    """/training/current for round 0 (test_spotcheck's seed) in `phase`: VALIDATOR and OTHER_VALIDATOR snapshotted,
    both on the committee of each submission that names none."""
    members = [[VALIDATOR.address, 10], [OTHER_VALIDATOR, 10]]
    return {"id": 0, "base_version": 0, "dataset_id": 0, "seed": SEED, "phase": phase, "beacon": BEACON, "powers": members,
            "auditors": [VALIDATOR.address, OTHER_VALIDATOR], "committed": [], "revealed": [], "judged": [], "merge_committed": [], "merge_votes": [],
            "submission_list": [{"committee": members, "verdicts": [], "claims": []} | s for s in subs]} | fields


def seal(validator: Validator, subs: list[dict]) -> tuple[list, list[str]]:
    """The validator's commit phase on `subs`: (the verdicts it sealed under HOME/audits, its reports)."""
    rnd = round_view(subs)
    validator.chain.answers["/training/current"] = rnd
    reports: list[str] = []
    assert validator.step(reports.append) is False
    assert [type(m) for m in validator.chain.sent] == [tx.MsgCommitVerdicts]
    return list([v for chunk in load_openings(validator.sealed_path(rnd)) for v in chunk.verdicts]), reports


def verdict_of(sealed) -> tuple[str, int]:
    return training.VERDICTS[sealed.verdict], sealed.fraud_step


def test_validator_seals_accept_on_the_honest_files(tiny, honest, tmp_path: Path) -> None:
    store, _, sub, _ = honest
    validator = make_validator(tiny, tmp_path, served_by(store))
    (sealed,), reports = seal(validator, [sub])
    assert verdict_of(sealed) == ("accept", 0) and len(sealed.step_proofs) == WORK_PARAMS["audit_steps"]
    assert sealed.measured_error_ppm == 0 and "accept; compared by hash, proofs attached" in reports[0]
    assert validator.cache.path_for(sub["sha256"], ".delta.safetensors").exists()  # verified, so cached


def test_a_delta_whose_sha256_differs_is_fraud_at_the_endpoints(tiny, honest, tmp_path: Path) -> None:
    """The file behind the CID is Alice's honest delta, but not the one whose sha256 went on chain."""
    store, _, sub, _ = honest
    claimed = hashlib.sha256(b"another file").hexdigest()
    validator = make_validator(tiny, tmp_path, served_by(store))
    (sealed,), reports = seal(validator, [sub | {"sha256": claimed}])
    assert verdict_of(sealed) == ("fraud", K) and list(sealed.step_proofs) == []
    assert sealed.reason.startswith(f"files: sha256 mismatch for {sub['cid']}: chain says {claimed[:12]}")  # reasons are cut at 120 chars
    assert f"fraud at step {K} (files: sha256 mismatch" in reports[0]
    cached = [p for p in validator.cache.root.rglob("*") if p.is_file()]
    assert cached and all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name.split(".")[0] for p in cached)  # nothing unverified is kept


def test_bytes_that_are_not_the_cid_are_fraud_at_the_endpoints(tiny, honest, tmp_path: Path) -> None:
    """An IPFS node that serves other bytes (a valid delta: Alice's, scaled) under the submission's CID."""
    family, base, _ = tiny
    store, _, sub, traj = honest
    swapped = tmp_path / "other.safetensors"
    family.save_delta(swapped, CHEATS["scale"](traj.delta), base, parent="0")
    validator = make_validator(tiny, tmp_path / "home", served_by(store) | {sub["cid"]: swapped.read_bytes()})
    (sealed,), _ = seal(validator, [sub])
    assert verdict_of(sealed) == ("fraud", K) and sealed.reason.startswith(f"files: bytes from IPFS do not match CID {sub['cid']}")


def test_a_file_that_is_not_a_delta_is_fraud_at_the_endpoints(tiny, honest, tmp_path: Path) -> None:
    """CID and sha256 match, but the bytes are no checkpoint: fraud, not a crash."""
    store, _, sub, _ = honest
    junk = b"not a safetensors file at all"
    validator = make_validator(tiny, tmp_path, served_by(store) | {cid_of_bytes(junk): junk})
    (sealed,), _ = seal(validator, [sub | {"cid": cid_of_bytes(junk), "sha256": hashlib.sha256(junk).hexdigest()}])
    assert verdict_of(sealed) == ("fraud", K) and sealed.reason.startswith("files: delta: ")


def test_a_delta_nobody_serves_in_time_is_unavailable(tiny, honest, tmp_path: Path) -> None:
    store, _, sub, _ = honest
    served = served_by(store)
    del served[sub["cid"]]
    validator = make_validator(tiny, tmp_path, served)
    (sealed,), _ = seal(validator, [sub])
    assert verdict_of(sealed) == ("fraud", K + 1) and sealed.reason.startswith(f"unavailable: {sub['cid']} not found")


# --- 3. the chain: invalid txs change nothing but the fee --------------------------------
# test_training.py has the codes; here each refusal is also checked against the whole state.

CHAIN_PARAMS = PARAMS | {"submission_blocks": 16, "verification_blocks": 20, "reveal_blocks": 12, "dispute_blocks": 12, "merge_blocks": 10}


@pytest.fixture
def net(tmp_path: Path) -> Iterator[TrainingChain]:
    """test_training's chain (validators of power 10, 10, 20; three trainers) with windows long enough
    for a refusal per block, plus three more funded accounts (`extra`)."""
    vals = [fixed_key(i) for i in range(1, 4)]
    trainers = [fixed_key(i) for i in range(10, 13)]
    extra = [fixed_key(i) for i in range(20, 23)]
    chain = TrainingChain(
        tmp_path / "app", {k.address: 100_000 for k in vals + trainers + extra},
        staking={"params": {"min_self_bond": 100, "power_unit": 100, "downtime_max_missed": 1000},
                 "validators": [{"operator": v.address, "pubkey": cons_key(i).hex(), "self_bond": b} for i, (v, b) in enumerate(zip(vals, [1_000, 1_000, 2_000]))]},
        datasets={"datasets": [{"name": "kjv", "cid": CID, "sha256": sha("corpus"), "licence": "public-domain", "bytes": 100, "tokens": 100, "tokenizer": "bytes"}]},
        registry={"versions": [{"cid": cid("v0"), "sha256": sha("v0"), "bytes": 10, "family": "tiny-gpt", "config": {"n_layer": 1}, "dataset_ids": [0], "licence": "Apache-2.0"}]},
        training={"params": CHAIN_PARAMS},
    )
    chain.vals, chain.trainers, chain.extra = vals, trainers, extra
    yield chain
    chain.app.close()


def snapshot(net) -> dict[bytes, bytes]:
    return dict(net.app.store.begin_block().iter_prefix(b""))


def refused(net, signer: crypto.PrivateKey, raw: bytes, code: int) -> None:
    """`raw` fails with training code `code`; the signer paid its fee and used its nonce, nothing else moved."""
    before = snapshot(net)
    result = net.block([raw])
    assert codes(result) == [("training", code)], result.tx_results[0].log
    assert result.tx_results[0].log
    after = snapshot(net)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {bank.balance_key(signer.address), bank.balance_key(bank.FEE_COLLECTOR), auth.nonce_key(crypto.address_raw(signer.address))}
    fee = int(before[bank.balance_key(signer.address)]) - int(after[bank.balance_key(signer.address)])
    assert fee == 1 and int(after[bank.balance_key(bank.FEE_COLLECTOR)]) - int(before.get(bank.balance_key(bank.FEE_COLLECTOR), b"0")) == fee


def test_invalid_submissions_change_nothing_but_the_fee(net: TrainingChain) -> None:
    small, outsider, late = net.extra
    net.block([net.tx(small, tx.MsgBondTrainer(amount=CHAIN_PARAMS["min_trainer_bond"] - 1)), net.tx(late, tx.MsgBondTrainer(amount=1_000))])
    bond_all(net)
    net.block([submit(net, net.trainers[0])])

    refused(net, outsider, submit(net, outsider), 3)  # never bonded
    refused(net, small, submit(net, small), 3)  # bonded, but below min_trainer_bond
    refused(net, net.trainers[0], submit(net, net.trainers[0], tag="second delta"), 4)  # one submission per round
    refused(net, net.trainers[1], submit(net, net.trainers[1], round_id=1), 1)  # a round that is not open
    refused(net, net.trainers[1], submit(net, net.trainers[1], steps=CHAIN_PARAMS["steps"] + 1), 5)  # not k steps
    refused(net, net.trainers[1], submit(net, net.trainers[1], state_bytes=CHAIN_PARAMS["max_state_bytes"] + 1), 5)  # a state file over the cap
    refused(net, net.trainers[1], submit(net, net.trainers[1], grad_commitments=b"\0" * 32 * (CHAIN_PARAMS["steps"] - 1)), 5)  # a step uncommitted
    refused(net, net.trainers[1], submit(net, net.trainers[1], trajectory_sha256="AB" * 32), 5)  # no trajectory digest
    net.block([submit(net, net.trainers[1]), submit(net, net.trainers[2])])
    refused(net, late, submit(net, late), 10)  # max_submissions reached, and a smaller bond evicts none

    until_phase(net, "commit")
    refused(net, late, submit(net, late), 2)  # outside the submission window: committees are drawn


def test_invalid_audit_txs_change_nothing_but_the_fee(net: TrainingChain) -> None:
    """Commits, reveals, judgements, sealed merge votes and their reveals the chain refuses (was: invalid attestations) pay the fee only."""
    bond_all(net)
    net.block([submit(net, net.trainers[0]), submit(net, net.trainers[1])])
    until_phase(net, "commit")
    v0, v1, v2 = net.vals
    outsider = net.trainers[2]
    sealed = {v0: [verdict(net, v0, 0), verdict(net, v0, 1)], v1: [verdict(net, v1, 0), verdict(net, v1, 1)],
              v2: [verdict(net, v2, 0), verdict(net, v2, 1, "fraud", fraud_step=4)]}
    refused(net, v0, reveal(net, v0, sealed[v0]), 2)  # nothing is revealed before every auditor had its chance to commit
    refused(net, outsider, commit(net, outsider, []), 7)  # a bonded trainer sits on no committee
    refused(net, v0, net.tx(v0, tx.MsgCommitVerdicts(round=0, commitment=b"\1" * 31)), 13)  # not a sha256
    refused(net, v0, commit(net, v0, sealed[v0], round_id=1), 1)
    net.block([commit(net, v0, sealed[v0]), commit(net, v1, sealed[v1])])
    refused(net, v0, commit(net, v0, []), 8)  # a second commitment, even a changed one
    net.block([commit(net, v2, sealed[v2])])
    assert net.round()["phase"] == "reveal"
    refused(net, v2, commit(net, v2, []), 2)  # committing is over
    refused(net, outsider, reveal(net, outsider, []), 14)  # committed nothing
    refused(net, v0, reveal(net, v0, sealed[v1]), 13)  # a copy of another's verdicts opens nothing
    refused(net, v0, reveal(net, v0, sealed[v0], salt=b"\2" * 32), 13)  # nor another salt
    net.block([reveal(net, v0, sealed[v0])])
    refused(net, v0, reveal(net, v0, sealed[v0]), 8)  # once
    refused(net, v1, judge(net, v1, [(1, 4, True)]), 2)  # no dispute yet
    merged = tx.MsgAttestMerge(round=0, cid=cid("merged"), sha256=sha("merged"), bytes=10, held_out_loss_micro=1_000_000)
    refused(net, v1, net.tx(v1, merged), 2)  # no merge before verification ends

    net.block([reveal(net, v1, sealed[v1]), reveal(net, v2, sealed[v2])])
    assert net.round()["phase"] == "dispute"
    refused(net, v1, reveal(net, v1, sealed[v1]), 2)  # revealing is over
    refused(net, outsider, judge(net, outsider, [(1, 4, True)]), 7)  # only the snapshot's validators judge
    refused(net, v0, judge(net, v0, [(1, 3, True)]), 6)  # no claim on step 3
    refused(net, v0, judge(net, v0, [(1, 4, True), (1, 4, False)]), 5)  # one claim judged twice in one tx
    net.block([judge(net, v0, [(1, 4, True)]), judge(net, v1, [(1, 4, True)])])
    refused(net, v0, judge(net, v0, [(1, 4, False)]), 8)  # one judgement per validator per round
    sub = net.round()["submission_list"][1]
    assert (sub["status"], sub["claims"][0]["valid_power"], sub["claims"][0]["invalid_power"]) == ("pending", 20, 0)

    net.block([judge(net, v2, [(1, 4, True)])])  # everyone judged: the claim is refuted
    assert net.round()["phase"] == "merge"
    net.block([])  # staking syncs the powers the verifier penalties changed (training's end_block runs after staking's)
    refused(net, v2, judge(net, v2, [(1, 4, True)]), 2)  # judging is over
    refused(net, v0, reveal_merge(net, v0, merged), 2)  # no merge vote is public before every validator could seal its own
    refused(net, outsider, commit_merge(net, outsider, merged), 7)  # only validators vote on a merge
    refused(net, v0, net.tx(v0, tx.MsgCommitMerge(round=0, commitment=b"\1" * 31)), 13)  # not a sha256
    refused(net, v0, commit_merge(net, v0, merged, round_id=1), 1)
    guess = tx.MsgAttestMerge(round=0, cid=cid("guess"), sha256=sha("guess"), bytes=10, held_out_loss_micro=1)
    net.block([commit_merge(net, v0, merged), commit_merge(net, v1, guess)])
    refused(net, v0, commit_merge(net, v0, guess), 8)  # one sealed merge vote per validator, even a changed one
    until_phase(net, "merge_reveal")  # v2 never committed: the commit window ran out
    refused(net, v2, commit_merge(net, v2, merged), 2)  # committing is over
    refused(net, outsider, reveal_merge(net, outsider, merged), 7)
    refused(net, v2, reveal_merge(net, v2, merged), 14)  # nothing sealed, nothing to reveal
    refused(net, v1, reveal_merge(net, v1, merged), 13)  # v1 sealed a guess: it cannot switch to the file v0 sealed
    refused(net, v1, net.tx(v1, sealed_vote(v0, guess)), 13)  # nor open its commitment with another salt
    net.block([reveal_merge(net, v0, merged)])
    refused(net, v0, reveal_merge(net, v0, merged), 8)  # one merge vote per validator
    assert net.round()["phase"] == "merge_reveal" and [v["validator"] for v in net.round()["merge_votes"]] == [v0.address]


def test_lazy_judges_pay_only_where_their_vote_was_needed(net: TrainingChain) -> None:
    """(Was: lazy verifiers, with one MsgAttest per submission.) A judge against a decided claim always pays; one
    absent from a claim pays only where the claim stayed undecided, not where the others decided it; a false claim
    and a valid verdict on an upheld fraud pay their own penalties, once each."""
    bond_all(net)
    net.block([submit(net, t) for t in net.trainers])
    v0, v1, v2 = net.vals  # power 10, 10, 20
    k = CHAIN_PARAMS["steps"]
    audit_round(net, {v0: {0: ("fraud", 2), 1: "accept", 2: ("fraud", k)},
                      v1: {0: "accept", 1: ("fraud", k), 2: "accept"},
                      v2: {0: "accept", 1: "accept", 2: ("fraud", k)}})
    assert net.round()["phase"] == "dispute"
    staked = {v: tokens(net, v) for v in net.vals}
    net.block([judge(net, v0, [(2, k, False)]),  # v0 stays away from claims 0/2 and 1/k
               judge(net, v1, [(0, 2, True), (1, k, False), (2, k, True)]),
               judge(net, v2, [(0, 2, True), (2, k, False)])])  # v2 stays away from 1/k
    rnd = net.round(0)
    assert [(s["status"], [c["outcome"] for c in s["claims"]]) for s in rnd["submission_list"]] == [
        ("accepted", ["refuted"]), ("expired", ["undecided"]), ("rejected", ["upheld"])]

    def after(stake: int, *bps: int) -> int:
        for b in bps:
            stake -= stake * b // 10_000
        return stake

    false, wrong, accepted_fraud = CHAIN_PARAMS["false_claim_penalty_bps"], CHAIN_PARAMS["verifier_penalty_bps"], CHAIN_PARAMS["fraud_proof_slash_bps"]
    assert {v: tokens(net, v) for v in net.vals} == {
        v0: after(staked[v0], false, wrong),  # its false claim on 0; absent on the undecided 1/k (not on 2, which it judged)
        v1: after(staked[v1], accepted_fraud, wrong),  # accepted 2 with bad endpoints, then judged the proven fraud valid
        v2: after(staked[v2], wrong),  # absent on the undecided 1/k only
    }


def test_trainer_loads_the_latest_version_before_a_round_opens(tiny, tmp_path: Path) -> None:
    """A SmolLM2 pull and load takes many blocks: the trainer does it while waiting, not inside the submission window."""
    from abci_app.workers.trainer import Trainer

    params = WORK_PARAMS | {"enabled": True, "dataset_id": 0}
    answers = {"/training/current": None, "/registry/latest": {"id": 3}, "/training/params": params}

    class Chain(FakeChain):
        def query_json(self, path: str, data: str = ""):
            return answers[path]

    trainer = Trainer(fixed_key(2), "http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path / "trainer")
    trainer.chain.close()
    trainer.ipfs.close()
    trainer.chain = Chain(params)
    family, base, dataset = tiny
    loaded: list = []
    trainer.base_model = lambda version, p=None: loaded.append(("model", version, p["lora_rank"])) or (family, base)
    trainer.dataset = lambda dataset_id, family, model: loaded.append(("dataset", dataset_id)) or ({}, dataset)
    assert trainer.step(lambda line: None) is False
    assert loaded == [("model", 3, params["lora_rank"]), ("dataset", 0)]
    answers["/training/params"] = params | {"enabled": False}  # training off: nothing to prepare for
    loaded.clear()
    trainer.step(lambda line: None)
    assert loaded == []


def test_validator_evaluates_the_base_once_per_round(tiny, honest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The base's held-out loss is the same for every submission of a round: one evaluation, not one per audit."""
    import abci_app.workers.spotcheck as spotcheck

    _, base, _ = tiny
    store, _, sub, _ = honest
    validator = make_validator(tiny, tmp_path, served_by(store))
    evaluated: list = []
    real = spotcheck.heldout_loss
    monkeypatch.setattr(spotcheck, "heldout_loss", lambda *a: evaluated.append(a[1]) or real(*a))
    sealed, _ = seal(validator, [sub, sub | {"index": 1}])
    assert [verdict_of(s) for s in sealed] == [("accept", 0), ("accept", 0)]
    assert len(evaluated) == 3 and sum(m is base for m in evaluated) == 1  # the base once, each submission's result once
    rnd = round_view([sub])
    this_round = validator.auditor(rnd)[0]
    assert validator.auditor(rnd)[0] is this_round  # kept from commit to dispute
    next_round = validator.auditor(rnd | {"id": 1})[0]
    assert next_round is not this_round
    next_round.base_loss()
    next_round.base_loss()
    assert sum(m is base for m in evaluated) == 2  # the next round evaluates its base again, once


def test_trainer_waits_for_its_bond_to_commit(tmp_path: Path) -> None:
    """The round opens on the first trainer's bond; another's bond may still be in the mempool. Training then
    would be wasted, and its submission, signed against committed state, would reuse the bond tx's nonce."""
    from abci_app.workers.trainer import Trainer

    params = WORK_PARAMS | {"enabled": True, "min_trainer_bond": 1_000}
    bonds = {"now": 0}
    rnd = {"id": 0, "phase": "submit", "submit_until": 50, "base_version": 0, "dataset_id": 0, "seed": SEED, "submission_list": []}
    answers = {"/training/current": rnd, "/training/params": params}

    class Chain(FakeChain):
        rpc = SimpleNamespace(latest_height=lambda: 10)

        def query_json(self, path: str, data: str = ""):
            if path == "/training/trainer_bond":
                return {"bonded": bonds["now"], "locked": 0, "unbonding": 0} if bonds["now"] else None
            return answers[path]

    trainer = Trainer(fixed_key(2), "http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path / "trainer")
    trainer.chain.close()
    trainer.ipfs.close()
    trainer.chain = Chain(params)
    submitted: list = []
    trainer.submit = lambda r, p, report: submitted.append(r["id"])
    reports: list[str] = []
    for _ in range(2):
        assert trainer.step(reports.append) is False
    assert submitted == [] and reports == ["round 0: waiting for a trainer bond of 1000 (have 0; `gradchain tx staking bond-trainer`)"]
    bonds["now"] = 1_000
    trainer.step(reports.append)
    assert submitted == [0]
