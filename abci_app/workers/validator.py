"""The validator daemon: audit the submissions of its committees by recomputing its sampled steps, commit the
sealed verdicts, reveal them, judge fraud claims, then recompute and attest the merged checkpoint.

It reads what it already did from the chain (committed, revealed, judged, merge
votes), and keeps its sealed verdicts under HOME/audits until they are revealed,
so a restart never audits twice or loses what it must reveal."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from abci_app import tx as txlib
from abci_app.client import TxRejected
from abci_app.ipfs.cid import cid_of_file
from abci_app.ipfs.client import IpfsError
from abci_app.ipfs.download import VerificationError, fetch_verified
from abci_app.models import ModelError
from abci_app.modules import audit
from abci_app.node import metrics
from abci_app.modules.training import MAX_REVEAL_CHUNKS, merge_commitment, reveal_chunk, verdicts_commitment
from abci_app.workers.base import Worker
from abci_app.workers.recompute import Work, heldout_loss, merged_checkpoint, prompt_score, round_work, to_micro
from abci_app.workers.spotcheck import Auditor, Mismatch, Unavailable

log = logging.getLogger("validator")

# Training error codes a daemon outlives: the round moved on (1, 2), or it already did this (8).
_TOO_LATE, _DONE = (1, 2), (8,)


class Validator(Worker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.audit_dir = self.cache.root.parent / "audits"  # HOME/audits, beside HOME/cache
        self._auditor: tuple[tuple, Auditor] | None = None
        self._sha256_of: dict[int, str] = {}  # the auditor's round: dataset id -> sha256 of its mix

    def step(self, report: Callable[[str], None] = log.info) -> bool:
        """One pass over the round in progress. True when there is nothing left for us to do."""
        rnd = self.current_round()
        if rnd is None or rnd["phase"] == "closed":
            return True
        if self.address not in {operator for operator, _ in rnd.get("powers") or []}:
            return True  # only the validators snapshotted when the round opened act in it
        phase = rnd["phase"]
        if phase == "commit" and self.address in rnd["auditors"] and self.address not in rnd["committed"]:
            self.commit(rnd, report)
        elif phase == "reveal" and self.address in rnd["committed"] and self.address not in rnd["revealed"]:
            self.reveal(rnd, report)
        elif phase == "dispute" and self.address not in rnd["judged"]:
            self.judge_claims(rnd, report)
        elif phase == "merge" and self.address not in rnd["merge_committed"]:
            self.commit_merge(rnd, report)
        elif phase == "merge_reveal":
            if self.address in rnd["merge_committed"] and self.address not in {v["validator"] for v in rnd["merge_votes"]}:
                self.reveal_merge(rnd, report)
            elif self.address not in rnd["merge_committed"]:
                self.merge_path(rnd).unlink(missing_ok=True)  # our commitment came too late: the sealed vote is moot
            return True
        return False

    # --- auditing ---

    def auditor(self, rnd: dict) -> tuple[Auditor, dict]:
        """The round's auditor (one per round: it keeps the replay model, state 0 and the base loss) and the params."""
        params = self.round_params(rnd)
        family, base = self.base_model(rnd["base_version"], params)
        key = (rnd["id"], rnd["base_version"], rnd["dataset_id"])
        if self._auditor is None or self._auditor[0] != key:
            # No mixed dataset yet: each is loaded when a sample draws from it, so one nobody serves costs an
            # "unavailable" verdict on the submissions that need it, not the whole round's audit.
            entry, dataset, sha256_of = self.round_data(rnd, family, base, needed=())
            loader = self._source_for(family, base, sha256_of, float(params["fetch_seconds"]))
            self._auditor = (key, Auditor(family, base, dataset, params, self.kernel_path, self._fetch_for(params), loader))
            self._sha256_of = sha256_of
        return self._auditor[1], self.dataset(rnd["dataset_id"], family, base)[0]

    def _source_for(self, family, base, sha256_of: dict[int, str], deadline: float):
        ids = {sha256: dataset_id for dataset_id, sha256 in sorted(sha256_of.items(), reverse=True)}  # the lowest id of equal files

        def load(sha256: str):
            dataset_id = ids[sha256]
            try:
                return self.dataset(dataset_id, family, base, timeout=deadline)[1].train
            except (IpfsError, ModelError, ValueError) as exc:  # not served, not the registered bytes, not text: no usable content
                raise Unavailable(f"dataset {dataset_id}: {exc}") from None

        return load

    def _fetch_for(self, params: dict):
        deadline = float(params["fetch_seconds"])

        def fetch(cid: str, sha256: str, suffix: str) -> Path:
            path = self.cache.path_for(sha256, suffix)
            if path.exists():
                return path
            try:
                return fetch_verified(self.ipfs, cid, sha256, path, timeout=deadline)
            except VerificationError as exc:
                raise Mismatch(str(exc)) from None
            except IpfsError as exc:
                raise Unavailable(str(exc)) from None

        return fetch

    def _work(self, rnd: dict, sub: dict, entry: dict, params: dict) -> Work:
        return round_work(rnd, sub["trainer"], entry, params, sub["kernel_path"], self._sha256_of)

    def sealed_path(self, rnd: dict) -> Path:
        return self.audit_dir / f"round-{rnd['id']}-{rnd['beacon'][:16]}.reveal"

    def commit(self, rnd: dict, report: Callable[[str], None]) -> None:
        """Audit every submission of our committees, keep the openings on disk, then send their commitment."""
        path = self.sealed_path(rnd)
        if path.exists():  # audited before a restart: commit what we sealed then
            chunks = load_openings(path)
        else:
            chunks = split_openings(self._audit_all(rnd, report))
            self.audit_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(b"".join(len(raw).to_bytes(4, "big") + raw for raw in (c.SerializeToString(deterministic=True) for c in chunks)))
            os.replace(tmp, path)
        commitment = b"".join(verdicts_commitment(c.round, c.salt, c.operator_pubkey, c.verdicts, c.chunk) for c in chunks)
        if self._send(txlib.MsgCommitVerdicts(round=rnd["id"], commitment=commitment), "commit", rnd, report):
            count = sum(len(c.verdicts) for c in chunks)
            report(f"round {rnd['id']}: committed sealed verdicts on {count} submissions" + (f" in {len(chunks)} chunks" if len(chunks) > 1 else ""))

    def _audit_all(self, rnd: dict, report: Callable[[str], None]) -> txlib.MsgRevealVerdicts:
        auditor, entry = self.auditor(rnd)
        params = auditor.params
        verdicts = []
        for sub in sorted(rnd["submission_list"], key=lambda s: s["index"]):
            if self.address not in {op for op, _ in sub["committee"]}:
                continue
            signature = self.key.sign(audit.audit_message(rnd["id"], sub["index"], sub["trajectory_sha256"], rnd["beacon"]))
            sample = audit.audit_sample(signature, sub["steps"], params["audit_steps"])
            started = time.monotonic()
            result = auditor.audit(self._work(rnd, sub, entry, params), sub, sample)
            metrics.observe_verification(time.monotonic() - started)  # operator metrics only (gradchain validate --metrics)
            verdicts.append(txlib.AuditVerdict(
                submission=sub["index"], verdict=result.verdict_code, audit_signature=signature, step_proofs=result.proofs,
                fraud_step=result.fraud_step, measured_error_ppm=result.error_ppm, reason=result.reason))
            word = {"accept": "accept", "no_gain": f"valid, no gain ({result.reason})", "fraud": f"fraud at step {result.fraud_step} ({result.reason})"}[result.verdict]
            how = "compared by hash, proofs attached" if result.proofs else f"other kernel path ({sub['kernel_path']}): within tolerance, max {result.error_ppm} ppm"
            report(f"round {rnd['id']}: submission {sub['index']} by {sub['trainer']}: checked steps {sorted(sample)} of {sub['steps']}: {word}; {how}")
        return txlib.MsgRevealVerdicts(round=rnd["id"], salt=os.urandom(32), operator_pubkey=self.key.pubkey, verdicts=verdicts)

    def reveal(self, rnd: dict, report: Callable[[str], None]) -> None:
        path = self.sealed_path(rnd)
        if not path.exists():
            report(f"round {rnd['id']}: committed, but the sealed verdicts are gone from {path}: cannot reveal (this costs stake)")
            return
        chunks = load_openings(path)
        sent = [self._send(msg, "reveal", rnd, report) for msg in chunks]  # a chunk opened before a restart is refused (8): fine
        if any(sent):
            report(f"round {rnd['id']}: revealed verdicts on {sum(len(c.verdicts) for c in chunks)} submissions")
        path.unlink(missing_ok=True)

    def judge_claims(self, rnd: dict, report: Callable[[str], None]) -> None:
        """Recompute every claimed step (or check the endpoints or availability) and judge all claims in one tx."""
        auditor, entry = self.auditor(rnd)
        judgements = []
        for sub in sorted(rnd["submission_list"], key=lambda s: s["index"]):
            claimants_steps = {e["validator"]: e["steps_checked"] for e in sub["verdicts"]}
            for claim in sub["claims"]:
                steps = sorted({i for c in claim["claimants"] for i in claimants_steps.get(c, [])})
                valid = auditor.judge(self._work(rnd, sub, entry, auditor.params), sub, claim["step"], steps)
                # None: a mixed dataset the claim needs could not be loaded; abstaining keeps us from upholding a claim
                # on data we could not check (free if the claim stays undecided; charged like absence if a quorum
                # loaded the data and decided it)
                judgements.append(txlib.ClaimJudgement(submission=sub["index"], step=claim["step"], valid=bool(valid), abstain=valid is None))
                said = {True: "the step reproduces (claim false)", False: "the claim holds", None: "a dataset it needs cannot be loaded: abstained"}[valid]
                report(f"round {rnd['id']}: claim on step {claim['step']} of submission {sub['index']}: {said}")
        if self._send(txlib.MsgJudgeClaims(round=rnd["id"], judgements=judgements), "judgement", rnd, report):
            report(f"round {rnd['id']}: judged {len(judgements)} claims")

    def _send(self, msg, what: str, rnd: dict, report: Callable[[str], None]) -> bool:
        try:
            self.chain.send(self.key, msg)
        except TxRejected as exc:
            if exc.codespace == "training" and exc.code in _DONE:
                return False
            if exc.codespace == "training" and exc.code in _TOO_LATE:  # the phase ended while we worked: too late, not fatal
                report(f"round {rnd['id']}: our {what} came too late ({exc.log})")
                return False
            raise
        return True

    # --- the merge ---

    def merge_path(self, rnd: dict) -> Path:
        return self.audit_dir / f"round-{rnd['id']}-{rnd['beacon'][:16]}.merge"

    def commit_merge(self, rnd: dict, report: Callable[[str], None]) -> None:
        """Recompute and evaluate the merge, keep the sealed vote on disk, then commit to it."""
        path = self.merge_path(rnd)
        if path.exists():  # computed before a restart
            vote = txlib.MsgAttestMerge.FromString(path.read_bytes())
        else:
            vote = self.merge_vote(rnd, report)
            self.audit_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(vote.SerializeToString(deterministic=True))
            os.replace(tmp, path)
        if self._send(txlib.MsgCommitMerge(round=rnd["id"], commitment=merge_commitment(rnd["id"], self.address, vote)), "merge commitment", rnd, report):
            report(f"round {rnd['id']}: committed a sealed merge vote")

    def reveal_merge(self, rnd: dict, report: Callable[[str], None]) -> None:
        path = self.merge_path(rnd)
        if not path.exists():
            report(f"round {rnd['id']}: committed a merge vote, but it is gone from {path}: cannot reveal")
            return
        vote = txlib.MsgAttestMerge.FromString(path.read_bytes())
        if self._send(vote, "merge vote", rnd, report):
            report(f"round {rnd['id']}: revealed merge vote {vote.cid} (held-out loss {vote.held_out_loss_micro / 1e6:.4f})")
        path.unlink(missing_ok=True)

    def merge_vote(self, rnd: dict, report: Callable[[str], None]) -> txlib.MsgAttestMerge:
        params = self.round_params(rnd)
        family, base = self.base_model(rnd["base_version"], params)
        entry, dataset = self.dataset(rnd["dataset_id"], family, base)
        subs = {s["index"]: s for s in rnd["submission_list"]}
        deltas = [family.load_delta(self.fetch(subs[i]["cid"], subs[i]["sha256"], ".delta.safetensors"), base)[0] for i in rnd["accepted"]]
        for i in rnd["accepted"]:  # the merged version's provenance names these deltas: keep them served after the trainer leaves
            self.pin(subs[i]["cid"], f"round {rnd['id']}: accepted delta {i}", report)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "merged.safetensors"
            sha256, merged = merged_checkpoint(family, base, deltas, rnd["base_version"], rnd["id"], path)
            cid = cid_of_file(path)
            # Every validator publishes the merge (the aggregator first by role): more replicas.
            if self.ipfs.add(path) != cid:
                raise RuntimeError("IPFS computed another CID for the merged checkpoint")
            size = path.stat().st_size
            cached = self.cache.path_for(sha256, ".safetensors")
            if not cached.exists():
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(path.read_bytes())
        loss = heldout_loss(family, merged, dataset)
        score = prompt_score(family, merged, params["eval_prompts"])
        role = "aggregator" if rnd["aggregator"] == self.address else "validator"
        prompts = f", prompts {score['prompts_correct']}/{score['prompts_total']}" if score["prompts_total"] else ""
        report(f"round {rnd['id']}: merged {len(deltas)} deltas -> {cid} (held-out loss {loss:.4f}{prompts}) as {role}")
        return txlib.MsgAttestMerge(round=rnd["id"], cid=cid, sha256=sha256, bytes=size, held_out_loss_micro=to_micro(loss),
                                    prompts_correct=score["prompts_correct"], prompts_total=score["prompts_total"], salt=os.urandom(32))


