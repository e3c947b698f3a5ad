"""The trainer and validator daemons of issue 12 against a fake node and IPFS: what they publish, sign, keep and send.

A trainer publishes its k + 1 training states, their manifest and the delta, and submits the commitments to
the gradients of the steps it trained (a "skip-steps" cheat fakes the steps `faked_steps` names). A validator
audits only its committees' submissions, keeps the opening of its sealed verdicts under HOME/audits before it
commits to it (so a restart commits the same opening and audits nothing again), reveals exactly that opening,
judges every fraud claim of the round in one tx, seals its merge vote the same way (saved, then committed, then
revealed as saved), and outlives a tx the chain refuses as too late or already done.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from abci_app import tx
from abci_app.client import ChainError, TxRejected
from abci_app.ipfs.cid import cid_of_bytes
from abci_app.ml import determinism
from abci_app.modules import audit, training
from abci_app.workers.recompute import Work, heldout_loss, merged_checkpoint, to_micro
from abci_app.workers.spotcheck import Auditor, parse_manifest
from abci_app.workers.trainer import Trainer, faked_steps
from abci_app.workers.validator import load_openings, split_openings
from tests.unit.conftest import fixed_key, tiny_gpt
from tests.unit.test_adversarial import BEACON, OTHER_VALIDATOR, VALIDATOR, FakeChain, FakeIpfs, make_validator, round_view, served_by
from tests.unit.test_spotcheck import K, PARAMS, SEED, TRAINER, Store, publish

ROUND = {"id": 0, "base_version": 0, "dataset_id": 0, "seed": SEED}  # what Trainer.submit reads of a round


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return tiny_gpt(tmp_path_factory, seed=2)


@pytest.fixture(scope="module")
def honest(tiny, tmp_path_factory: pytest.TempPathFactory):
    """TRAINER's honest submission: (store, work, sub, trajectory)."""
    return publish(tiny, tmp_path_factory.mktemp("honest"))


@pytest.fixture(scope="module")
def faked(tiny, tmp_path_factory: pytest.TempPathFactory):
    """A submission whose step 2 was never computed: (store, work, sub, trajectory)."""
    return publish(tiny, tmp_path_factory.mktemp("faked"), faked=[2])


# --- the trainer ---------------------------------------------------------------------


