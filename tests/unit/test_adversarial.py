"""Adversarial cases of issue 6, each with its outcome asserted.

1. Recomputation (abci_app.workers.recompute.judge, what every validator runs):
   honest work is accepted bit for bit; noise, a scaled delta, a delta copied
   from another trainer and one trained on a stale base are rejected.
2. The validator worker: a delta file whose bytes do not match the sha256 (or
   the CID) on chain is never recomputed, and the verdict is a rejection; an
   attestation the chain refuses as too late does not stop the daemon.
3. The chain: invalid training txs get their error code and change no state
   but the fee (and the nonce that paid it); verifiers pay for wrong votes and
   for missing ones that were needed, not for ones the chain would refuse.

The model is tiny-gpt's TEST_CONFIG from a random init and the corpus a
synthetic text written here, so nothing is downloaded or trained for long.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from abci_app import crypto, tx
from abci_app.client import TxRejected
from abci_app.ipfs.cid import cid_of_bytes, cid_of_file
from abci_app.ml import determinism, model
from abci_app.ml.corpus import Dataset, load_dataset
from abci_app.ml.family import LoadedModel, TinyGPT
from abci_app.modules import auth, bank, training
from abci_app.workers.recompute import MICRO, Trained, Work, delta_extra, judge, train_submission
from abci_app.workers.trainer import CHEATS
from abci_app.workers.validator import Validator
from tests.unit.conftest import fixed_key
from tests.unit.test_staking import cons_key
from tests.unit.test_training import CID, PARAMS, TrainingChain, attest, bond_all, cid, codes, sha, submit

# Small but real: k steps of AdamW on the assigned windows, the chain's default tolerance.
WORK_PARAMS = asdict(training.Params()) | {"steps": 3, "batch_size": 4, "seq_len": 32}
ROUND_SEED = hashlib.sha256(b"adversarial round seed").hexdigest()
ALICE = fixed_key(31).address  # the trainer whose submission is judged
BOB = fixed_key(32).address


def synthetic_corpus(path: Path) -> Path:
    """600 lines of pseudo-scripture: learnable structure, enough lines for a held-out split."""
    words = ("the lord said unto moses and aaron in the land of egypt saying this month shall be unto you "
             "the beginning of months it shall be the first month of the year to you").split()
    rng = random.Random(6)
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + "." for _ in range(600)]
    path.write_text("\n".join(lines) + "\n")
    return path


def work(trainer: str = ALICE, base_version: int = 0, round_id: int = 0, kernel_path: str = "", **params: int) -> Work:
    return Work(round_id, base_version, ROUND_SEED, trainer, DATA["dataset"].sha256, WORK_PARAMS | params, kernel_path)


DATA: dict = {}


@pytest.fixture(scope="module", autouse=True)
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One base model, one dataset, and the honest work of two trainers, shared by the module."""
    determinism.pin(2)  # as the workers do
    fam = TinyGPT()
    DATA["family"] = fam
    DATA["base"] = fam.build(model.TEST_CONFIG, seed=1)
    DATA["dataset"] = load_dataset(synthetic_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt"))
    DATA["alice"] = train_submission(fam, DATA["base"], DATA["dataset"], work(ALICE))
    DATA["bob"] = train_submission(fam, DATA["base"], DATA["dataset"], work(BOB))
    yield
    DATA.clear()


def fam() -> TinyGPT:
    return DATA["family"]


def base() -> LoadedModel:
    return DATA["base"]


def dataset() -> Dataset:
    return DATA["dataset"]


def honest(who: str = "alice") -> Trained:
    return DATA[who]


def tolerance_ppm() -> int:
    return WORK_PARAMS["tolerance_ppm"]


# --- 1. recomputation ----------------------------------------------------------------


def test_honest_delta_is_accepted_bit_for_bit() -> None:
    verdict = judge(fam(), base(), dataset(), work(ALICE), honest().delta)
    assert (verdict.accept, verdict.error_ppm, verdict.reason) == (True, 0, "")
    assert honest().heldout_after < honest().heldout_before  # k steps of honest work help


def test_random_noise_delta_is_rejected() -> None:
    noise = CHEATS["noise"](honest().delta)  # same shapes and scale as an honest delta, random direction
    verdict = judge(fam(), base(), dataset(), work(ALICE), noise)
    assert not verdict.accept
    assert verdict.error_ppm > 10 * tolerance_ppm() and verdict.reason.startswith("recomputation differs")


def test_honest_delta_scaled_by_ten_is_rejected() -> None:
    verdict = judge(fam(), base(), dataset(), work(ALICE), CHEATS["scale"](honest().delta))
    assert not verdict.accept
    assert abs(verdict.error_ppm - 9 * MICRO) <= 10  # ||10d - d|| / ||d|| = 9
    assert "relative L2 error 9" in verdict.reason


def test_delta_copied_from_another_trainer_is_rejected() -> None:
    """Bob's honest delta is honest for Bob's batch only: submitted as Alice's, it fails on Alice's batch."""
    assert judge(fam(), base(), dataset(), work(BOB), honest("bob").delta).accept
    verdict = judge(fam(), base(), dataset(), work(ALICE), honest("bob").delta)
    assert not verdict.accept
    assert verdict.error_ppm > 10 * tolerance_ppm() and verdict.reason.startswith("recomputation differs")


def test_delta_trained_on_a_stale_base_is_rejected() -> None:
    """Round 1 trains version 1; a trainer that trains version 0 again (its seed and batch right) is caught."""
    version1 = fam().apply(base(), honest().delta)
    round1 = work(ALICE, base_version=1, round_id=1)
    stale = train_submission(fam(), base(), dataset(), round1)
    verdict = judge(fam(), version1, dataset(), round1, stale.delta)
    assert not verdict.accept
    assert verdict.error_ppm > 10 * tolerance_ppm() and verdict.reason.startswith("recomputation differs")


def test_heldout_regression_is_not_accepted_even_within_tolerance() -> None:
    """The second check: with recomputation switched off (huge tolerance), a delta that wrecks the model is not accepted.
    It matches within that tolerance, so it is "no gain" (not merged, not slashed), not fraud (issue 12)."""
    wrecking = {n: torch.randn(t.shape, generator=torch.Generator().manual_seed(3)) * 0.5 for n, t in honest().delta.items()}
    verdict = judge(fam(), base(), dataset(), work(ALICE, tolerance_ppm=10**15), wrecking)
    assert not verdict.accept and verdict.no_gain and verdict.reason.startswith("no gain: held-out loss regressed")


def test_same_kernel_path_compares_by_hash() -> None:
    """On the trainer's own kernel path an honest recomputation is bitwise equal: a change far inside the
    tolerance (one weight nudged by one part in 1e4) is caught by hash there, and passes only across paths."""
    ours = determinism.kernel_path()
    honest_verdict = judge(fam(), base(), dataset(), work(ALICE, kernel_path=ours), honest().delta, kernel_path=ours)
    assert (honest_verdict.accept, honest_verdict.by_hash, honest_verdict.error_ppm) == (True, True, 0)
    nudged = dict(honest().delta)
    name = sorted(nudged)[0]
    nudged[name] = nudged[name].clone()
    nudged[name].view(-1)[0] *= 1 + 1e-4
    same = judge(fam(), base(), dataset(), work(ALICE, kernel_path=ours), nudged, kernel_path=ours)
    assert not same.accept and same.by_hash and same.error_ppm <= tolerance_ppm()
    assert same.reason.startswith(f"recomputation on the same kernel path {ours} differs")
    other = judge(fam(), base(), dataset(), work(ALICE, kernel_path="torch-0.0/DEFAULT/t2"), nudged, kernel_path=ours)
    assert other.accept and not other.by_hash
    unknown = judge(fam(), base(), dataset(), work(ALICE), nudged, kernel_path=ours)  # no path claimed: tolerance
    assert unknown.accept and not unknown.by_hash


# --- 2. the validator worker and the delta file ----------------------------------------


class FakeIpfs:
    """Serves bytes by CID, like a Kubo node; `served` may lie about what a CID holds."""

    def __init__(self, served: dict[str, bytes]):
        self.served = served
        self.requests: list[str] = []

    def cat_stream(self, cid: str, chunk_size: int = 1 << 20, timeout: float | None = None) -> Iterator[bytes]:
        self.requests.append(cid)
        data = self.served[cid]
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    def close(self) -> None:
        pass


class FakeChain:
    """The two calls a validator makes: read params, send an attestation."""

    def __init__(self, params: dict):
        self.params = params
        self.sent: list = []

    def query_json(self, path: str, data: str = ""):
        assert path == "/training/params", path
        return self.params

    def send(self, key, msg, **kwargs):
        self.sent.append(msg)

    def close(self) -> None:
        pass


@pytest.fixture
def delta_file(tmp_path: Path) -> tuple[Path, str, str]:
    """Alice's honest delta as the trainer writes it: (path, cid, sha256)."""
    path = tmp_path / "delta.safetensors"
    sha256 = fam().save_delta(path, honest().delta, base(), parent="0", extra=delta_extra(work(ALICE), honest(), determinism.kernel_path()))
    return path, cid_of_file(path), sha256


def make_validator(tmp_path: Path, served: dict[str, bytes]) -> Validator:
    """A Validator whose chain and IPFS are fakes, with the base model and dataset already loaded."""
    validator = Validator(fixed_key(1), "http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path / "worker")
    validator.chain.close()
    validator.ipfs.close()
    validator.chain, validator.ipfs = FakeChain(WORK_PARAMS), FakeIpfs(served)
    validator._models[0] = (fam(), base())
    validator._datasets[0] = ({"id": 0, "sha256": dataset().sha256}, dataset())
    return validator


ROUND = {"id": 0, "base_version": 0, "dataset_id": 0, "seed": ROUND_SEED, "phase": "verify"}


def submission(cid: str, sha256: str) -> dict:
    return {"round": 0, "index": 0, "trainer": ALICE, "cid": cid, "sha256": sha256, "status": "pending", "attestations": [],
            "kernel_path": determinism.kernel_path()}


def test_validator_accepts_the_honest_file(tmp_path: Path, delta_file: tuple[Path, str, str]) -> None:
    path, cid, sha256 = delta_file
    validator = make_validator(tmp_path, {cid: path.read_bytes()})
    verdict = validator.check(ROUND, submission(cid, sha256))
    assert (verdict.accept, verdict.error_ppm, verdict.by_hash) == (True, 0, True)  # same machine: same kernel path
    assert validator.cache.path_for(sha256, ".delta.safetensors").exists()  # verified, so cached


def test_validator_rejects_a_file_whose_sha256_differs(tmp_path: Path, delta_file: tuple[Path, str, str]) -> None:
    """The file behind the CID is a valid, honest delta, but not the one whose sha256 went on chain."""
    path, cid, sha256 = delta_file
    claimed = hashlib.sha256(b"another file").hexdigest()
    validator = make_validator(tmp_path, {cid: path.read_bytes()})
    verdict = validator.check(ROUND, submission(cid, claimed))
    assert not verdict.accept and verdict.error_ppm == 0
    assert verdict.reason.startswith(f"delta unusable: sha256 mismatch for {cid}: chain says {claimed[:12]}")  # reasons are cut at 120 chars
    assert not any(validator.cache.root.rglob("*"))  # nothing unverified is kept

    reports: list[str] = []
    validator.attest(ROUND, submission(cid, claimed), reports.append)
    (msg,) = validator.chain.sent
    assert isinstance(msg, tx.MsgAttest)
    assert (msg.round, msg.submission, msg.accept, msg.no_gain) == (0, 0, False, False) and "sha256 mismatch" in msg.reason
    assert "fraud (delta unusable: sha256 mismatch" in reports[0]


def test_a_late_attestation_does_not_stop_the_validator(tmp_path: Path, delta_file: tuple[Path, str, str]) -> None:
    """Verification ended while it recomputed: the chain refuses the attestation and the daemon carries on
    (it used to exit, leaving its validator absent, and penalized, from then on)."""
    path, cid, _ = delta_file
    validator = make_validator(tmp_path, {cid: path.read_bytes()})
    late = submission(cid, hashlib.sha256(b"x").hexdigest())  # a bad digest: a verdict without recomputing

    def refuse(codespace: str, code: int, log: str):
        def send(key, msg, **kwargs):
            raise TxRejected(codespace, code, log, "by the mempool")
        return send

    reports: list[str] = []
    validator.chain.send = refuse("training", 2, "round 0 is past verification (phase merge)")
    validator.attest(ROUND, late, reports.append)
    validator.chain.send = refuse("training", 1, "round 0 is not open (round 1 is in progress)")
    validator.attest(ROUND, late, reports.append)
    assert reports == [
        "round 0: submission 0: verification ended before our attestation (round 0 is past verification (phase merge))",
        "round 0: submission 0: verification ended before our attestation (round 0 is not open (round 1 is in progress))",
    ]
    validator.chain.send = refuse("bank", 7, "insufficient funds for fee")  # anything else still stops it, with the chain's reason
    with pytest.raises(TxRejected, match="insufficient funds"):
        validator.attest(ROUND, late, reports.append)


def test_validator_rejects_bytes_that_are_not_the_cid(tmp_path: Path, delta_file: tuple[Path, str, str]) -> None:
    """An IPFS node that serves other bytes under the submission's CID (sha256 right, content swapped)."""
    path, cid, sha256 = delta_file
    swapped = fam().save_delta(tmp_path / "other.safetensors", honest("bob").delta, base(), parent="0")
    assert swapped != sha256
    validator = make_validator(tmp_path, {cid: (tmp_path / "other.safetensors").read_bytes()})
    verdict = validator.check(ROUND, submission(cid, sha256))
    assert not verdict.accept and verdict.reason.startswith("delta unusable: bytes from IPFS do not match CID")


def test_validator_rejects_a_file_that_is_not_a_delta(tmp_path: Path) -> None:
    """CID and sha256 match, but the bytes are no checkpoint: rejected, not a crash."""
    junk = b"not a safetensors file at all"
    validator = make_validator(tmp_path, {cid_of_bytes(junk): junk})
    verdict = validator.check(ROUND, submission(cid_of_bytes(junk), hashlib.sha256(junk).hexdigest()))
    assert not verdict.accept and verdict.reason.startswith("delta unusable:")


# --- 3. the chain: invalid txs change nothing but the fee --------------------------------
# test_training.py has the codes; here each refusal is also checked against the whole state.

CHAIN_PARAMS = PARAMS | {"submission_blocks": 12, "verification_blocks": 20, "merge_blocks": 10}


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
    assert changed == {bank.balance_key(signer.address), bank.balance_key(bank.FEE_COLLECTOR), auth.nonce_key(signer.address)}
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
    net.block([submit(net, net.trainers[1]), submit(net, net.trainers[2])])
    refused(net, late, submit(net, late), 10)  # max_submissions reached

    while net.round()["phase"] == "submit":  # pending submissions keep the round verifying past the window
        net.block([])
    assert net.round()["phase"] == "verify"
    refused(net, late, submit(net, late), 2)  # outside the submission window


def test_invalid_attestations_change_nothing_but_the_fee(net: TrainingChain) -> None:
    bond_all(net)
    net.block([submit(net, net.trainers[0]), submit(net, net.trainers[1])])
    net.block([attest(net, net.vals[0], 0, True)])

    refused(net, net.trainers[2], attest(net, net.trainers[2], 0, False), 7)  # a bonded trainer is no validator
    refused(net, net.vals[0], attest(net, net.vals[0], 0, False), 8)  # a second verdict, even a changed one
    refused(net, net.vals[0], attest(net, net.vals[0], 5, True), 6)  # no such submission
    sub = net.round()["submission_list"][0]
    assert (sub["status"], sub["accept_power"], sub["reject_power"]) == ("pending", 10, 0)

    net.block([attest(net, net.vals[2], 0, True)])  # 30 of 40: accepted
    refused(net, net.vals[1], attest(net, net.vals[1], 0, True), 9)  # decided already
    merged = tx.MsgAttestMerge(round=0, cid=cid("merged"), sha256=sha("merged"), bytes=10, held_out_loss_micro=1_000_000)
    refused(net, net.vals[1], net.tx(net.vals[1], merged), 2)  # no merge before verification ends

    net.block([attest(net, v, 1, False) for v in net.vals])
    while net.round()["phase"] != "merge":
        net.block([])
    net.block([])  # staking syncs the powers the verifier penalties changed (training's end_block runs after staking's)
    refused(net, net.vals[1], attest(net, net.vals[1], 1, True), 2)  # verification is over
    refused(net, net.trainers[2], net.tx(net.trainers[2], merged), 7)  # only validators vote on a merge
    net.block([net.tx(net.vals[0], merged)])
    refused(net, net.vals[0], net.tx(net.vals[0], merged), 8)  # one merge vote per validator
    assert net.round()["phase"] == "merge" and [v["validator"] for v in net.round()["merge_votes"]] == [net.vals[0].address]


def test_lazy_verifiers_pay_only_where_their_vote_was_needed(net: TrainingChain) -> None:
    """Wrong always pays; absent pays on a submission that expired without a quorum, not on one the others
    decided (the chain refuses attestations after a quorum, so the slowest third could never have voted)."""
    bond_all(net)
    net.block([submit(net, t) for t in net.trainers])
    v0, v1, v2 = net.vals  # power 10, 10, 20
    net.block([attest(net, v0, 0, True), attest(net, v2, 0, True)])  # 0: accepted by 30 of 40; v1 never voted
    net.block([attest(net, v1, 1, False)])  # 1: 10 of 40, expires; v0 and v2 never voted
    net.block([attest(net, v1, 2, True), attest(net, v0, 2, False), attest(net, v2, 2, False)])  # 2: rejected; v1 wrong
    staked = {v.address: training.staking.get_validator(net.app.store.begin_block(), v.address).tokens for v in net.vals}
    while net.round(0)["phase"] in ("submit", "verify"):
        net.block([])
    assert [s["status"] for s in net.round(0)["submission_list"]] == ["accepted", "expired", "rejected"]
    after = {v.address: training.staking.get_validator(net.app.store.begin_block(), v.address).tokens for v in net.vals}
    once = {a: t - t * CHAIN_PARAMS["verifier_penalty_bps"] // 10_000 for a, t in staked.items()}
    assert after == once  # v0, v2: absent on 1; v1: wrong on 2 only (absent on 0, which it could not vote on after the quorum)


def test_trainer_loads_the_latest_version_before_a_round_opens(tmp_path: Path) -> None:
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
    loaded: list = []
    trainer.base_model = lambda version, p=None: loaded.append(("model", version, p["lora_rank"])) or (fam(), base())
    trainer.dataset = lambda dataset_id, family, model: loaded.append(("dataset", dataset_id)) or ({}, dataset())
    assert trainer.step(lambda line: None) is False
    assert loaded == [("model", 3, params["lora_rank"]), ("dataset", 0)]
    answers["/training/params"] = params | {"enabled": False}  # training off: nothing to prepare for
    loaded.clear()
    trainer.step(lambda line: None)
    assert loaded == []


def test_validator_evaluates_the_base_once_per_round(tmp_path: Path, delta_file: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The base's held-out loss is the same for every submission of a round: one evaluation, not one per check."""
    import abci_app.workers.validator as validator_module

    path, cid, sha256 = delta_file
    validator = make_validator(tmp_path, {cid: path.read_bytes()})
    evaluated: list = []
    real = validator_module.heldout_loss
    monkeypatch.setattr(validator_module, "heldout_loss", lambda *a: evaluated.append(a[1]) or real(*a))
    for _ in range(2):
        assert validator.check(ROUND, submission(cid, sha256)).accept
    assert evaluated == [base()]
    validator.check(ROUND | {"id": 1}, submission(cid, sha256))  # the next round evaluates its base again
    assert len(evaluated) == 2


def test_trainer_waits_for_its_bond_to_commit(tmp_path: Path) -> None:
    """The round opens on the first trainer's bond; another's bond may still be in the mempool. Training then
    would be wasted, and its submission, signed against committed state, would reuse the bond tx's nonce."""
    from types import SimpleNamespace

    from abci_app.workers.trainer import Trainer

    params = WORK_PARAMS | {"enabled": True, "min_trainer_bond": 1_000}
    bonds = {"now": 0}
    rnd = {"id": 0, "phase": "submit", "submit_until": 50, "base_version": 0, "dataset_id": 0, "seed": ROUND_SEED, "submission_list": []}
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
