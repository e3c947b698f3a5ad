"""Sampled audits on the real training module: on-chain cost at scale, and what a lazy verifier earns (issue 12).

    .venv/bin/python bench/audit_sim.py [--validators 100] [--submissions 1000] [--committees 10,4,16]
        [--rounds 50] [--econ-validators 6] [--trainers 10] [--cheat-share 0.1] [--fake-fraction 0.1]
        [--audit-cpu-s 18] [--cpu-price 139] [--sweep-rounds 10] [--seed 12] [--json OUT] [--quick]

Everything runs the chain in process: abci_app.app.Application with real
genesis, real signed txs, FinalizeBlock and Commit, as CometBFT drives it; the
training module is not mocked. Only the ML is a stand-in: a step's gradient
proof is sha256("grad/<trainer>/<round>/<step>"), which an honest recomputation
"knows" and nobody else does (tests/unit/test_training.py does the same). Which
steps a validator checks is the real `audit.audit_sample` over its real ed25519
signature of `audit.audit_message`, so which faked steps it catches follows
from the chain's own draw, not from a coin flip.

1. Scale (`--validators` V x `--submissions` S, committee size c for each of
   `--committees`): bond S trainers, one round: S submissions, each auditor's
   MsgCommitVerdicts and MsgRevealVerdicts (its verdicts on every submission
   of its committees, with proofs), then V MsgCommitMerge (sealed merge
   votes) and V MsgAttestMerge (their reveals). Per round: txs and
   bytes on chain by message type, bytes written under training/ and the net
   growth of the training/ state, the slowest FinalizeBlock and end_block
   (reported, nothing asserted). Compared with the old design: one MsgAttest
   per validator per submission (V x S txs of `old_attest_tx_bytes()`). CPU per
   validator per round = entries it audits x `--audit-cpu-s`; detection from
   `audit.escape_probability_ppm`.
2. Economics (`--rounds` rounds; `--econ-validators` validators of equal stake;
   `--trainers` trainers, `--cheat-share` of whose submissions each round fake
   `--fake-fraction` of their k steps at seeded positions): for each lazy
   strategy a network of one validator playing it and the others honest, at
   the localnet's params (abci_app.localnet.LOCALNET_APP_STATE; its economic
   params are training.Params' defaults). Each validator is charged
   `--audit-cpu-s` per audit and audit_cpu_s / s per fraud claim it judges, at
   `--cpu-price` ugrad per CPU-second. Per strategy: earned (verifier_paid
   events: fee shares, reward share, claimants' slash share), stake lost
   (verifier_penalized events), tx fees, CPU cost, net. Then the CPU price
   at which each lazy strategy would match an honest validator (exact: CPU
   cost does not change what the chain does), and a small sweep of check_fee
   (with verifier_reward_bps 0) and of fraud_proof_slash_bps, rerunning the
   chain, for where the ordering flips.

Strategies: honest (recomputes its sample: claims fraud at the first faked
step its sample hits, else accepts with the true proofs); accept_no_proofs
(says accept, gives no proofs: what a validator on another kernel path does);
accept_guessed (says accept with made-up proofs); copy_others (cannot see
verdicts before committing: commits to a placeholder, then tries to reveal a
copy of the revealed verdicts with the proofs others revealed; the chain
refuses it, so it ends unrevealed); non_revealer (commits, never reveals).
In disputes the honest validators judge each claim by recomputing its step;
the lazy ones copy those public judgements a block later.

--quick: V=8, S=40, c=4 and 8 rounds with 4 validators: seconds (tests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.internal.encoder import _VarintBytes
from google.protobuf.timestamp_pb2 import Timestamp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abci_app import app as app_module
from abci_app import client, crypto, tx
from abci_app.localnet import LOCALNET_APP_STATE
from abci_app.modules import audit, training
from abci_app.pb.tendermint.abci import types_pb2 as abci

CHAIN_ID = "gradchain-localnet"  # the localnet's: tx sizes include it
MIN_FEE = 1  # bank min_fee in app_state()
STAKE = 1_000_000  # a localnet genesis validator's self-bond (localnet.genesis_self_bond)
POWER_UNIT = LOCALNET_APP_STATE["staking"]["params"]["power_unit"]
TRAINER_BOND = 2_000_000
TRAINER_FEE = 100_000  # covers a submission's ~5 KB of state at the bank's default byte_fee
DATASET = {"name": "kjv", "cid": "bafkrei" + "a" * 52, "sha256": hashlib.sha256(b"corpus").hexdigest(), "licence": "public-domain",
           "bytes": 100, "tokens": 100, "tokenizer": "bytes"}
STRATEGIES = ("honest", "accept_no_proofs", "accept_guessed", "copy_others", "non_revealer")
LAZY = STRATEGIES[1:]
# SmolLM2-135M LoRA: ~1.5 CPU-s per AdamW step at 4 x 64 tokens, 2 threads (abci_app/localnet.py, bench/verify.py
# --model smollm2; docs/smollm2.md: 2.8-3.1 CPU-s at 1 thread): s = 12 steps.
DEFAULT_AUDIT_CPU_S = 12 * 1.5
TINY_AUDIT_CPU_S = 12 * 0.0125  # the tiny GPT (test preset): 0.011-0.014 CPU-s a step (docs/training.md)


def key(tag: str, i: int) -> crypto.PrivateKey:
    return crypto.PrivateKey(hashlib.sha256(f"audit-sim/{tag}/{i}".encode()).digest())


def fixed_key(i: int) -> crypto.PrivateKey:
    """tests/unit/conftest.py's keys: the economics runs use the unit tests' validators and trainers."""
    return crypto.PrivateKey(bytes([i]) * 32)


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def cid(tag: str) -> str:
    return "bafkrei" + hashlib.sha256(tag.encode()).hexdigest()[:52].translate(str.maketrans("0189", "2345"))


def true_proof(trainer: str, round_id: int, step: int) -> bytes:
    """The gradient proof an honest recomputation of `step` yields (stands in for torch)."""
    return hashlib.sha256(f"grad/{trainer}/{round_id}/{step}".encode()).digest()


def fake_proof(trainer: str, round_id: int, step: int) -> bytes:
    """What a cheater commits to for a step it did not compute: no recomputation gives it."""
    return hashlib.sha256(f"fake/{trainer}/{round_id}/{step}".encode()).digest()


# --- the chain ------------------------------------------------------------------------


@dataclass
class BlockStats:
    height: int
    txs: int
    tx_bytes: dict  # message kind -> bytes
    tx_count: dict  # message kind -> txs
    failed: dict  # message kind -> failed txs
    fees: dict  # message kind -> fees paid (min_fee + byte_fee per state byte beyond free_bytes)
    training_written: int  # bytes of keys + values written (or deleted: key only) under training/
    finalize_s: float
    end_block_s: float
    phase_after: str


class SimChain:
    """Application driven the way CometBFT drives it (the in-process harness of tests/unit/conftest.py, plus measurements)."""

    def __init__(self, home: Path, app_state: dict):
        self.app = app_module.Application(home)
        self.height = 0
        self.nonces: dict[str, int] = {}
        self.fees: dict[str, int] = {}  # fees signed, by signer
        self._fee_of: dict[bytes, int] = {}
        self.stats: list[BlockStats] = []
        self.events: list[tuple[str, dict]] = []
        self.last_results = []
        self.app.init_chain(abci.RequestInitChain(chain_id=CHAIN_ID, app_state_bytes=json.dumps(app_state).encode(), initial_height=1))
        self._end_block_s = 0.0
        runtime = app_module.runtime
        if not getattr(runtime.end_block, "_timed", False):  # time the end-of-block hooks (instrumentation only)
            inner = runtime.end_block

            def timed(ctx):
                t0 = time.perf_counter()
                try:
                    inner(ctx)
                finally:
                    timed.last = time.perf_counter() - t0

            timed._timed, timed.last = True, 0.0
            runtime.end_block = timed
        self.block([])

    def abci_query(self, path: str, data: bytes = b"") -> abci.ResponseQuery:
        """A node's answer to a query, from the app in process (what client.fee_for asks)."""
        return self.app.query(abci.RequestQuery(path=path, data=data))

    def fee_for(self, signer: crypto.PrivateKey, msg) -> int:
        """The fee the message's state writes need (bank byte_fee beyond free_bytes): the clients' rule, client.fee_for."""
        nonce = self.nonces.get(signer.address, 0)
        return client.fee_for(self, MIN_FEE, lambda fee: tx.build_unsigned(signer.pubkey, CHAIN_ID, nonce, fee, msg))

    def tx(self, signer: crypto.PrivateKey, msg, fee: int | None = None) -> bytes:
        """A signed tx paying `fee`, or exactly what its state writes need (simulated: one tx per signer per block)."""
        fee = self.fee_for(signer, msg) if fee is None else fee
        self.fees[signer.address] = self.fees.get(signer.address, 0) + fee
        nonce = self.nonces.get(signer.address, 0)
        self.nonces[signer.address] = nonce + 1
        raw = tx.build(signer, CHAIN_ID, nonce, fee, msg)
        self._fee_of[raw] = fee
        return raw

    def block(self, txs: list[tuple[str, bytes]]) -> abci.ResponseFinalizeBlock:
        """txs: (message kind, raw tx) pairs."""
        self.height += 1
        t0 = time.perf_counter()
        response = self.app.finalize_block(abci.RequestFinalizeBlock(
            txs=[raw for _, raw in txs], height=self.height, time=Timestamp(seconds=1_700_000_000 + self.height),
            hash=hashlib.sha256(b"audit-sim block %d" % self.height).digest()))
        finalize_s = time.perf_counter() - t0
        written = sum(len(k) + len(v or b"") for k, v in self.app._block.writes() if k.startswith(training.PREFIX))
        self.app.commit(abci.RequestCommit())
        stats = BlockStats(self.height, len(txs), {}, {}, {}, {}, written, finalize_s, app_module.runtime.end_block.last, self.phase())
        for (kind, raw), result in zip(txs, response.tx_results):
            stats.tx_bytes[kind] = stats.tx_bytes.get(kind, 0) + len(raw)
            stats.tx_count[kind] = stats.tx_count.get(kind, 0) + 1
            stats.fees[kind] = stats.fees.get(kind, 0) + self._fee_of.pop(raw, 0)
            if result.code:
                stats.failed[kind] = stats.failed.get(kind, 0) + 1
        self.stats.append(stats)
        for event in [*response.events, *(e for r in response.tx_results for e in r.events)]:
            self.events.append((event.type, {a.key: a.value for a in event.attributes}))
        self.last_results = response.tx_results
        return response

    def state(self):
        return self.app.store.begin_block()

    def round(self) -> training.Round | None:
        return training.current_round(self.state())

    def phase(self) -> str:
        rnd = self.round()
        return rnd.phase if rnd else "idle"

    def until(self, phases: tuple[str, ...], limit: int = 200) -> None:
        for _ in range(limit):
            if self.phase() in phases:
                return
            self.block([])
        raise RuntimeError(f"never reached {phases}: {self.phase()}")

    def training_state_bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self.state().iter_prefix(training.PREFIX))

    def close(self) -> None:
        self.app.close()