# A reveal tx stays this far under tx.MAX_TX_BYTES: room for the envelope (body fields, key, signature).
_REVEAL_BUDGET = txlib.MAX_TX_BYTES - 2_048


def split_openings(reveal: txlib.MsgRevealVerdicts) -> list[txlib.MsgRevealVerdicts]:
    """The opening in as few chunks as fit one tx each; which verdict goes in which chunk is the chain's rule
    (training.reveal_chunk over the auditor's seats, in submission order), so each seat is sealed exactly once."""
    verdicts = list(reveal.verdicts)
    seats = len(verdicts)
    for count in range(1, min(MAX_REVEAL_CHUNKS, max(1, seats)) + 1):
        chunks = [txlib.MsgRevealVerdicts(round=reveal.round, salt=reveal.salt, operator_pubkey=reveal.operator_pubkey, chunk=j) for j in range(count)]
        for t, verdict in enumerate(verdicts):
            chunks[reveal_chunk(t, seats, count)].verdicts.append(verdict)
        if all(c.ByteSize() <= _REVEAL_BUDGET for c in chunks):
            return chunks
    raise RuntimeError(f"{seats} verdicts do not fit {MAX_REVEAL_CHUNKS} reveal txs")


def load_openings(path: Path) -> list[txlib.MsgRevealVerdicts]:
    """The chunks `commit` saved: length-prefixed serialized MsgRevealVerdicts."""
    raw, chunks, at = path.read_bytes(), [], 0
    while at < len(raw):
        size = int.from_bytes(raw[at : at + 4], "big")
        chunks.append(txlib.MsgRevealVerdicts.FromString(raw[at + 4 : at + 4 + size]))
        at += 4 + size
    return chunks