def submitted_by(tiny, tmp_path: Path, **cheat) -> tuple[tx.MsgSubmitDelta, dict[str, bytes], Work]:
    """TRAINER's daemon submits in ROUND: (its MsgSubmitDelta, what it added to IPFS, the work it was given)."""
    family, base, dataset = tiny
    trainer = Trainer(fixed_key(40), "http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path / "trainer", **cheat)
    assert trainer.address == TRAINER  # test_spotcheck's trainer
    trainer.chain.close()
    trainer.ipfs.close()
    trainer.chain, trainer.ipfs = FakeChain(PARAMS), FakeIpfs()
    trainer._models[0] = (family, base)
    trainer._datasets[0] = ({"id": 0, "sha256": dataset.sha256}, dataset)
    trainer.submit(ROUND, PARAMS, lambda line: None)
    (msg,) = trainer.chain.sent
    assert isinstance(msg, tx.MsgSubmitDelta)
    return msg, trainer.ipfs.served, Work(0, 0, SEED, TRAINER, dataset.sha256, PARAMS, trainer.kernel_path)


def audit_of(tiny, msg: tx.MsgSubmitDelta, served: dict[str, bytes], tmp_path: Path) -> tuple[Auditor, dict]:
    """An auditor of round 0 over what the trainer published, and its submission as the chain lists it."""
    family, base, dataset = tiny
    store = Store()
    for cid, data in served.items():
        (tmp_path / cid).write_bytes(data)
        store.add(tmp_path / cid)
    sub = {"round": 0, "index": 0, "trainer": TRAINER, "steps": msg.steps, "cid": msg.cid, "sha256": msg.sha256,
           "trajectory_cid": msg.trajectory_cid, "trajectory_sha256": msg.trajectory_sha256, "kernel_path": msg.kernel_path,
           "grad_commitments": msg.grad_commitments.hex()}
    return Auditor(family, base, dataset, PARAMS, determinism.kernel_path(), store.fetch), sub


def test_trainer_publishes_its_trajectory_and_commits_to_every_step(tiny, tmp_path: Path) -> None:
    msg, served, work = submitted_by(tiny, tmp_path)
    assert (msg.round, msg.steps, msg.kernel_path, len(msg.grad_commitments)) == (0, K, determinism.kernel_path(), 32 * K)
    manifest = served[msg.trajectory_cid]
    assert hashlib.sha256(manifest).hexdigest() == msg.trajectory_sha256
    states = parse_manifest(manifest, work)  # k + 1 states of this round, trainer and base
    assert all(hashlib.sha256(served[s["cid"]]).hexdigest() == s["sha256"] and len(served[s["cid"]]) == s["bytes"] for s in states)
    assert msg.state_bytes == max(s["bytes"] for s in states)
    assert hashlib.sha256(served[msg.cid]).hexdigest() == msg.sha256 and len(served[msg.cid]) == msg.bytes
    assert set(served) == {msg.cid, msg.trajectory_cid} | {s["cid"] for s in states}  # all of it, and nothing else

    check, sub = audit_of(tiny, msg, served, tmp_path)
    result = check.audit(work, sub, list(range(K)))
    assert (result.verdict, result.error_ppm) == ("accept", 0)
    assert b"".join(audit.grad_commitment(p) for p in result.proofs) == msg.grad_commitments  # its steps' gradients, in order
    assert msg.loss_before_micro == to_micro(heldout_loss(*tiny))  # the trainer reports the 64-window loss; auditors use fewer


def test_a_skip_steps_trainer_fakes_the_steps_faked_steps_names(tiny, tmp_path: Path) -> None:
    msg, served, work = submitted_by(tiny, tmp_path, cheat="skip-steps", fake_fraction_bps=2_500)
    skipped = faked_steps(SEED, TRAINER, K, 2_500)
    assert len(skipped) == 2  # ceil(25% of 8)
    check, sub = audit_of(tiny, msg, served, tmp_path)
    assert check.audit(work, sub, []).verdict == "accept"  # the endpoints hold: only a sampled faked step shows it
    assert [i for i in range(K) if not check.judge(work, sub, i, [])] == skipped  # each step recomputed alone


# --- the validator: commit, reveal ------------------------------------------------------


def test_validator_audits_its_committees_and_seals_before_it_commits(tiny, honest, tmp_path: Path) -> None:
    """It signs the audit message to draw its sample, checks that sample, saves the opening under HOME/audits, and only
    then sends the commitment to it; in the reveal phase it sends exactly that opening and deletes it."""
    store, _, sub, _ = honest
    others = sub | {"index": 1, "trajectory_cid": cid_of_bytes(b"not served"), "committee": [[OTHER_VALIDATOR, 10]]}
    validator = make_validator(tiny, tmp_path, served_by(store))
    rnd = round_view([sub, others])
    validator.chain.answers["/training/current"] = rnd
    path = validator.sealed_path(rnd)
    assert path.parent == tmp_path / "audits"
    opening_at_send: list[list] = []
    validator.chain.before_send = lambda msg: opening_at_send.append(load_openings(path))  # fails if nothing is saved yet
    reports: list[str] = []
    assert validator.step(reports.append) is False

    (commit,) = validator.chain.sent
    (opening,) = opening_at_send[0]  # one chunk: a few verdicts fit one tx
    assert isinstance(commit, tx.MsgCommitVerdicts) and commit.round == 0
    assert commit.commitment == training.verdicts_commitment(0, opening.salt, opening.operator_pubkey, opening.verdicts)
    assert (opening.round, opening.operator_pubkey, len(opening.salt)) == (0, VALIDATOR.pubkey, 32)
    (sealed,) = opening.verdicts  # submission 1's committee is another validator's: not audited, not even fetched
    assert others["trajectory_cid"] not in validator.ipfs.requests
    signature = VALIDATOR.sign(audit.audit_message(0, 0, sub["trajectory_sha256"], BEACON))
    assert (sealed.submission, sealed.audit_signature) == (0, signature)
    sample = audit.audit_sample(signature, K, PARAMS["audit_steps"])
    commitments = bytes.fromhex(sub["grad_commitments"])
    assert (training.VERDICTS[sealed.verdict], sealed.fraud_step, sealed.measured_error_ppm) == ("accept", 0, 0)
    assert [audit.grad_commitment(p) for p in sealed.step_proofs] == [commitments[32 * i : 32 * i + 32] for i in sample]
    assert reports[0] == f"round 0: submission 0 by {TRAINER}: checked steps {sorted(sample)} of {K}: accept; compared by hash, proofs attached"

    validator.chain.before_send = None
    validator.chain.answers["/training/current"] = round_view([sub, others], phase="reveal", committed=[VALIDATOR.address])
    assert validator.step(reports.append) is False
    revealed = validator.chain.sent[-1]
    assert isinstance(revealed, tx.MsgRevealVerdicts) and revealed == opening
    assert not path.exists()
    assert reports[-1] == "round 0: revealed verdicts on 1 submissions"


def test_a_restart_after_sealing_commits_the_same_opening_without_auditing_again(tiny, honest, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store, _, sub, _ = honest
    rnd = round_view([sub])
    first = make_validator(tiny, tmp_path, served_by(store))
    first.chain.answers["/training/current"] = rnd

    def unreachable(msg) -> None:
        raise ChainError("node did not answer")  # the commitment never left

    first.chain.before_send = unreachable
    with pytest.raises(ChainError):
        first.step(lambda line: None)
    (opening,) = load_openings(first.sealed_path(rnd))

    monkeypatch.setattr(Auditor, "audit", lambda *args: pytest.fail("audited again after a restart"))
    again = make_validator(tiny, tmp_path, served_by(store))  # a new process, the same home
    again.chain.answers["/training/current"] = rnd
    reports: list[str] = []
    assert again.step(reports.append) is False
    (commit,) = again.chain.sent
    assert commit.commitment == training.verdicts_commitment(0, opening.salt, opening.operator_pubkey, opening.verdicts)
    assert reports == ["round 0: committed sealed verdicts on 1 submissions"]


def test_a_validator_whose_sealed_verdicts_are_gone_reports_and_sends_nothing(tiny, tmp_path: Path) -> None:
    validator = make_validator(tiny, tmp_path, {})
    rnd = round_view([], phase="reveal", committed=[VALIDATOR.address])
    validator.chain.answers["/training/current"] = rnd
    reports: list[str] = []
    assert validator.step(reports.append) is False
    assert validator.chain.sent == []
    assert reports == [f"round 0: committed, but the sealed verdicts are gone from {validator.sealed_path(rnd)}: cannot reveal (this costs stake)"]


# --- the validator: the merge ------------------------------------------------------------


def test_validator_saves_its_merge_vote_before_it_commits_and_reveals_exactly_that(tiny, honest, tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In the merge phase it merges the accepted deltas, publishes and evaluates the merge, saves the vote (salt
    included) under HOME/audits, and only then sends MsgCommitMerge with the commitment that vote opens; in the
    merge_reveal phase it sends exactly that vote and deletes it."""
    family, base, dataset = tiny
    store, _, sub, _ = honest
    validator = make_validator(tiny, tmp_path, served_by(store))
    rnd = round_view([sub | {"status": "accepted"}], phase="merge", accepted=[0], aggregator=VALIDATOR.address)
    validator.chain.answers["/training/current"] = rnd
    path = validator.merge_path(rnd)
    assert path.parent == tmp_path / "audits"
    saved_at_send: list[tx.MsgAttestMerge] = []
    validator.chain.before_send = lambda msg: saved_at_send.append(tx.MsgAttestMerge.FromString(path.read_bytes()))  # fails if nothing is saved yet
    reports: list[str] = []
    assert validator.step(reports.append) is False

    (commit,) = validator.chain.sent
    (vote,) = saved_at_send
    assert isinstance(commit, tx.MsgCommitMerge) and commit.round == 0
    assert commit.commitment == training.merge_commitment(0, VALIDATOR.address, vote)
    assert (vote.round, len(vote.salt), vote.prompts_total) == (0, 32, 0)  # eval_prompts 0: no prompt score
    delta = family.load_delta(validator.cache.path_for(sub["sha256"], ".delta.safetensors"), base)[0]
    sha256, merged = merged_checkpoint(family, base, [delta], 0, 0, tmp_path / "expected.safetensors")
    published = validator.ipfs.served[vote.cid]  # published by the validator itself
    assert (vote.sha256, hashlib.sha256(published).hexdigest(), vote.bytes) == (sha256, sha256, len(published))
    assert vote.held_out_loss_micro == to_micro(heldout_loss(family, merged, dataset))
    assert reports[-1] == "round 0: committed a sealed merge vote"

    # Still in the merge phase (the commitment not yet in a block, or a restart): the same commitment, nothing recomputed.
    validator.chain.before_send = None
    monkeypatch.setattr(validator, "merge_vote", lambda *args: pytest.fail("merged again"))
    assert validator.step(reports.append) is False
    assert validator.chain.sent[-1] == commit

    validator.chain.answers["/training/current"] = round_view([sub | {"status": "accepted"}], phase="merge_reveal", accepted=[0],
                                                              aggregator=VALIDATOR.address, merge_committed=[VALIDATOR.address])
    assert validator.step(reports.append) is True
    revealed = validator.chain.sent[-1]
    assert isinstance(revealed, tx.MsgAttestMerge) and revealed == vote
    assert training.merge_commitment(0, VALIDATOR.address, revealed) == commit.commitment
    assert not path.exists()
    assert reports[-1].startswith(f"round 0: revealed merge vote {vote.cid} (held-out loss ")


# --- the validator: disputes and refusals -----------------------------------------------


def test_validator_judges_every_claim_in_one_tx(tiny, faked, tmp_path: Path) -> None:
    """Claims on the faked step, on an honest step, on the endpoints and on availability, by another validator that
    checked steps 2 and 5: only the first holds."""
    store, _, sub, _ = faked
    claims = [{"submission": 0, "step": step, "claimants": [OTHER_VALIDATOR]} for step in (2, 5, K, K + 1)]
    checked = [{"validator": OTHER_VALIDATOR, "steps_checked": [2, 5]}]
    validator = make_validator(tiny, tmp_path, served_by(store))
    validator.chain.answers["/training/current"] = round_view([sub | {"verdicts": checked, "claims": claims}], phase="dispute")
    reports: list[str] = []
    assert validator.step(reports.append) is False
    (msg,) = validator.chain.sent
    assert isinstance(msg, tx.MsgJudgeClaims) and msg.round == 0
    assert [(j.submission, j.step, j.valid) for j in msg.judgements] == [(0, 2, False), (0, 5, True), (0, K, True), (0, K + 1, True)]
    assert reports[0] == "round 0: claim on step 2 of submission 0: the claim holds" and reports[-1] == "round 0: judged 4 claims"


@pytest.mark.parametrize("codespace, code, fatal", [
    ("training", 1, False), ("training", 2, False),  # the round or the phase moved on while it worked: too late
    ("training", 8, False),  # it did this already (a restart after the tx landed)
    ("training", 13, True), ("bank", 7, True), ("bank", 8, True),  # anything else stops it, with the chain's reason
])
def test_refused_txs_that_are_too_late_or_done_do_not_stop_the_validator(tiny, tmp_path: Path, codespace: str, code: int, fatal: bool) -> None:
    """A daemon that exits on a late tx leaves its validator absent, and penalized, from then on."""
    validator = make_validator(tiny, tmp_path, {})
    validator.chain.answers["/training/current"] = round_view([], phase="dispute")

    def refuse(msg) -> None:
        raise TxRejected(codespace, code, "the chain's reason")  # refused by the mempool

    validator.chain.before_send = refuse
    reports: list[str] = []
    if fatal:
        with pytest.raises(TxRejected, match="the chain's reason"):
            validator.step(reports.append)
    else:
        assert validator.step(reports.append) is False
    assert reports == (["round 0: our judgement came too late (the chain's reason)"] if code in (1, 2) and not fatal else [])


def test_openings_too_big_for_one_tx_are_split_into_chunks_that_each_fit() -> None:
    """An auditor on many committees: each chunk's reveal tx stays under the tx size limit, in order, all verdicts kept."""
    from abci_app import crypto
    from abci_app.tx import MAX_TX_BYTES, build

    key = crypto.PrivateKey(b"\7" * 32)
    verdicts = [tx.AuditVerdict(submission=i, audit_signature=b"s" * 64, step_proofs=[b"p" * 32] * 12, reason="x" * 40) for i in range(400)]
    opening = tx.MsgRevealVerdicts(round=3, salt=b"\1" * 32, operator_pubkey=key.pubkey, verdicts=verdicts)
    chunks = split_openings(opening)
    assert len(chunks) > 1 and [c.chunk for c in chunks] == list(range(len(chunks)))
    assert [v.submission for c in chunks for v in c.verdicts] == list(range(400))
    assert all(len(build(key, "gradchain-test", 10**9, 10**12, c)) <= MAX_TX_BYTES for c in chunks)