def app_state(validators: list[crypto.PrivateKey], cons: list[bytes], funded: list[crypto.PrivateKey], params: dict,
              max_validators: int) -> dict:
    staking_params = LOCALNET_APP_STATE["staking"]["params"] | {"downtime_max_missed": 1_000, "max_validators": max(100, max_validators)}
    return {
        "bank": {"params": {"min_fee": MIN_FEE}, "balances": [{"address": k.address, "amount": 10**12} for k in validators + funded]},
        "staking": {"params": staking_params, "validators": [
            {"operator": v.address, "pubkey": c.hex(), "self_bond": STAKE} for v, c in zip(validators, cons)]},
        "datasets": {"datasets": [DATASET]},
        "registry": {"versions": [{"cid": cid("v0"), "sha256": sha("v0"), "bytes": 10, "family": "tiny-gpt", "config": {"n_layer": 1},
                                   "dataset_ids": [0], "licence": "Apache-2.0"}]},
        "training": {"params": params},
    }


def localnet_params(**overrides) -> dict:
    """The localnet's training params (the economic ones are training.Params' defaults), short windows: every phase ends
    early once everyone acted, and the windows only bound the waits for those who do not."""
    return LOCALNET_APP_STATE["training"]["params"] | {"submission_blocks": 2, "verification_blocks": 4, "reveal_blocks": 3,
                                                       "dispute_blocks": 3, "merge_blocks": 3} | overrides


