"""The workers in a round that draws from two admitted datasets: the trainer trains on exactly the chain's draw,
an auditor rebuilds the same batches and accepts, an auditor that ignores the mix finds the steps do not reproduce,
and the merge voter pins the accepted deltas the new version's provenance names. A dataset nobody serves costs
only the submissions whose sample draws from it a "dataset unavailable" verdict (k + 2, not the trainer's fault), is
never fetched otherwise, and makes a judge abstain rather than uphold a claim it could not check."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from abci_app import tx
from abci_app.ipfs.cid import cid_of_bytes
from abci_app.ml.corpus import load_dataset
from abci_app.modules import training
from abci_app.workers.recompute import Mix, batch_at, round_work
from abci_app.workers.trainer import Trainer
from abci_app.workers.validator import load_openings
from tests.unit.conftest import fixed_key, tiny_gpt
from tests.unit.test_adversarial import OTHER_VALIDATOR, FakeChain, FakeIpfs, make_validator, round_view, verdict_of
from tests.unit.test_spotcheck import K, PARAMS, SEED, TRAINER

MIX = [[0, 1], [1, 1]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return tiny_gpt(tmp_path_factory, seed=2)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory):
    """A second dataset: other text, so another sha256 and other tokens."""
    path = tmp_path_factory.mktemp("other") / "other.txt"
    path.write_bytes(OTHER_TEXT)
    return load_dataset(path)


OTHER_TEXT = "".join(f"Proverb {i}: a soft answer turneth away wrath, but grievous words stir up anger.\n" for i in range(400)).encode()
OTHER_ENTRY = {"id": 1, "cid": cid_of_bytes(OTHER_TEXT), "sha256": hashlib.sha256(OTHER_TEXT).hexdigest()}


def loaded(worker, tiny, other) -> None:
    family, base, dataset = tiny
    worker._models[0] = (family, base)
    worker._datasets[0] = ({"id": 0, "sha256": dataset.sha256}, dataset)
    worker._datasets[1] = ({"id": 1, "sha256": other.sha256}, other)


def test_both_sides_of_a_mixed_round_build_the_chains_draw(tiny, other, tmp_path: Path) -> None:
    drawn = training.draw_steps(SEED, TRAINER, MIX, K)
    assert sorted(set(drawn)) == [0, 1]  # this seed and trainer draw from both datasets
    trainer = Trainer(fixed_key(40), "http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path / "trainer")
    trainer.chain.close()
    trainer.ipfs.close()
    trainer.chain, trainer.ipfs = FakeChain(PARAMS), FakeIpfs()
    loaded(trainer, tiny, other)
    rnd = {"id": 0, "base_version": 0, "dataset_id": 0, "seed": SEED, "mix": MIX}
    trainer.submit(rnd, PARAMS, lambda line: None)
    (msg,) = trainer.chain.sent
    assert isinstance(msg, tx.MsgSubmitDelta)

    family, base, dataset = tiny
    _, data, sha256_of = trainer.round_data(rnd, family, base)
    assert isinstance(data, Mix) and sha256_of == {0: dataset.sha256, 1: other.sha256}
    # Step i's windows come from the dataset the chain drew for it (the tokens of the other text differ).
    for i, d in enumerate(drawn):
        x, _ = batch_at(family, base, data, _work(rnd, trainer.address, dataset.sha256, sha256_of), i)
        source = other if d == 1 else dataset
        assert any((source.train[j : j + x.shape[1]].long() == x[0]).all() for j in range(source.train.numel() - x.shape[1]))

    sub = {"round": 0, "index": 0, "trainer": TRAINER, "steps": msg.steps, "cid": msg.cid, "sha256": msg.sha256,
           "trajectory_cid": msg.trajectory_cid, "trajectory_sha256": msg.trajectory_sha256, "kernel_path": msg.kernel_path,
           "grad_commitments": msg.grad_commitments.hex()}
    audit_params = PARAMS | {"audit_steps": K}  # every step: both datasets' steps are recomputed
    mixed = make_validator(tiny, tmp_path / "mixed", trainer.ipfs.served, params=audit_params)
    loaded(mixed, tiny, other)
    assert verdict_of(_seal(mixed, round_view([sub], mix=MIX))) == ("accept", 0)

    blind = make_validator(tiny, tmp_path / "blind", trainer.ipfs.served, params=audit_params)  # reads no mix: the old rule
    loaded(blind, tiny, other)
    verdict, step = verdict_of(_seal(blind, round_view([sub])))
    assert verdict == "fraud" and drawn[step] == 1  # the first step it cannot reproduce drew from the other dataset


def test_the_merge_voter_pins_the_accepted_deltas(tiny, other, tmp_path: Path) -> None:
    validator = make_validator(tiny, tmp_path, {})
    loaded(validator, tiny, other)
    family, base, _ = tiny
    delta = {name: t * 0 for name, t in family.delta(base, base).items()}
    paths = []
    for i in range(2):
        path = tmp_path / f"d{i}.safetensors"
        sha256 = family.save_delta(path, delta, base, parent=f"0/{i}")
        paths.append((validator.ipfs.add(path), sha256))
    subs = [{"index": i, "trainer": TRAINER, "cid": c, "sha256": s} for i, (c, s) in enumerate(paths)]
    rnd = round_view(subs, phase="merge", accepted=[1], mix=MIX, aggregator="")
    vote = validator.merge_vote(rnd, lambda line: None)
    assert isinstance(vote, tx.MsgAttestMerge) and validator.ipfs.pinned == [paths[1][0]]  # the accepted one, not the other
    # A pin that fails is reported, and the vote goes on: the vote must not wait on a pin.
    del validator.ipfs.served[paths[1][0]]
    reports: list[str] = []
    assert validator.pin(paths[1][0], "round 0: accepted delta 1", reports.append) is False
    assert reports == [f"round 0: accepted delta 1: could not pin {paths[1][0]} ({paths[1][0]} not found within 30.0s)"]


def _work(rnd: dict, trainer: str, sha256: str, sha256_of: dict):
    return round_work(rnd, trainer, {"sha256": sha256}, PARAMS, "", sha256_of)


def _seal(validator, rnd: dict):
    validator.chain.answers["/training/current"] = rnd
    assert validator.step(lambda line: None) is False
    (sealed,) = [v for chunk in load_openings(validator.sealed_path(rnd)) for v in chunk.verdicts]
    return sealed


# --- a dataset nobody serves -------------------------------------------------------------

WITHHELD = {"id": 2, "cid": cid_of_bytes(b"never served"), "sha256": hashlib.sha256(b"never served").hexdigest()}
MIX3 = [[0, 100], [1, 100], [2, 1]]  # dataset 2 is admitted, but TRAINER's draw in this round takes no step from it


def on_chain(worker, entries: dict[int, dict]) -> None:
    """The worker's node answers /datasets/dataset by id (FakeChain answers one value per path)."""
    answer = worker.chain.query_json
    worker.chain.query_json = lambda path, data="": entries[int(data)] if path == "/datasets/dataset" else answer(path, data)


