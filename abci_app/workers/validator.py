"""The validator daemon: recompute every submission of the round, attest the
verdict, then recompute and attest the merged checkpoint. It reads what it
already attested from the chain, so a restart never attests twice."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from abci_app import tx as txlib
from abci_app.client import TxRejected
from abci_app.ipfs.cid import cid_of_file
from abci_app.ipfs.client import IpfsError
from abci_app.ipfs.download import VerificationError
from abci_app.ml.checkpoint import CheckpointError
from abci_app.workers.base import Worker
from abci_app.workers.recompute import Verdict, Work, heldout_loss, judge, merged_checkpoint, prompt_score, to_micro

log = logging.getLogger("validator")


class Validator(Worker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._base_losses: dict[tuple[int, int, int], float] = {}

    def step(self, report: Callable[[str], None] = log.info) -> bool:
        """One pass over the round in progress. True when there is nothing left for us to do."""
        rnd = self.current_round()
        if rnd is None or rnd["phase"] == "closed":
            return True
        if self.address not in {operator for operator, _ in rnd.get("powers") or []}:
            return True  # only the validators snapshotted when the round opened vote in it
        if rnd["phase"] in ("submit", "verify"):
            pending = [s for s in rnd["submission_list"] if s["status"] == "pending" and self.address not in {a["validator"] for a in s["attestations"]}]
            for sub in pending:
                self.attest(rnd, sub, report)
            return not pending and rnd["phase"] == "verify"
        if rnd["phase"] == "merge" and self.address not in {v["validator"] for v in rnd["merge_votes"]}:
            self.attest_merge(rnd, report)
        return True

    def check(self, rnd: dict, sub: dict) -> Verdict:
        params = self.params()
        family, base = self.base_model(rnd["base_version"], params)
        entry, dataset = self.dataset(rnd["dataset_id"], family, base)
        try:
            path = self.fetch(sub["cid"], sub["sha256"], ".delta.safetensors")
            delta, meta = family.load_delta(path, base)
        except (IpfsError, VerificationError, CheckpointError) as exc:
            return Verdict(False, 0, f"delta unusable: {exc}"[:120])
        work = Work(rnd["id"], rnd["base_version"], rnd["seed"], sub["trainer"], entry["sha256"], params, sub["kernel_path"])
        return judge(family, base, dataset, work, delta, kernel_path=self.kernel_path, base_loss=self.base_loss(rnd, family, base, dataset))

    def base_loss(self, rnd: dict, family, base, dataset) -> float:
        """The round's base held-out loss, once per round (an evaluation costs ~11 CPU-s on SmolLM2)."""
        key = (rnd["id"], rnd["base_version"], rnd["dataset_id"])
        if key not in self._base_losses:
            self._base_losses = {key: heldout_loss(family, base, dataset)}
        return self._base_losses[key]

    def attest(self, rnd: dict, sub: dict, report: Callable[[str], None]) -> None:
        verdict = self.check(rnd, sub)
        msg = txlib.MsgAttest(round=rnd["id"], submission=sub["index"], accept=verdict.accept, no_gain=verdict.no_gain,
                              measured_error_ppm=verdict.error_ppm, reason=verdict.reason)
        try:
            self.chain.send(self.key, msg)
        except TxRejected as exc:
            if exc.codespace == "training" and exc.code in (8, 9):  # already attested or decided: nothing to do
                return
            if exc.codespace == "training" and exc.code == 6:  # evicted by a larger trainer bond while we recomputed
                report(f"round {rnd['id']}: submission {sub['index']} was evicted before our attestation")
                return
            if exc.codespace == "training" and exc.code in (1, 2):  # verification ended while we recomputed: too late, not fatal
                report(f"round {rnd['id']}: submission {sub['index']}: verification ended before our attestation ({exc.log})")
                return
            raise
        word = {"accept": "accept", "no_gain": f"valid, no gain ({verdict.reason})", "fraud": f"fraud ({verdict.reason})"}[verdict.verdict]
        how = "same kernel path: compared by hash" if verdict.by_hash else f"other kernel path ({sub['kernel_path']}): compared within tolerance"
        report(f"round {rnd['id']}: submission {sub['index']} by {sub['trainer']}: {word}, error {verdict.error_ppm} ppm, {how}")

    def attest_merge(self, rnd: dict, report: Callable[[str], None]) -> None:
        params = self.params()
        family, base = self.base_model(rnd["base_version"], params)
        entry, dataset = self.dataset(rnd["dataset_id"], family, base)
        subs = {s["index"]: s for s in rnd["submission_list"]}
        deltas = [family.load_delta(self.fetch(subs[i]["cid"], subs[i]["sha256"], ".delta.safetensors"), base)[0] for i in rnd["accepted"]]
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
        msg = txlib.MsgAttestMerge(round=rnd["id"], cid=cid, sha256=sha256, bytes=size, held_out_loss_micro=to_micro(loss),
                                   prompts_correct=score["prompts_correct"], prompts_total=score["prompts_total"])
        try:
            self.chain.send(self.key, msg)
        except TxRejected as exc:
            if exc.codespace == "training" and exc.code in (1, 2, 8):  # round moved on, or already attested
                return
            raise
        role = "aggregator" if rnd["aggregator"] == self.address else "validator"
        prompts = f", prompts {score['prompts_correct']}/{score['prompts_total']}" if score["prompts_total"] else ""
        report(f"round {rnd['id']}: merged {len(deltas)} deltas -> {cid} (held-out loss {loss:.4f}{prompts}) as {role}")