def submit_msg(trainer: str, round_id: int, steps: int, faked: set[int], tag: str) -> tx.MsgSubmitDelta:
    commitments = b"".join(audit.grad_commitment((fake_proof if i in faked else true_proof)(trainer, round_id, i)) for i in range(steps))
    return tx.MsgSubmitDelta(round=round_id, cid=cid(tag), sha256=sha(tag), bytes=1_000_000, loss_before_micro=2_000_000,
                             loss_after_micro=1_990_000, steps=steps, kernel_path="torch-2.15.0+cu132/AVX2/t2",
                             trajectory_cid=cid("t" + tag), trajectory_sha256=sha("t" + tag), state_bytes=1_000_000,
                             grad_commitments=commitments)


def salt_of(val: crypto.PrivateKey, round_id: int) -> bytes:
    return hashlib.sha256(b"audit-sim salt" + val.pubkey + round_id.to_bytes(8, "big")).digest()


def honest_verdict(val: crypto.PrivateKey, rnd: training.Round, sub: training.Submission, s: int, faked: set[int]) -> tx.AuditVerdict:
    """Recompute the sampled steps: a faked one does not reproduce (claim it, the first in draw order); else prove them all."""
    signature = val.sign(audit.audit_message(rnd.id, sub.index, sub.trajectory_sha256, rnd.beacon))
    sample = audit.audit_sample(signature, sub.steps, s)
    caught = [i for i in sample if i in faked]
    if caught:
        return tx.AuditVerdict(submission=sub.index, verdict=training.VERDICTS.index(training.FRAUD), audit_signature=signature,
                               fraud_step=caught[0], reason="step does not reproduce")
    return tx.AuditVerdict(submission=sub.index, verdict=0, audit_signature=signature,
                           step_proofs=[true_proof(sub.trainer, rnd.id, i) for i in sample])


def merge_votes(vals: list[crypto.PrivateKey], round_id: int, name: str) -> dict[str, tx.MsgAttestMerge]:
    """Each validator's merge vote: the same recomputed checkpoint `name` and measurements, its own salt."""
    return {v.address: tx.MsgAttestMerge(round=round_id, cid=cid(name), sha256=sha(name), bytes=1_000_000, held_out_loss_micro=1_990_000,
                                         salt=hashlib.sha256(b"audit-sim merge salt" + v.pubkey + round_id.to_bytes(8, "big")).digest())
            for v in vals}


def merge_commit(val: crypto.PrivateKey, vote: tx.MsgAttestMerge) -> tx.MsgCommitMerge:
    return tx.MsgCommitMerge(round=vote.round, commitment=training.merge_commitment(vote.round, val.address, vote))


def lazy_verdict(val: crypto.PrivateKey, rnd: training.Round, sub: training.Submission, s: int, strategy: str) -> tx.AuditVerdict:
    signature = val.sign(audit.audit_message(rnd.id, sub.index, sub.trajectory_sha256, rnd.beacon))
    v = tx.AuditVerdict(submission=sub.index, verdict=0, audit_signature=signature)
    if strategy == "accept_guessed":
        v.step_proofs.extend(hashlib.sha256(b"guess" + signature + bytes([i])).digest() for i in range(min(s, sub.steps)))
    return v


# --- 1. scale ---------------------------------------------------------------------


_varint = _VarintBytes  # protobuf's own varint: the old MsgAttest is built by hand (its message type is gone)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    tag = _varint(number << 3 | wire)
    return tag + (_varint(len(payload)) + payload if wire == 2 else payload)


def old_attest_tx_bytes(round_id: int = 12, submission: int = 500, error_ppm: int = 0, reason: str = "", nonce: int = 1_000, fee: int = 1) -> int:
    """Bytes of one tx of the old design: TxBody.attest (field 51, removed by issue 12) = MsgAttest{round, submission,
    accept, measured_error_ppm, reason, no_gain}, in the same Tx envelope (body, 32-byte pubkey, 64-byte signature).
    Encoded by hand from the old proto (git show e2f56af:proto/gradchain/tx/v1/tx.proto): the message no longer exists."""
    attest = _field(1, 0, _varint(round_id)) + _field(2, 0, _varint(submission)) + _field(3, 0, _varint(1))
    attest += (_field(4, 0, _varint(error_ppm)) if error_ppm else b"") + (_field(5, 2, reason.encode()) if reason else b"")
    body = _field(1, 2, CHAIN_ID.encode()) + _field(2, 0, _varint(nonce)) + _field(3, 0, _varint(fee)) + _field(51, 2, attest)
    return len(_field(1, 2, body) + _field(2, 2, b"\0" * 32) + _field(3, 2, b"\0" * 64))


@dataclass
class ScaleResult:
    validators: int
    submissions: int
    committee_size: int
    audit_steps: int
    steps: int
    auditors: int
    entries_per_auditor: dict  # min, mean, max
    txs: dict  # kind -> count
    tx_bytes: dict  # kind -> bytes
    failed: dict  # kind -> failed txs
    fees: dict  # kind -> fees paid
    refused_reveals: list  # (entries, tx bytes) of reveals the chain refused
    blocks: int
    training_written: int
    training_growth: int
    slowest_finalize_s: float
    slowest_end_block_s: float
    slowest_end_block_phase: str
    statuses: dict
    version: int | None  # the version the round registered (None: no merge registered)
    merge_errors: list  # why commit_merge and attest_merge txs failed
    penalties: dict  # reason -> validators charged
    audit_txs: int  # submit + commit + reveal (+ judge)
    merge_txs: int  # commit_merge + attest_merge
    old_txs: int
    old_tx_bytes: int
    cpu_per_validator_s: dict  # min, mean, max of entries x audit_cpu_s
    escape_ppm: dict  # "f=..": escape probability of a submission faking f of k, all c members honest
    wall_s: float = 0.0