@pytest.fixture(scope="module")
def mixed(tiny, other, tmp_path_factory: pytest.TempPathFactory):
    """TRAINER's honest submission in a MIX3 round: (sub, what it published, the trainer's IPFS requests)."""
    assert sorted(set(training.draw_steps(SEED, TRAINER, MIX3, K))) == [0, 1]
    trainer = Trainer(fixed_key(40), "http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path_factory.mktemp("trainer"))
    trainer.chain.close()
    trainer.ipfs.close()
    trainer.chain, trainer.ipfs = FakeChain(PARAMS), FakeIpfs()
    loaded(trainer, tiny, other)
    on_chain(trainer, {2: WITHHELD})
    trainer.submit({"id": 0, "base_version": 0, "dataset_id": 0, "seed": SEED, "mix": MIX3}, PARAMS, lambda line: None)
    (msg,) = trainer.chain.sent
    sub = {"round": 0, "index": 0, "trainer": TRAINER, "steps": msg.steps, "cid": msg.cid, "sha256": msg.sha256,
           "trajectory_cid": msg.trajectory_cid, "trajectory_sha256": msg.trajectory_sha256, "kernel_path": msg.kernel_path,
           "grad_commitments": msg.grad_commitments.hex()}
    return sub, trainer.ipfs.served, trainer.ipfs.requests


def auditing(tiny, home: Path, served: dict[str, bytes], entry_1: dict = OTHER_ENTRY):
    """A validator that checks every step, with dataset 0 loaded and datasets 1 and 2 to fetch from `served`."""
    validator = make_validator(tiny, home, served, params=PARAMS | {"audit_steps": K})
    on_chain(validator, {1: entry_1, 2: WITHHELD})
    return validator


def test_a_trainer_fetches_only_the_datasets_its_draw_uses(mixed) -> None:
    _, _, requests = mixed
    assert WITHHELD["cid"] not in requests  # it trained and submitted although dataset 2 is served by nobody


UNREADABLE = b"\xff\xfe" * 500  # registered bytes that are no text: nobody can train on them either
UNREADABLE_ENTRY = {"id": 1, "cid": cid_of_bytes(UNREADABLE), "sha256": hashlib.sha256(UNREADABLE).hexdigest()}


@pytest.mark.parametrize("entry_1, served_1, reason", [
    (OTHER_ENTRY, {}, f"dataset unavailable: dataset 1: {OTHER_ENTRY['cid']} not found"),
    (UNREADABLE_ENTRY, {UNREADABLE_ENTRY["cid"]: UNREADABLE}, "dataset unavailable: dataset 1: 'utf-8' codec can't decode"),
], ids=["not-served", "not-text"])
def test_an_auditor_that_cannot_fetch_a_drawn_dataset_commits_a_dataset_unavailable_verdict(tiny, mixed, tmp_path: Path, entry_1, served_1, reason) -> None:
    """It is not stalled (and so not charged for an unrevealed seat): it seals k + 2, dataset unavailable, which the
    chain never holds against the trainer (k + 1 is for the trainer's own files); a dataset the submission does not draw
    from is never asked for."""
    sub, served, _ = mixed
    validator = auditing(tiny, tmp_path, served | served_1, entry_1)
    sealed = _seal(validator, round_view([sub], mix=MIX3))
    assert verdict_of(sealed) == ("fraud", K + training.CLAIM_DATASET_OFFSET)
    assert sealed.reason.startswith(reason)
    assert [type(m) for m in validator.chain.sent] == [tx.MsgCommitVerdicts]
    assert entry_1["cid"] in validator.ipfs.requests and WITHHELD["cid"] not in validator.ipfs.requests


def test_an_auditor_pins_a_dataset_it_fetches_and_accepts(tiny, mixed, tmp_path: Path) -> None:
    sub, served, _ = mixed
    validator = auditing(tiny, tmp_path, served | {OTHER_ENTRY["cid"]: OTHER_TEXT})
    assert verdict_of(_seal(validator, round_view([sub], mix=MIX3))) == ("accept", 0)
    assert validator.ipfs.pinned == [OTHER_ENTRY["cid"]]  # kept served for the other auditors and the judges
    assert WITHHELD["cid"] not in validator.ipfs.requests


@pytest.mark.parametrize("served_too", [False, True], ids=["withheld", "served"])
def test_a_judge_abstains_on_claims_that_need_a_drawn_dataset_nobody_serves(tiny, mixed, tmp_path: Path, served_too: bool) -> None:
    """Every file of the trainer's is served; only dataset 1 may be withheld. A judge that cannot load it abstains on
    the claims that need it (a step drawing from it, a dataset-unavailable claim whose claimant's sample draws from
    it): it never says the claim holds. The availability claim (k + 1) is about the trainer's files alone: they are
    there, so it is false either way; a claimant whose sample draws only from the round's own dataset needs nothing."""
    sub, served, _ = mixed
    drawn = training.draw_steps(SEED, TRAINER, MIX3, K)
    from_1, from_0 = drawn.index(1), drawn.index(0)
    claims = [{"submission": 0, "step": step, "claimants": [claimant]}
              for step, claimant in ((from_1, "gc1steps"), (K + 1, "gc1files"), (K + 2, OTHER_VALIDATOR))]
    checked = [{"validator": OTHER_VALIDATOR, "steps_checked": [from_1]}, {"validator": "gc1other", "steps_checked": [from_0]},
               {"validator": "gc1files", "steps_checked": [from_1]}, {"validator": "gc1steps", "steps_checked": [from_1]}]
    validator = auditing(tiny, tmp_path, served | ({OTHER_ENTRY["cid"]: OTHER_TEXT} if served_too else {}))
    validator.chain.answers["/training/current"] = round_view([sub | {"verdicts": checked, "claims": claims}], phase="dispute", mix=MIX3)
    lines: list[str] = []
    assert validator.step(lines.append) is False
    (msg,) = validator.chain.sent
    abstained = not served_too
    assert [(j.step, j.valid, j.abstain) for j in msg.judgements] == [
        (from_1, served_too, abstained), (K + 1, True, False), (K + 2, served_too, abstained)]
    assert any("abstained" in line for line in lines) == abstained

    # A dataset-unavailable claim whose claimant drew only from the round's own dataset: nothing to load, so not upheld.
    validator.chain.sent.clear()
    only_own = [{"submission": 0, "step": K + 2, "claimants": ["gc1other"]}]
    validator.chain.answers["/training/current"] = round_view([sub | {"verdicts": checked, "claims": only_own}], phase="dispute", mix=MIX3)
    validator.step(lambda line: None)
    assert [(j.step, j.valid, j.abstain) for j in validator.chain.sent[0].judgements] == [(K + 2, True, False)]


# --- the verdicts of a dataset nobody serves, without a model (review 14c F2) ------------------------------------


class _Mixed:
    train = None
    sources: dict = {}


def _bare_auditor(monkeypatch, trainer_files: bool = True, served: bool = False):
    """An Auditor without a model (its heavy __init__ skipped): the trainer's files are all there unless
    `trainer_files` is False (the delta then cannot be fetched); dataset "a"*64 is withheld by its owner unless
    `served`; step 1 is a fake (it does not reproduce)."""
    from abci_app.workers.spotcheck import Auditor, Unavailable, _Bad

    a = object.__new__(Auditor)
    a.dataset, a.params, a.kernel_path = _Mixed(), {"steps": 4}, "cpu"
    a.dataset.sources = {}

    def withheld(sha256):
        if served:
            return "tokens"
        raise Unavailable(f"dataset {sha256[:8]}: not served")

    def delta(self, sub):
        if not trainer_files:
            raise Unavailable(f"{sub['cid']} not found")

    def step(self, work, sub, states, i):  # the real _check_step loads the step's dataset first; step 1 is a fake
        self._sources(work, [i])
        if i == 1:
            raise _Bad(1, "step 1 does not reproduce")
        return 0, b"p" * 32

    a.load_source = withheld
    monkeypatch.setattr(Auditor, "_manifest", lambda self, work, sub: [{}] * 5)
    monkeypatch.setattr(Auditor, "_state", lambda self, states, i: None)
    monkeypatch.setattr(Auditor, "_delta", delta)
    monkeypatch.setattr(Auditor, "_check_endpoints", lambda self, sub, states: None)
    monkeypatch.setattr(Auditor, "_check_step", step)
    return a


_WITHHELD_DATA, _OWN_DATA = "a" * 64, "b" * 64


def _work_drawing(sources):
    from abci_app.workers.recompute import Work

    return Work(1, 0, "c" * 64, "trainer", _OWN_DATA, {"steps": 4}, "cpu", tuple(sources))


def test_a_judge_never_upholds_a_claim_on_a_dataset_it_cannot_load(monkeypatch) -> None:
    """Review 14c F2's reproducer, turned round: every trainer file is there, only the mixed dataset is withheld. A
    fraud claim on a step drawn from it gets an abstention (None), not "the claim holds"; the availability claim
    (k + 1) is about the trainer's files, which are there; a dataset-unavailable claim (k + 2) gets an abstention.
    With the trainer's delta withheld, the availability claim still holds: that is the trainer's fault."""
    a = _bare_auditor(monkeypatch)
    work = _work_drawing((_WITHHELD_DATA, _OWN_DATA, _WITHHELD_DATA, _OWN_DATA))
    sub = {"steps": 4, "kernel_path": "cpu", "cid": "bafy-delta"}
    assert a.judge(work, sub, 0, [0]) is None
    assert a.judge(work, sub, 3, [3]) is True  # a step of the round's own dataset is judged as ever
    assert a.judge(work, sub, 4 + training.CLAIM_UNAVAILABLE_OFFSET, [0, 2]) is True
    assert a.judge(work, sub, 4 + training.CLAIM_DATASET_OFFSET, [0, 2]) is None
    assert a.judge(work, sub, 4 + training.CLAIM_DATASET_OFFSET, [3]) is True  # that claimant needed no mixed dataset
    # Served to the judges after all: they replay the claimant's steps drawn from it, so a fake hidden from the
    # auditors by its owner does not pass (step 1 is the fake; step 0, drawn from it too, reproduces).
    fake_drawn_from_it = _work_drawing((_WITHHELD_DATA, _WITHHELD_DATA, _OWN_DATA, _OWN_DATA))
    judge = _bare_auditor(monkeypatch, served=True)
    assert judge.judge(fake_drawn_from_it, sub, 4 + training.CLAIM_DATASET_OFFSET, [0, 1]) is False
    assert judge.judge(fake_drawn_from_it, sub, 4 + training.CLAIM_DATASET_OFFSET, [0, 2]) is True
    assert judge.judge(work, sub, 4 + training.CLAIM_DATASET_OFFSET, [1, 3]) is True  # step 1 here is the round's own: the claimant checked it
    assert _bare_auditor(monkeypatch, trainer_files=False).judge(work, sub, 4 + training.CLAIM_UNAVAILABLE_OFFSET, [3]) is False


def test_an_auditor_says_dataset_unavailable_only_when_nothing_worse_shows(monkeypatch) -> None:
    """A sampled step whose dataset cannot be loaded is skipped, not blamed on the trainer: the verdict is k + 2 unless
    another sampled step does not reproduce (fraud at that step) or the trainer's own files are missing (k + 1)."""
    work = _work_drawing((_WITHHELD_DATA, _OWN_DATA, _OWN_DATA, _OWN_DATA))
    sub = {"steps": 4, "kernel_path": "cpu", "cid": "bafy-delta"}
    a = _bare_auditor(monkeypatch)
    found = a.audit(work, sub, [0, 2])
    assert (found.verdict, found.fraud_step, found.proofs) == ("fraud", 4 + training.CLAIM_DATASET_OFFSET, [])
    assert found.reason == "dataset unavailable: dataset aaaaaaaa: not served"
    assert (a.audit(work, sub, [0, 1]).verdict, a.audit(work, sub, [0, 1]).fraud_step) == ("fraud", 1)  # the fake step wins
    missing = _bare_auditor(monkeypatch, trainer_files=False)
    monkeypatch.setattr(type(a), "_check_endpoints", lambda self, sub, states: self._delta(sub))  # the endpoints fetch the delta
    assert missing.audit(work, sub, [0, 2]).fraud_step == 4 + training.CLAIM_UNAVAILABLE_OFFSET
