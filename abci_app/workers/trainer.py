"""The trainer daemon: wait for an open round, train k steps on the assigned
batch while recording every training state, publish the delta and the
trajectory (states + manifest) on IPFS, submit them with the per-step gradient
commitments, and report the decision."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from abci_app import tx as txlib
from abci_app.ipfs.cid import cid_of_file
from abci_app.modules import training
from abci_app.workers.base import Worker
from abci_app.workers.recompute import delta_extra, round_work, to_micro
from abci_app.workers.spotcheck import manifest_bytes, train_trajectory

log = logging.getLogger("trainer")

PENDING = "pending"

# Misbehaviour for tests and demonstrations: what a cheating trainer might submit.
CHEATS: dict[str, Callable[[dict], dict]] = {
    "scale": lambda delta: {n: t * 10 for n, t in delta.items()},
    "noise": lambda delta: {n: torch.randn(t.shape, generator=torch.Generator().manual_seed(7)) * t.std() for n, t in delta.items()},
    "skip-steps": lambda delta: delta,  # the delta is honest to its trajectory; `fake_fraction` of the steps were never computed
}


def faked_steps(round_seed: str, trainer: str, steps: int, fraction_bps: int) -> list[int]:
    """The steps a "skip-steps" cheat fakes: ceil(fraction x k) of them, spread by a hash the cheat picks."""
    count = min(steps, -(-steps * fraction_bps // 10_000))
    order = sorted(range(steps), key=lambda i: hashlib.sha256(f"{round_seed}/{trainer}/{i}".encode()).digest())
    return sorted(order[:count])


class Trainer(Worker):
    def __init__(self, *args, cheat: str | None = None, fake_fraction_bps: int = 5_000, **kwargs):
        super().__init__(*args, **kwargs)
        if cheat is not None and cheat not in CHEATS:
            raise ValueError(f"unknown cheat {cheat!r} (known: {', '.join(CHEATS)})")
        self.cheat = cheat
        self.fake_fraction_bps = fake_fraction_bps
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
        params = self.round_params(rnd)
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
        drawn = training.step_counts(rnd["seed"], self.address, rnd.get("mix") or [], params["steps"])
        entry, dataset, sha256_of = self.round_data(rnd, family, base, needed=[d for d, _ in drawn])  # only what our steps draw from
        work = round_work(rnd, self.address, entry, params, self.kernel_path, sha256_of)
        steps = params["steps"]
        faked = faked_steps(rnd["seed"], self.address, steps, self.fake_fraction_bps) if self.cheat == "skip-steps" else []
        report(f"round {rnd['id']}: training {steps} steps on version {rnd['base_version']}, recording each state ...")

        def progress(i: int, loss: float, _opt) -> None:
            if i + 1 == steps or (i + 1) % max(1, steps // 8) == 0:
                report(f"round {rnd['id']}: step {i + 1}/{steps} loss {loss:.4f}")

        with tempfile.TemporaryDirectory() as tmp:
            traj = train_trajectory(family, base, dataset, work, Path(tmp) / "states", on_step=progress, faked_steps=faked)
            delta = CHEATS[self.cheat](traj.delta) if self.cheat else traj.delta
            path = Path(tmp) / "delta.safetensors"
            sha256 = family.save_delta(path, delta, base, parent=str(rnd["base_version"]), extra=delta_extra(work, traj, self.kernel_path))
            cid = self._add(path)
            size = path.stat().st_size
            states = [(self._add(p), h, n) for p, h, n in zip(traj.recorded.state_paths, traj.recorded.state_hashes, traj.recorded.state_sizes)]
            manifest = Path(tmp) / "trajectory.json"
            manifest.write_bytes(manifest_bytes(work, self.kernel_path, states))
            trajectory_cid = self._add(manifest)
            trajectory_sha256 = hashlib.sha256(manifest.read_bytes()).hexdigest()
        total = sum(n for _, _, n in states)
        report(f"round {rnd['id']}: published the delta and {len(states)} training states ({total / 1e6:.1f} MB) on IPFS")
        msg = txlib.MsgSubmitDelta(
            round=rnd["id"], cid=cid, sha256=sha256, bytes=size, loss_before_micro=to_micro(traj.heldout_before),
            loss_after_micro=to_micro(traj.heldout_after), steps=steps, kernel_path=self.kernel_path,
            trajectory_cid=trajectory_cid, trajectory_sha256=trajectory_sha256, state_bytes=max(n for _, _, n in states),
            grad_commitments=traj.grad_commitments(),
        )
        result = self.chain.send(self.key, msg)
        self.submitted[rnd["id"]] = PENDING
        report(
            f"round {rnd['id']}: submitted delta {cid} (held-out loss {traj.heldout_before:.4f} -> {traj.heldout_after:.4f}) "
            f"in block {result.height}"
        )

    def _add(self, path: Path) -> str:
        cid = self.ipfs.add(path)
        if cid != cid_of_file(path):
            raise RuntimeError(f"IPFS returned CID {cid} for a file whose CID is {cid_of_file(path)}")
        return cid


__all__ = ["Trainer", "CHEATS", "faked_steps"]