def run_scale(validators: int, submissions: int, committee_size: int, audit_cpu_s: float, workdir: Path, seed: int) -> ScaleResult:
    t_start = time.perf_counter()
    vals = [key("val", i) for i in range(validators)]
    cons = [key("cons", i).pubkey for i in range(validators)]
    trainers = [key("trainer", i) for i in range(submissions)]
    params = localnet_params(committee_size=committee_size, max_submissions=submissions, submission_blocks=3,
                             verification_blocks=5, reveal_blocks=5, dispute_blocks=5, merge_blocks=5)
    chain = SimChain(workdir / f"scale-{validators}-{submissions}-{committee_size}", app_state(vals, cons, trainers, params, validators))
    s, k = params["audit_steps"], params["steps"]
    try:
        chain.block([("bond_trainer", chain.tx(t, tx.MsgBondTrainer(amount=TRAINER_BOND), fee=1)) for t in trainers])
        rnd = chain.round()
        assert rnd is not None and rnd.phase == training.SUBMIT, "the round opens on the first trainer bond"
        first_block = len(chain.stats)
        before = chain.training_state_bytes()
        chain.block([("submit_delta", chain.tx(t, submit_msg(t.address, rnd.id, k, set(), f"{seed}/{i}"))) for i, t in enumerate(trainers)])
        chain.until((training.COMMIT,))
        state = chain.state()
        rnd = training.current_round(state)
        subs = training.submissions(state, rnd.id)
        by_val = {v.address: v for v in vals}
        sealed: dict[str, list] = {op: [] for op in rnd.auditors}
        for sub in subs:  # submission order: each auditor's list ends up in increasing submission order
            for op, _ in sub.committee:
                sealed[op].append(honest_verdict(by_val[op], rnd, sub, s, set()))
        commits = [("commit_verdicts", chain.tx(by_val[op], tx.MsgCommitVerdicts(
            round=rnd.id, commitment=training.verdicts_commitment(rnd.id, salt_of(by_val[op], rnd.id), by_val[op].pubkey, vs))))
            for op, vs in sealed.items()]
        chain.block(commits)
        chain.until((training.REVEAL,))
        reveals = [("reveal_verdicts", chain.tx(by_val[op], tx.MsgRevealVerdicts(
            round=rnd.id, salt=salt_of(by_val[op], rnd.id), operator_pubkey=by_val[op].pubkey, verdicts=vs)))
            for op, vs in sealed.items()]
        chain.block(reveals)
        refused = [(len(sealed[op]), len(raw)) for (op, (_, raw)), r in zip(zip(sealed, reveals), chain.last_results) if r.code]
        chain.until((training.MERGE, training.CLOSED, "idle"))
        merge_errors = []
        if chain.phase() == training.MERGE:
            votes = merge_votes(vals, rnd.id, f"merge/{rnd.id}")
            chain.block([("commit_merge", chain.tx(v, merge_commit(v, votes[v.address]))) for v in vals])
            merge_errors += sorted({r.log for r in chain.last_results if r.code})
            chain.until((training.MERGE_REVEAL,))  # every validator committed: the reveal starts at once
            chain.block([("attest_merge", chain.tx(v, votes[v.address])) for v in vals])
            merge_errors += sorted({r.log for r in chain.last_results if r.code})  # the last reveal ends the merge in its block
            chain.until((training.CLOSED, training.SUBMIT, "idle"))
        state = chain.state()
        closed = training.get_round(state, rnd.id)
        statuses: dict[str, int] = {}
        for sub in training.submissions(state, rnd.id):
            statuses[sub.status] = statuses.get(sub.status, 0) + 1
        assert closed.phase == training.CLOSED, f"round {rnd.id} did not close: {closed.phase}"
        penalties: dict[str, int] = {}
        for kind, attrs in chain.events:
            if kind == "verifier_penalized":
                penalties[attrs["reason"]] = penalties.get(attrs["reason"], 0) + 1
        growth = chain.training_state_bytes() - before
        blocks = chain.stats[first_block:]
        txs: dict[str, int] = {}
        tx_bytes: dict[str, int] = {}
        failed: dict[str, int] = {}
        fees: dict[str, int] = {}
        for b in blocks:
            for kind, n in b.tx_count.items():
                txs[kind] = txs.get(kind, 0) + n
                tx_bytes[kind] = tx_bytes.get(kind, 0) + b.tx_bytes[kind]
                fees[kind] = fees.get(kind, 0) + b.fees[kind]
            for kind, n in b.failed.items():
                failed[kind] = failed.get(kind, 0) + n
        slowest = max(blocks, key=lambda b: b.end_block_s)
        entries = [len(vs) for vs in sealed.values()]
        return ScaleResult(
            validators=validators, submissions=submissions, committee_size=committee_size, audit_steps=s, steps=k,
            auditors=len(rnd.auditors), entries_per_auditor={"min": min(entries), "mean": sum(entries) / len(entries), "max": max(entries)},
            txs=txs, tx_bytes=tx_bytes, failed=failed, fees=fees, refused_reveals=refused, blocks=len(blocks),
            training_written=sum(b.training_written for b in blocks), training_growth=growth,
            slowest_finalize_s=max(b.finalize_s for b in blocks), slowest_end_block_s=slowest.end_block_s,
            slowest_end_block_phase=slowest.phase_after, statuses=statuses,
            version=closed.version, merge_errors=merge_errors, penalties=penalties,
            audit_txs=sum(txs.get(kind, 0) for kind in ("submit_delta", "commit_verdicts", "reveal_verdicts", "judge_claims")),
            merge_txs=txs.get("commit_merge", 0) + txs.get("attest_merge", 0), old_txs=validators * submissions, old_tx_bytes=old_attest_tx_bytes(),
            cpu_per_validator_s={"min": min(entries) * audit_cpu_s, "mean": sum(entries) / len(entries) * audit_cpu_s,
                                 "max": max(entries) * audit_cpu_s},
            escape_ppm={f"f={f}": audit.escape_probability_ppm(k, max(1, round(f * k)), s, committee_size or validators)
                        for f in (0.05, 0.1, 0.5)},
            wall_s=time.perf_counter() - t_start,
        )
    finally:
        chain.close()


