"""The trainer daemon: wait for an open round, train k steps on the assigned
batch, publish the delta on IPFS, submit it, and report the decision."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from abci_app import tx as txlib
from abci_app.ipfs.cid import cid_of_file
from abci_app.workers.base import Worker
from abci_app.workers.recompute import Trained, Work, delta_extra, to_micro, train_submission

log = logging.getLogger("trainer")

PENDING = "pending"

# Misbehaviour for tests and demonstrations: what a cheating trainer might submit.
CHEATS: dict[str, Callable[[dict], dict]] = {
    "scale": lambda delta: {n: t * 10 for n, t in delta.items()},
    "noise": lambda delta: {n: torch.randn(t.shape, generator=torch.Generator().manual_seed(7)) * t.std() for n, t in delta.items()},
}


class Trainer(Worker):
    def __init__(self, *args, cheat: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if cheat is not None and cheat not in CHEATS:
            raise ValueError(f"unknown cheat {cheat!r} (known: {', '.join(CHEATS)})")
        self.cheat = cheat
        self.submitted: dict[int, str] = {}  # round -> PENDING, or the decision once known
        self.waiting_for_bond = False

    def my_submission(self, rnd: dict) -> dict | None:
        return next((s for s in rnd["submission_list"] if s["trainer"] == self.address), None)

    def step(self, report: Callable[[str], None] = log.info) -> bool:
        """One look at the chain. True once every submission of ours has been decided."""
        undecided = [r for r, state in self.submitted.items() if state == PENDING]
        for round_id in undecided:
            # Follow our own rounds by id: the round in progress may already be the next one.
            mine = self.my_submission(self.chain.query_json("/training/round_detail", str(round_id)))
            if mine is not None and mine["status"] != "pending":
                report(f"round {round_id}: submission {mine['index']} {mine['status']}")
                self.submitted[round_id] = mine["status"]
        if undecided and all(state != PENDING for state in self.submitted.values()):
            return True
        rnd = self.current_round()
        if rnd is None or rnd["phase"] == "closed":
            self.warm_up()  # ready before the next round opens
            return False
        if rnd["id"] in self.submitted or self.my_submission(rnd) is not None:
            return False
        if rnd["phase"] != "submit" or self.chain.rpc.latest_height() + 1 >= rnd["submit_until"]:
            return False
        params = self.params()
        found = self.chain.query_json("/training/trainer_bond", self.address) or {}
        bond = found.get("bonded", 0) - found.get("locked", 0)  # what a submission can lock
        if bond < params["min_trainer_bond"]:
            # Our bond tx may still be on its way into a block (the round opens on the first trainer's bond):
            # training now would be wasted, and a submission signed before it commits reuses its nonce.
            if not self.waiting_for_bond:
                report(f"round {rnd['id']}: waiting for a trainer bond of {params['min_trainer_bond']} (have {bond}; `gradchain tx staking bond-trainer`)")
            self.waiting_for_bond = True
            return False
        self.waiting_for_bond = False
        self.submit(rnd, params, report)
        return False

    def submit(self, rnd: dict, params: dict, report: Callable[[str], None]) -> None:
        family, base = self.base_model(rnd["base_version"], params)
        entry, dataset = self.dataset(rnd["dataset_id"], family, base)
        work = Work(rnd["id"], rnd["base_version"], rnd["seed"], self.address, entry["sha256"], params, self.kernel_path)
        report(f"round {rnd['id']}: training {params['steps']} steps on version {rnd['base_version']} ...")
        steps = params["steps"]
        trained = train_submission(family, base, dataset, work, on_step=lambda i, loss, _: report(f"round {rnd['id']}: step {i + 1}/{steps} loss {loss:.4f}"))
        delta = CHEATS[self.cheat](trained.delta) if self.cheat else trained.delta
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "delta.safetensors"
            sha256 = family.save_delta(path, delta, base, parent=str(rnd["base_version"]), extra=delta_extra(work, trained, self.kernel_path))
            cid = self.ipfs.add(path)
            if cid != cid_of_file(path):
                raise RuntimeError(f"IPFS returned CID {cid} for a file whose CID is {cid_of_file(path)}")
            size = path.stat().st_size
        msg = txlib.MsgSubmitDelta(
            round=rnd["id"], cid=cid, sha256=sha256, bytes=size, loss_before_micro=to_micro(trained.heldout_before),
            loss_after_micro=to_micro(trained.heldout_after), steps=params["steps"], kernel_path=self.kernel_path,
        )
        result = self.chain.send(self.key, msg)
        self.submitted[rnd["id"]] = PENDING
        report(
            f"round {rnd['id']}: submitted delta {cid} (held-out loss {trained.heldout_before:.4f} -> {trained.heldout_after:.4f}) "
            f"in block {result.height}"
        )


__all__ = ["Trainer", "CHEATS", "Trained"]