def max_reveal_entries(audit_steps: int) -> int:
    """How many proven verdicts fit one MsgRevealVerdicts under tx.MAX_TX_BYTES (measured by building one)."""
    val = fixed_key(1)
    v = tx.AuditVerdict(submission=99_999, verdict=0, audit_signature=b"\1" * 64, step_proofs=[b"\2" * 32] * audit_steps)
    n = 1
    while len(tx.build(val, CHAIN_ID, 10_000, 1, tx.MsgRevealVerdicts(round=10_000, salt=b"\0" * 32, operator_pubkey=val.pubkey,
                                                                          verdicts=[v] * n))) <= tx.MAX_TX_BYTES:
        n += 1
    return n - 1


# --- 2. economics -----------------------------------------------------------------


@dataclass
class Ledger:
    earned: int = 0
    stake_lost: int = 0
    tx_fees: int = 0
    cpu_s: float = 0.0
    audits: int = 0
    claims_made: int = 0
    judged: int = 0
    penalties: dict = field(default_factory=dict)  # reason -> amount

    def net(self, cpu_price: float) -> float:
        return self.earned - self.stake_lost - self.tx_fees - self.cpu_s * cpu_price


@dataclass
class EconRun:
    strategies: list  # per validator
    ledgers: list  # per validator
    rounds: int
    cheats: int  # cheating submissions
    caught: int  # rejected
    statuses: dict
    txs_per_round: list  # [{"submit_delta": n, "commit_verdicts": n, ...}] per round
    auditors_per_round: list
    escaped: int  # cheats not rejected


def run_economics(strategies: list[str], rounds: int, trainers: int, cheat_share: float, fake_fraction: float, audit_cpu_s: float,
                  workdir: Path, seed: int, tag: str, **param_overrides) -> EconRun:
    vals = [fixed_key(i) for i in range(1, 1 + len(strategies))]
    cons = [crypto.PrivateKey(bytes([100 + i]) * 32).pubkey for i in range(len(strategies))]  # test_staking.cons_priv
    trainer_keys = [fixed_key(i) for i in range(10, 10 + trainers)]
    params = localnet_params(max_submissions=max(trainers, 16), **param_overrides)
    chain = SimChain(workdir / f"econ-{tag}", app_state(vals, cons, trainer_keys, params, len(vals)))
    strategy_of = {v.address: st for v, st in zip(vals, strategies)}
    index_of = {v.address: i for i, v in enumerate(vals)}
    ledgers = [Ledger() for _ in vals]
    rng = random.Random(f"{seed}/{tag}")
    k, s = params["steps"], params["audit_steps"]
    faked_count = max(1, round(fake_fraction * k))
    cheaters_per_round = max(1, round(cheat_share * trainers)) if cheat_share > 0 else 0
    cheats = caught = escaped = 0
    statuses: dict[str, int] = {}
    txs_per_round, auditors_per_round = [], []

    def send(pairs):
        """Validators pay what their txs' state writes need; trainers a flat fee (their bond and submission share a block)."""
        return chain.block([(kind, chain.tx(signer, msg, fee=None if signer.address in index_of else TRAINER_FEE)) for kind, signer, msg in pairs])

    try:
        chain.block([("bond_trainer", chain.tx(t, tx.MsgBondTrainer(amount=TRAINER_BOND), fee=1)) for t in trainer_keys])
        for _ in range(rounds):
            chain.until((training.SUBMIT,))
            first_block = len(chain.stats)
            rnd = chain.round()
            cheaters = set(rng.sample(range(trainers), cheaters_per_round))
            faked: dict[str, set[int]] = {}
            pairs = []
            state = chain.state()
            for i, t in enumerate(trainer_keys):
                bond = training.trainer_bond(state, t.address)
                if bond.bonded < TRAINER_BOND:  # a slashed cheater tops its bond up to submit again
                    pairs.append(("bond_trainer", t, tx.MsgBondTrainer(amount=TRAINER_BOND - bond.bonded)))
                faked[t.address] = set(rng.sample(range(k), faked_count)) if i in cheaters else set()
                pairs.append(("submit_delta", t, submit_msg(t.address, rnd.id, k, faked[t.address], f"{tag}/{rnd.id}/{i}")))
            send(pairs)
            chain.until((training.COMMIT, training.CLOSED, "idle"))
            state = chain.state()
            rnd = training.current_round(state)
            subs = {sub.index: sub for sub in training.submissions(state, rnd.id)}
            cheats += sum(1 for sub in subs.values() if faked[sub.trainer])
            by_val = {v.address: v for v in vals}
            sealed: dict[str, list] = {}
            for op in rnd.auditors:
                st, val = strategy_of[op], by_val[op]
                mine = [sub for sub in subs.values() if op in dict(sub.committee)]
                if st == "honest":
                    sealed[op] = [honest_verdict(val, rnd, sub, s, faked[sub.trainer]) for sub in mine]
                    ledgers[index_of[op]].cpu_s += audit_cpu_s * len(mine)
                    ledgers[index_of[op]].audits += len(mine)
                    ledgers[index_of[op]].claims_made += sum(v.verdict == 2 for v in sealed[op])
                elif st in ("accept_no_proofs", "accept_guessed"):
                    sealed[op] = [lazy_verdict(val, rnd, sub, s, st) for sub in mine]
                else:  # copy_others and non_revealer commit to something they never open
                    sealed[op] = []
            commits = []
            for op, vs in sealed.items():
                commitment = (training.verdicts_commitment(rnd.id, salt_of(by_val[op], rnd.id), by_val[op].pubkey, vs)
                              if strategy_of[op] not in ("copy_others", "non_revealer") else hashlib.sha256(b"placeholder" + op.encode()).digest())
                commits.append(("commit_verdicts", by_val[op], tx.MsgCommitVerdicts(round=rnd.id, commitment=commitment)))
            send(commits)
            chain.until((training.REVEAL,))
            send([("reveal_verdicts", by_val[op], tx.MsgRevealVerdicts(round=rnd.id, salt=salt_of(by_val[op], rnd.id),
                                                                        operator_pubkey=by_val[op].pubkey, verdicts=vs))
                  for op, vs in sealed.items() if strategy_of[op] not in ("copy_others", "non_revealer")])
            copiers = [op for op in rnd.auditors if strategy_of[op] == "copy_others"]
            if copiers and chain.phase() == training.REVEAL:
                send([("reveal_verdicts", by_val[op], copy_reveal(chain, by_val[op], rnd, s)) for op in copiers])
                assert all(r.code == training.InvalidReveal.code for r in chain.last_results), "a copy cannot open a commitment"
            chain.until((training.DISPUTE, training.MERGE, training.CLOSED, "idle"))
            if chain.phase() == training.DISPUTE:
                state = chain.state()
                open_claims = [c for index in subs for c in training.claims(state, rnd.id, index)]
                verdicts = [(c.submission, c.step, c.step not in faked[subs[c.submission].trainer]) for c in open_claims]
                judgements = tx.MsgJudgeClaims(round=rnd.id, judgements=[tx.ClaimJudgement(submission=i, step=st, valid=ok) for i, st, ok in verdicts])
                honest_judges = [by_val[op] for op, _ in rnd.powers if strategy_of[op] == "honest"]
                for val in honest_judges:
                    ledgers[index_of[val.address]].cpu_s += audit_cpu_s / s * len(verdicts)
                    ledgers[index_of[val.address]].judged += len(verdicts)
                send([("judge_claims", val, judgements) for val in honest_judges])
                if chain.phase() == training.DISPUTE:  # the lazy copy the judgements they have just seen
                    send([("judge_claims", by_val[op], judgements) for op, _ in rnd.powers if strategy_of[op] != "honest"])
                chain.until((training.MERGE, training.CLOSED, "idle"))
            if chain.phase() == training.MERGE:  # every validator, whatever it does in audits, seals and reveals the same merge
                voters = [by_val[op] for op, _ in rnd.powers]
                votes = merge_votes(voters, rnd.id, f"{tag}/merge/{rnd.id}")
                send([("commit_merge", v, merge_commit(v, votes[v.address])) for v in voters])
                chain.until((training.MERGE_REVEAL,))
                send([("attest_merge", v, votes[v.address]) for v in voters])
            chain.until((training.SUBMIT, "idle"))
            state = chain.state()
            for sub in training.submissions(state, rnd.id):
                statuses[sub.status] = statuses.get(sub.status, 0) + 1
                if faked[sub.trainer]:
                    caught += sub.status == training.REJECTED
                    escaped += sub.status != training.REJECTED
            counts: dict[str, int] = {}
            for b in chain.stats[first_block:]:
                for kind, n in b.tx_count.items():
                    if kind != "bond_trainer":
                        counts[kind] = counts.get(kind, 0) + n
            txs_per_round.append(counts)
            auditors_per_round.append(len(rnd.auditors))
        for v, ledger in zip(vals, ledgers):
            ledger.tx_fees = chain.fees.get(v.address, 0)
        for kind, attrs in chain.events:
            if attrs.get("validator") not in index_of:
                continue
            ledger = ledgers[index_of[attrs["validator"]]]
            if kind == "verifier_paid":
                ledger.earned += int(attrs["amount"])
            elif kind == "verifier_penalized":
                ledger.stake_lost += int(attrs["amount"])
                ledger.penalties[attrs["reason"]] = ledger.penalties.get(attrs["reason"], 0) + int(attrs["amount"])
        return EconRun(list(strategies), ledgers, rounds, cheats, caught, statuses, txs_per_round, auditors_per_round, escaped)
    finally:
        chain.close()


def copy_reveal(chain: SimChain, val: crypto.PrivateKey, rnd: training.Round, s: int) -> tx.MsgRevealVerdicts:
    """The best copy a validator can make once others revealed: their verdict on each of its submissions, its own signature
    and sample, and for each sampled step a proof someone revealed for that step (a guess where nobody did)."""
    state = chain.state()
    verdicts = []
    for sub in training.submissions(state, rnd.id):
        if val.address not in dict(sub.committee):
            continue
        entries = training.audit_entries(state, rnd.id, sub.index)
        signature = val.sign(audit.audit_message(rnd.id, sub.index, sub.trajectory_sha256, rnd.beacon))
        kind = max(training.VERDICTS, key=lambda v: sum(e.power for e in entries if e.verdict == v))
        if kind == training.FRAUD:
            step = next(e.fraud_step for e in entries if e.verdict == training.FRAUD)
            verdicts.append(tx.AuditVerdict(submission=sub.index, verdict=2, audit_signature=signature, fraud_step=step))
            continue
        # Revealed proofs are on chain only as pass/fail flags; the tx bytes carry them: take them from the revealed steps.
        commitments = training.grad_commitments(state, rnd.id, sub.index)
        known = {}
        for e in entries:
            if e.proof_ok:
                for step in e.steps_checked:
                    known[step] = commitments[32 * step: 32 * step + 32]  # stands for the proof bytes seen in the reveal tx
        sample = audit.audit_sample(signature, sub.steps, s)
        proofs = [true_proof(sub.trainer, rnd.id, i) if i in known else hashlib.sha256(b"guess%d" % i).digest() for i in sample]
        verdicts.append(tx.AuditVerdict(submission=sub.index, verdict=training.VERDICTS.index(kind), audit_signature=signature, step_proofs=proofs))
    return tx.MsgRevealVerdicts(round=rnd.id, salt=salt_of(val, rnd.id), operator_pubkey=val.pubkey, verdicts=verdicts)


def summarize(run: EconRun, cpu_price: float) -> dict:
    """Per strategy: mean earned, stake lost, tx fees, CPU cost and net per validator playing it."""
    out = {}
    for st in dict.fromkeys(run.strategies):
        ls = [l for l, x in zip(run.ledgers, run.strategies) if x == st]
        n = len(ls)
        penalties: dict[str, float] = {}
        for l in ls:
            for reason, amount in l.penalties.items():
                penalties[reason] = penalties.get(reason, 0) + amount / n
        out[st] = {"validators": n, "earned": sum(l.earned for l in ls) / n, "stake_lost": sum(l.stake_lost for l in ls) / n,
                   "tx_fees": sum(l.tx_fees for l in ls) / n, "cpu_s": sum(l.cpu_s for l in ls) / n,
                   "cpu_cost": sum(l.cpu_s for l in ls) / n * cpu_price, "net": sum(l.net(cpu_price) for l in ls) / n,
                   "audits": sum(l.audits for l in ls) / n, "claims": sum(l.claims_made for l in ls) / n, "penalties": penalties}
    return out


def break_even_cpu_price(honest: dict, lazy: dict) -> float | None:
    """The CPU price (ugrad per CPU-s) at which the honest validator's net equals the lazy one's: the chain's outcome
    does not depend on it, so this is exact for the run."""
    if not honest["cpu_s"]:
        return None
    return (honest["earned"] - honest["stake_lost"] - honest["tx_fees"] - (lazy["earned"] - lazy["stake_lost"] - lazy["tx_fees"])) / honest["cpu_s"]


# --- report -----------------------------------------------------------------------


def fmt(n: float) -> str:
    return f"{n:,.0f}"


def detection_table(k: int = 64, samples=(8, 12, 16), fractions=(0.05, 0.1, 0.5), checkers=(1, 4, 8)) -> list[dict]:
    rows = []
    for s in samples:
        for f in fractions:
            m = max(1, round(f * k))
            rows.append({"k": k, "s": s, "f": f, "m": m, **{f"c={c}": 1 - audit.escape_probability_ppm(k, m, s, c) / 1e6 for c in checkers}})
    return rows


def print_scale(r: ScaleResult, max_entries: int) -> None:
    total_txs = sum(r.txs.values())
    total_bytes = sum(r.tx_bytes.values())
    print(f"\nV={r.validators} validators x S={r.submissions} submissions, c={r.committee_size} (k={r.steps}, s={r.audit_steps}); "
          f"{r.auditors} auditors, {r.entries_per_auditor['min']}-{r.entries_per_auditor['max']} entries each "
          f"(mean {r.entries_per_auditor['mean']:.1f}; a reveal fits {max_entries}); {r.blocks} blocks, {r.wall_s:.0f} s wall")
    print(f"  {'message':<18}{'txs':>8}{'bytes':>14}{'bytes/tx':>10}{'refused':>9}{'fees/tx':>10}")
    for kind in sorted(r.txs, key=lambda k: -r.tx_bytes[k]):
        print(f"  {kind:<18}{r.txs[kind]:>8,}{r.tx_bytes[kind]:>14,}{r.tx_bytes[kind] // r.txs[kind]:>10,}{r.failed.get(kind, 0):>9}"
              f"{r.fees[kind] // r.txs[kind]:>10,}")
    print(f"  {'total':<18}{total_txs:>8,}{total_bytes:>14,}")
    print(f"  audit txs (submit + commit + reveal + judge) = {r.audit_txs:,} = S + 2 x auditors "
          f"({r.submissions} + 2 x {r.auditors}); merge {r.merge_txs}")
    print(f"  old design: V x S = {r.old_txs:,} MsgAttest txs x {r.old_tx_bytes} B = {r.old_txs * r.old_tx_bytes:,} B "
          f"(+ S submissions); now {total_txs / (r.old_txs + r.submissions):.4f} of the txs, {total_bytes / (r.old_txs * r.old_tx_bytes):.2f} of the bytes")
    print(f"  state: {r.training_written:,} B written under training/ over the round, net growth {r.training_growth:,} B "
          f"({r.training_growth / r.submissions:,.0f} B per submission)")
    print(f"  slowest FinalizeBlock {r.slowest_finalize_s:.2f} s; slowest end_block {r.slowest_end_block_s:.2f} s (phase after it: "
          f"{r.slowest_end_block_phase}) [this machine, in process; informative]")
    print(f"  merge: {'version %d registered' % r.version if r.version is not None else 'NO version registered'}"
          f"{'; merge txs failed: ' + '; '.join(r.merge_errors) if r.merge_errors else ''}; penalties (reason: validators) {r.penalties}")
    print(f"  decisions: {r.statuses}; refused reveals (entries, bytes): {r.refused_reveals[:5]}{' ...' if len(r.refused_reveals) > 5 else ''}")
    print(f"  CPU per validator per round at {r.cpu_per_validator_s['mean'] / max(r.entries_per_auditor['mean'], 1e-9):.2f} CPU-s per audit: "
          f"mean {r.cpu_per_validator_s['mean']:,.0f} s, max {r.cpu_per_validator_s['max']:,.0f} s "
          f"(full recomputation by every validator: {r.submissions} x k/s x that)")
    print(f"  P(a cheat escapes all c honest members), ppm: {r.escape_ppm}")


def print_econ(title: str, summary: dict, cpu_price: float, run: EconRun) -> None:
    print(f"\n{title}: {run.rounds} rounds, {run.cheats} cheating submissions, {run.caught} rejected, {run.escaped} escaped; {run.statuses}")
    print(f"  {'strategy':<18}{'n':>3}{'audits':>8}{'earned':>13}{'stake lost':>13}{'tx fees':>9}{'CPU s':>9}{'CPU cost':>11}{'net':>14}  penalties")
    for st, row in summary.items():
        pen = ", ".join(f"{r} {fmt(a)}" for r, a in sorted(row["penalties"].items()))
        print(f"  {st:<18}{row['validators']:>3}{row['audits']:>8.0f}{fmt(row['earned']):>13}{fmt(row['stake_lost']):>13}"
              f"{fmt(row['tx_fees']):>9}{row['cpu_s']:>9.0f}{fmt(row['cpu_cost']):>11}{fmt(row['net']):>14}  {pen}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--validators", type=int, default=100)
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--committees", default="10,4,16", help="committee sizes c for the scale run (0 = every validator)")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--econ-validators", type=int, default=6, help="validators in each economics network (one lazy, the rest honest)")
    ap.add_argument("--trainers", type=int, default=10)
    ap.add_argument("--cheat-share", type=float, default=0.1, help="share of each round's submissions that fake steps")
    ap.add_argument("--fake-fraction", type=float, default=0.1, help="share f of its k steps a cheater fakes")
    ap.add_argument("--audit-cpu-s", type=float, default=DEFAULT_AUDIT_CPU_S, help="CPU-s of one audit of s steps (bench/verify.py)")
    ap.add_argument("--cpu-price", type=float, default=None, help="ugrad per CPU-second (default: check_fee / (4 x audit_cpu_s))")
    ap.add_argument("--sweep-rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-econ", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="small sizes: seconds")
    args = ap.parse_args(argv)
    if args.quick:
        args.validators, args.submissions, args.committees, args.rounds, args.econ_validators, args.sweep_rounds = 8, 40, "4", 8, 4, 0
    check_fee = LOCALNET_APP_STATE["training"]["params"]["check_fee"]
    cpu_price = args.cpu_price if args.cpu_price is not None else check_fee / (4 * args.audit_cpu_s)
    report: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "cpu_price": cpu_price}
    params = training.Params(**localnet_params())
    with tempfile.TemporaryDirectory(prefix="audit-sim-") as tmp:
        workdir = Path(tmp)
        if not args.skip_scale:
            max_entries = max_reveal_entries(params.audit_steps)
            report["max_reveal_entries"] = {"s": params.audit_steps, "entries": max_entries, "max_tx_bytes": tx.MAX_TX_BYTES}
            report["old_attest_tx_bytes"] = {"accept": old_attest_tx_bytes(),
                                             "reject with reason": old_attest_tx_bytes(error_ppm=239_299, reason="error 239299 ppm above tolerance 2000")}
            print(f"one old MsgAttest tx: {report['old_attest_tx_bytes']['accept']} B (accept), "
                  f"{report['old_attest_tx_bytes']['reject with reason']} B (reject with a reason); "
                  f"one MsgRevealVerdicts fits {max_entries} proven verdicts at s = {params.audit_steps} (MAX_TX_BYTES {tx.MAX_TX_BYTES})")
            report["scale"] = []
            for c in [int(x) for x in args.committees.split(",") if x]:
                r = run_scale(args.validators, args.submissions, c, args.audit_cpu_s, workdir, args.seed)
                print_scale(r, max_entries)
                report["scale"].append(r.__dict__)
        if not args.skip_econ:
            report["detection"] = detection_table()
            honest = ["honest"] * args.econ_validators
            runs = {"all_honest": honest}
            runs |= {lazy: [lazy] + honest[1:] for lazy in LAZY}
            report["economics"] = {}
            print(f"\neconomics: {args.econ_validators} validators of {STAKE:,} ugrad stake each, {args.trainers} trainers, "
                  f"{args.cheat_share:.0%} of submissions fake {args.fake_fraction:.0%} of k = {params.steps} steps; s = {params.audit_steps}, "
                  f"c = {params.committee_size or 'all'}; check_fee {params.check_fee:,}, reward {params.reward:,} "
                  f"(verifier share {params.verifier_reward_bps} bps), unrevealed/bad proof {params.unrevealed_penalty_bps} bps per entry, "
                  f"accepted fraud {params.fraud_proof_slash_bps} bps, false claim {params.false_claim_penalty_bps} bps; "
                  f"CPU {args.audit_cpu_s:g} CPU-s per audit at {cpu_price:.1f} ugrad per CPU-s")
            for name, strategies in runs.items():
                run = run_economics(strategies, args.rounds, args.trainers, args.cheat_share, args.fake_fraction, args.audit_cpu_s,
                                    workdir, args.seed, name)
                summary = summarize(run, cpu_price)
                title = "all honest" if name == "all_honest" else f"one {name}, {args.econ_validators - 1} honest"
                print_econ(title, summary, cpu_price, run)
                entry = {"summary": summary, "cheats": run.cheats, "caught": run.caught, "escaped": run.escaped, "statuses": run.statuses,
                         "txs_per_round": run.txs_per_round, "auditors_per_round": run.auditors_per_round}
                if name != "all_honest":
                    entry["honest_minus_lazy"] = summary["honest"]["net"] - summary[name]["net"]
                    entry["break_even_cpu_price"] = break_even_cpu_price(summary["honest"], summary[name])
                    print(f"  honest net - {name} net = {fmt(entry['honest_minus_lazy'])} ugrad; equal at a CPU price of "
                          f"{entry['break_even_cpu_price']:,.0f} ugrad per CPU-s" if entry["break_even_cpu_price"] is not None else "")
                report["economics"][name] = entry
            if args.sweep_rounds:
                report["sweep"] = sweep(args, workdir, cpu_price)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return report


def sweep(args, workdir: Path, cpu_price: float) -> list[dict]:
    """Rerun the chain with one accept_no_proofs validator (the cheapest lazy strategy) at other params: where does it flip?"""
    points = [{"check_fee": fee, "verifier_reward_bps": 0} for fee in (0, 2_500, 5_000, 10_000)]
    points += [{"fraud_proof_slash_bps": bps} for bps in (0, 10, 100)]
    rows = []
    print(f"\nsweep ({args.sweep_rounds} rounds each; one accept_no_proofs validator, {args.econ_validators - 1} honest; "
          f"CPU {cpu_price:.1f} ugrad per CPU-s)")
    print(f"  {'params':<44}{'honest net':>14}{'lazy net':>14}{'honest - lazy':>15}")
    for i, point in enumerate(points):
        strategies = ["accept_no_proofs"] + ["honest"] * (args.econ_validators - 1)
        run = run_economics(strategies, args.sweep_rounds, args.trainers, args.cheat_share, args.fake_fraction, args.audit_cpu_s,
                            workdir, args.seed, f"sweep{i}", **point)
        summary = summarize(run, cpu_price)
        row = {"params": point, "honest_net": summary["honest"]["net"], "lazy_net": summary["accept_no_proofs"]["net"],
               "break_even_cpu_price": break_even_cpu_price(summary["honest"], summary["accept_no_proofs"])}
        rows.append(row)
        label = ", ".join(f"{k} {v}" for k, v in point.items())
        print(f"  {label:<44}{fmt(row['honest_net']):>14}{fmt(row['lazy_net']):>14}{fmt(row['honest_net'] - row['lazy_net']):>15}")
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
