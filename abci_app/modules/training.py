"""training: rounds, delta submissions, attestations, acceptance, rewards, merged versions.

Training happens off chain; this module only counts stake and checks hashes,
so block time does not depend on model size. A round:

1. opens (end_block) when training is enabled, a model version and the
   dataset exist, and some trainer is bonded; its seed is derived from the
   opening block's hash, so nobody picks their data. The active validators'
   powers are snapshotted into the round: only they vote, with that power,
   against that total, and staking keeps their stake slashable until the
   round's last possible height (`staking.hold_stake`);
2. SUBMIT: bonded trainers submit one delta each (`submit_delta`) until
   `submit_until`. A submission locks the trainer's whole free bond until it
   is decided; a full round takes a new submission only by evicting the
   pending, unattested one with the smallest bond, for a strictly larger one;
3. VERIFY: the snapshotted validators recompute each submission off chain and
   `attest` one of three verdicts: accept (the recomputation matches and the
   held-out loss did not regress beyond `max_heldout_regression_ppm`), no gain
   (it matches, but the loss regressed) or fraud (it does not match, or is
   unusable). With `quorum_bps` of the snapshot power: fraud rejects it
   (`slash_bps` of its locked bond slashed, part of it to the attesters who
   said so); accept accepts it (reward minted to the trainer, merged); valid
   (accept + no gain) once accept can no longer get there leaves it not
   merged: correct work that does not help earns nothing and keeps its bond.
   The phase ends at `verify_until`, or as soon as the submission window is
   over and every submission is decided; one still open then is not merged if
   valid power reached quorum, else it expires. Validators who called valid
   work fraud or fraud valid, or did not attest one that was still open at the
   end, pay `verifier_penalty_bps` of their stake (accept against no gain is an
   honest difference of measurement, not penalised);
4. MERGE: if anything was accepted, validators recompute the merge (the
   accepted deltas averaged in submission order) and `attest_merge` its CID
   and sha256; the aggregator chosen from the seed publishes it to IPFS. At
   quorum on (cid, sha256) the registry records the next version; if no
   quorum by `merge_until`, the round closes without one.

Trainer bonds live here, with the module that slashes them: `bond_trainer`,
`unbond_trainer` (only the unlocked part, returned after
`trainer_unbonding_blocks`), all held by the trainer pool account.

Losses and errors are integers in millionths: no float enters state.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace

from abci_app import crypto
from abci_app.context import Context, ModuleError, decode_int, decode_json, due_entries, encode_int, encode_json, enqueue, is_cid, is_sha256_hex, parse_uint64
from abci_app.modules import bank, datasets, registry, staking
from abci_app.state import Overlay
from abci_app.tx import tx_pb2

# --- Params ---------------------------------------------------------------------

BPS = 10_000
LORA_TARGETS = ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")  # Llama projections


@dataclass(frozen=True)
class Params:
    enabled: bool = False
    dataset_id: int = 0  # the registered dataset batches are drawn from
    submission_blocks: int = 20
    verification_blocks: int = 40
    merge_blocks: int = 40
    steps: int = 4  # k: training steps per submission
    learning_rate_micro: int = 1_000  # lr = 1e-3, in millionths
    batch_size: int = 8
    seq_len: int = 64
    tolerance_ppm: int = 2_000  # relative L2 error accepted between recomputations: 8.6x the worst honest cross-kernel error measured, 4.9x below a 1% perturbation (docs/training.md)
    recompute_steps: int = 0  # steps a validator recomputes; 0 = all k
    max_heldout_regression_ppm: int = 50_000  # held-out loss may not rise more than 5%
    reward: int = 1_000_000  # minted to a trainer per accepted submission
    slash_bps: int = 2_000  # share of the trainer bond taken from a rejected submission
    attester_share_bps: int = 5_000  # share of that slash paid to the attesters who rejected it
    verifier_penalty_bps: int = 10  # stake burned from a validator that was wrong or absent
    quorum_bps: int = 6_667  # 2/3 of the active voting power
    min_trainer_bond: int = 1_000_000
    trainer_unbonding_blocks: int = 20  # blocks before unbonded trainer collateral is paid out
    max_submissions: int = 16
    # LoRA families (smollm2-lora) train adapters of this spec; full-weight families ignore it.
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: str = "q_proj,v_proj"  # comma-separated, from LORA_TARGETS
    eval_prompts: int = 0  # validators score the merged model on this many of the fixed evaluation prompts (0 = none)

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if name == "enabled":
                if not isinstance(value, bool):
                    raise ValueError("training.params.enabled must be true or false")
            elif name == "lora_targets":
                targets = value.split(",") if isinstance(value, str) else []
                if not targets or any(t not in LORA_TARGETS for t in targets) or len(set(targets)) != len(targets):
                    raise ValueError(f"training.params.lora_targets must be distinct comma-separated names from {','.join(LORA_TARGETS)}, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"training.params.{name} must be a non-negative integer")
        if not 0 < self.quorum_bps <= BPS or self.slash_bps > BPS or self.attester_share_bps > BPS:
            raise ValueError("training params in basis points must be at most 10000 (quorum above 0)")
        if self.steps == 0 or self.submission_blocks == 0 or self.batch_size == 0 or self.seq_len == 0:
            raise ValueError("training.params steps, submission_blocks, batch_size and seq_len must be positive")
        if self.min_trainer_bond == 0:
            raise ValueError("training.params.min_trainer_bond must be positive: a free submission slot is a free lock-out")
        if self.lora_rank == 0 or self.lora_alpha == 0:
            raise ValueError("training.params lora_rank and lora_alpha must be positive")
        if self.recompute_steps not in (0, self.steps):
            # Sampling s of k steps needs per-step state commitments and a post-submission
            # seed (docs/training.md, "Sampling"); until then validators recompute all k.
            raise ValueError("training.params.recompute_steps: only full recomputation (0 or steps) is implemented")


# --- Storage --------------------------------------------------------------------

PREFIX = b"training/"
PARAMS_KEY = PREFIX + b"params"
CURRENT_KEY = PREFIX + b"current"  # id of the round in progress (absent between rounds)
COUNT_KEY = PREFIX + b"count"  # rounds ever opened
ROUND_PREFIX = PREFIX + b"round/"  # <round 8 BE> -> Round JSON
SUBMISSION_PREFIX = PREFIX + b"submission/"  # <round 8 BE><index 8 BE> -> Submission JSON
BY_TRAINER_PREFIX = PREFIX + b"by_trainer/"  # <round 8 BE><trainer 20> -> index
ATTESTATION_PREFIX = PREFIX + b"attestation/"  # <round 8 BE><index 8 BE><validator 20> -> Attestation JSON
MERGE_VOTE_PREFIX = PREFIX + b"merge_vote/"  # <round 8 BE><validator 20> -> MergeVote JSON
TRAINER_PREFIX = PREFIX + b"trainer/"  # <trainer 20> -> TrainerBond JSON
BONDED_TRAINERS_KEY = PREFIX + b"bonded_trainers"  # trainers with bonded >= min_trainer_bond: opening a round reads no list
TRAINER_UNBONDING_PREFIX = PREFIX + b"trainer_unbonding/"  # <due height 8 BE><seq 8 BE> -> TrainerUnbonding JSON
TRAINER_UNBONDING_SEQ_KEY = PREFIX + b"trainer_unbonding_seq"

TRAINER_POOL = bank.module_address("trainer_pool")  # holds every trainer's bonded and unbonding collateral

SUBMIT, VERIFY, MERGE, CLOSED = "submit", "verify", "merge", "closed"
PENDING, ACCEPTED, REJECTED, EXPIRED = "pending", "accepted", "rejected", "expired"
NOT_MERGED = "not_merged"  # valid (recomputation matches) but it does not help: not merged, no reward, bond kept


@dataclass(frozen=True)
class Round:
    id: int
    base_version: int
    dataset_id: int
    seed: str  # hex; sha256 of the opening block's hash and the round id
    open_height: int
    submit_until: int  # submissions accepted while height < submit_until
    verify_until: int
    merge_until: int = 0  # set when the merge phase starts
    phase: str = SUBMIT
    submissions: int = 0  # submissions in the round now (at most max_submissions; an eviction frees one)
    next_index: int = 0  # index of the next submission: an evicted index is never reused, so no late vote lands on another delta
    accepted: list[int] = field(default_factory=list)
    aggregator: str = ""  # chosen from the seed when the merge phase starts
    version: int | None = None  # the version registered from this round
    powers: list[list] = field(default_factory=list)  # [[operator, power]] of the active set at opening, operator byte order (<= max_validators)
    total_power: int = 0  # sum of `powers`: the quorum's denominator for the whole round


@dataclass(frozen=True)
class Submission:
    round: int
    index: int
    trainer: str
    cid: str
    sha256: str
    bytes: int
    loss_before_micro: int
    loss_after_micro: int
    steps: int
    kernel_path: str
    height: int
    status: str = PENDING
    accept_power: int = 0
    reject_power: int = 0  # power that attested fraud
    bond: int = 0  # trainer bond locked by this submission until it is decided; slash_bps of it is at stake
    no_gain_power: int = 0  # power that attested "valid, does not help"


@dataclass(frozen=True)
class TrainerBond:
    bonded: int = 0  # collateral in the pool, locked or not
    locked: int = 0  # part of `bonded` held by an undecided submission: not unbondable
    unbonding: int = 0  # unbonded, waiting for trainer_unbonding_blocks


@dataclass(frozen=True)
class Attestation:
    validator: str
    accept: bool
    power: int
    measured_error_ppm: int
    reason: str
    height: int
    no_gain: bool = False  # with accept false: valid but does not help; else fraud

    @property
    def verdict(self) -> str:
        return attest_verdict(self.accept, self.no_gain)


ACCEPT, NO_GAIN, FRAUD = "accept", "no_gain", "fraud"


def attest_verdict(accept: bool, no_gain: bool) -> str:
    """An attestation's verdict from MsgAttest's two flags (accept with no_gain is refused at the call)."""
    return ACCEPT if accept else NO_GAIN if no_gain else FRAUD


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


_raw = crypto.address_raw


def get_params(state: Overlay) -> Params:
    raw = decode_json(state.get(PARAMS_KEY))
    return Params(**raw) if raw else Params()


def get_round(state: Overlay, round_id: int) -> Round | None:
    raw = decode_json(state.get(ROUND_PREFIX + _u64(round_id)))
    return Round(**raw) if raw else None


def _put_round(state: Overlay, rnd: Round) -> None:
    state.set(ROUND_PREFIX + _u64(rnd.id), encode_json(asdict(rnd)))


def current_round(state: Overlay) -> Round | None:
    raw = state.get(CURRENT_KEY)
    return get_round(state, decode_int(raw)) if raw is not None else None


def get_submission(state: Overlay, round_id: int, index: int) -> Submission | None:
    raw = decode_json(state.get(SUBMISSION_PREFIX + _u64(round_id) + _u64(index)))
    return Submission(**raw) if raw else None


def _put_submission(state: Overlay, sub: Submission) -> None:
    state.set(SUBMISSION_PREFIX + _u64(sub.round) + _u64(sub.index), encode_json(asdict(sub)))


def submissions(state: Overlay, round_id: int) -> list[Submission]:
    return [Submission(**decode_json(v)) for _, v in state.iter_prefix(SUBMISSION_PREFIX + _u64(round_id))]


def attestations(state: Overlay, round_id: int, index: int) -> list[Attestation]:
    return [Attestation(**decode_json(v)) for _, v in state.iter_prefix(ATTESTATION_PREFIX + _u64(round_id) + _u64(index))]


def merge_votes(state: Overlay, round_id: int) -> list[dict]:
    return [decode_json(v) for _, v in state.iter_prefix(MERGE_VOTE_PREFIX + _u64(round_id))]


def trainer_bond(state: Overlay, trainer: str) -> TrainerBond:
    """A trainer's collateral: bonded (locked or not) and unbonding."""
    raw = decode_json(state.get(TRAINER_PREFIX + _raw(trainer)))
    return TrainerBond(**raw) if raw else TrainerBond()


def _put_trainer_bond(state: Overlay, params: Params, trainer: str, bond: TrainerBond) -> None:
    """Write a trainer's collateral and keep the count of trainers bonded at least min_trainer_bond."""
    was = trainer_bond(state, trainer).bonded >= params.min_trainer_bond
    now = bond.bonded >= params.min_trainer_bond
    if was != now:
        state.set(BONDED_TRAINERS_KEY, encode_int(bonded_trainers(state) + (1 if now else -1)))
    key = TRAINER_PREFIX + _raw(trainer)
    state.set(key, encode_json(asdict(bond))) if bond != TrainerBond() else state.delete(key)


def bonded_trainers(state: Overlay) -> int:
    """How many trainers have at least min_trainer_bond bonded."""
    return decode_int(state.get(BONDED_TRAINERS_KEY))


def trainer_unbondings(state: Overlay) -> list[dict]:
    """Pending trainer unbondings, by due height (for queries and tests; hooks read only due entries)."""
    return [decode_json(v) for _, v in state.iter_prefix(TRAINER_UNBONDING_PREFIX)]


def round_seed(block_hash: bytes, round_id: int) -> str:
    """The round's seed: from the block that opened it, which no trainer controls."""
    return hashlib.sha256(b"gradchain/round-seed" + block_hash + _u64(round_id)).hexdigest()


def quorum(params: Params, total_power: int) -> int:
    """The smallest power that is at least quorum_bps of the total (integer ceiling)."""
    return -(-total_power * params.quorum_bps // BPS)


# --- Events ---------------------------------------------------------------------
# round_opened(round, base_version, seed, submit_until, verify_until)
# delta_submitted(round, submission, trainer, cid, sha256, bond)
# submission_evicted(round, submission, trainer, bond, by)   a larger bond took its slot; its lock is released
# attested(round, submission, validator, verdict, measured_error_ppm)   verdict accept | no_gain | reject (fraud)
# delta_accepted(round, submission, trainer, reward)
# delta_not_merged(round, submission, trainer)       valid but no help: lock released, nothing slashed or paid
# delta_rejected(round, submission, trainer, slashed)       fraud: slash_bps of the submission's locked bond
# submission_expired(round, submission, trainer)     no quorum within the window
# verifier_penalized(round, validator, amount, reason)   wrong | absent
# merge_started(round, aggregator, merge_until, accepted)
# merge_attested(round, validator, cid, sha256)
# round_closed(round, version)                         version "" when none was registered
# trainer_bonded(trainer, amount)
# trainer_unbonding_started(trainer, amount, completion_height)
# trainer_unbonding_completed(trainer, amount)

# --- Errors ---------------------------------------------------------------------


class TrainingError(ModuleError):
    codespace = "training"


class UnknownRound(TrainingError):
    """No round with that id, or it is not the round in progress."""

    code = 1


class WrongPhase(TrainingError):
    """The round is not in the phase this message belongs to (e.g. a submission after the window)."""

    code = 2


class NotBonded(TrainingError):
    """Only trainers with at least min_trainer_bond may submit."""

    code = 3


class DuplicateSubmission(TrainingError):
    """One submission per trainer per round."""

    code = 4


class InvalidSubmission(TrainingError):
    """A malformed field: CID, sha256, size, step count."""

    code = 5


class UnknownSubmission(TrainingError):
    """No submission with that index in the round."""

    code = 6


class NotValidator(TrainingError):
    """Only active validators attest."""

    code = 7


class DuplicateAttestation(TrainingError):
    """A validator attests once per submission (and once per merge)."""

    code = 8


class AlreadyDecided(TrainingError):
    """The submission already reached a quorum."""

    code = 9


class RoundFull(TrainingError):
    """The round already has max_submissions and none of them can be evicted by this bond."""

    code = 10


class InvalidAmount(TrainingError):
    """Bond amounts are positive integers."""

    code = 11


class InsufficientTrainerBond(TrainingError):
    """Unbonding more trainer collateral than is bonded and unlocked."""

    code = 12


# --- Calls ------------------------------------------------------------------------


def _round_in_progress(state: Overlay, round_id: int) -> Round:
    rnd = current_round(state)
    if rnd is None or rnd.id != round_id:
        now = f"round {rnd.id} is in progress" if rnd else "no round is in progress"
        raise UnknownRound(f"round {round_id} is not open ({now}; see `gradchain query training round`)")
    return rnd


def submit_delta(ctx: Context, signer: str, msg: tx_pb2.MsgSubmitDelta) -> None:
    """MsgSubmitDelta: a bonded trainer's delta for the open round; locks the trainer's free bond until it is decided."""
    params = get_params(ctx.state)
    rnd = _round_in_progress(ctx.state, msg.round)
    if rnd.phase != SUBMIT or ctx.height >= rnd.submit_until:
        raise WrongPhase(f"round {rnd.id} stopped taking submissions at height {rnd.submit_until} (now {ctx.height})")
    if ctx.state.get(BY_TRAINER_PREFIX + _u64(rnd.id) + _raw(signer)) is not None:
        raise DuplicateSubmission(f"{signer} already submitted to round {rnd.id}")
    bond = trainer_bond(ctx.state, signer)
    stake = bond.bonded - bond.locked
    if stake < params.min_trainer_bond:
        raise NotBonded(f"{signer} has {stake}{bank.DENOM} unlocked trainer bond; {params.min_trainer_bond}{bank.DENOM} needed (`gradchain tx staking bond-trainer`)")
    if not is_cid(msg.cid) or not is_sha256_hex(msg.sha256) or msg.bytes == 0:
        raise InvalidSubmission("invalid delta reference: expected a CIDv1, a 64-hex sha256 and a non-zero size")
    if msg.steps != params.steps:
        raise InvalidSubmission(f"a submission trains exactly {params.steps} steps, got {msg.steps}")
    evicted = None
    if rnd.submissions >= params.max_submissions:
        evicted = _eviction_candidate(ctx.state, rnd.id)
        if evicted is None or evicted.bond >= stake:
            smallest = f"the smallest evictable bond is {evicted.bond}{bank.DENOM}" if evicted else "every submission already has attestations"
            raise RoundFull(f"round {rnd.id} already has {params.max_submissions} submissions and {smallest}; a larger trainer bond ({stake}{bank.DENOM} now) takes a slot")
    if evicted is not None:
        _evict(ctx, params, evicted, by=signer)
        rnd = replace(rnd, submissions=rnd.submissions - 1)
    sub = Submission(
        round=rnd.id, index=rnd.next_index, trainer=signer, cid=msg.cid, sha256=msg.sha256, bytes=msg.bytes,
        loss_before_micro=msg.loss_before_micro, loss_after_micro=msg.loss_after_micro, steps=msg.steps,
        kernel_path=msg.kernel_path[:64], height=ctx.height, bond=stake,
    )
    _put_trainer_bond(ctx.state, params, signer, replace(bond, locked=bond.locked + stake))
    _put_submission(ctx.state, sub)
    ctx.state.set(BY_TRAINER_PREFIX + _u64(rnd.id) + _raw(signer), encode_int(sub.index))
    _put_round(ctx.state, replace(rnd, submissions=rnd.submissions + 1, next_index=rnd.next_index + 1))
    ctx.emit("delta_submitted", round=rnd.id, submission=sub.index, trainer=signer, cid=sub.cid, sha256=sub.sha256, bond=stake)


def _eviction_candidate(state: Overlay, round_id: int) -> Submission | None:
    """The pending submission nobody attested yet with the smallest bond (ties: the latest index)."""
    open_ = [s for s in submissions(state, round_id) if s.status == PENDING and s.accept_power == 0 and s.reject_power == 0 and s.no_gain_power == 0]
    return min(open_, key=lambda s: (s.bond, -s.index), default=None)


def _evict(ctx: Context, params: Params, sub: Submission, by: str) -> None:
    """Drop an unattested submission and release its lock; its trainer may submit again with a larger bond."""
    bond = trainer_bond(ctx.state, sub.trainer)
    _put_trainer_bond(ctx.state, params, sub.trainer, replace(bond, locked=bond.locked - sub.bond))
    ctx.state.delete(SUBMISSION_PREFIX + _u64(sub.round) + _u64(sub.index))
    ctx.state.delete(BY_TRAINER_PREFIX + _u64(sub.round) + _raw(sub.trainer))
    ctx.emit("submission_evicted", round=sub.round, submission=sub.index, trainer=sub.trainer, bond=sub.bond, by=by)


def _snapshot_power(rnd: Round, signer: str) -> int:
    """The signer's power in the round's snapshot; only its members vote."""
    power = dict(rnd.powers).get(signer)
    if power is None:
        raise NotValidator(f"{signer} was not an active validator when round {rnd.id} opened: only those validators attest in it")
    return power


def attest(ctx: Context, signer: str, msg: tx_pb2.MsgAttest) -> None:
    """MsgAttest: a snapshotted validator's verdict on one submission."""
    params = get_params(ctx.state)
    rnd = _round_in_progress(ctx.state, msg.round)
    if rnd.phase not in (SUBMIT, VERIFY):
        raise WrongPhase(f"round {rnd.id} is past verification (phase {rnd.phase})")
    power = _snapshot_power(rnd, signer)
    if msg.accept and msg.no_gain:
        raise InvalidSubmission("an attestation is accept, no_gain or neither (fraud), not both accept and no_gain")
    sub = get_submission(ctx.state, rnd.id, msg.submission)
    if sub is None:
        raise UnknownSubmission(f"round {rnd.id} has no submission {msg.submission}")
    key = ATTESTATION_PREFIX + _u64(rnd.id) + _u64(sub.index) + _raw(signer)
    if ctx.state.get(key) is not None:
        raise DuplicateAttestation(f"{signer} already attested submission {sub.index} of round {rnd.id}")
    if sub.status != PENDING:
        raise AlreadyDecided(f"submission {sub.index} of round {rnd.id} is already {sub.status}")
    att = Attestation(signer, msg.accept, power, msg.measured_error_ppm, msg.reason[:120], ctx.height, msg.no_gain)
    ctx.state.set(key, encode_json(asdict(att)))
    verdict = att.verdict
    sub = replace(sub, accept_power=sub.accept_power + power * (verdict == ACCEPT), no_gain_power=sub.no_gain_power + power * (verdict == NO_GAIN),
                  reject_power=sub.reject_power + power * (verdict == FRAUD))
    ctx.emit("attested", round=rnd.id, submission=sub.index, validator=signer, verdict="reject" if verdict == FRAUD else verdict, measured_error_ppm=msg.measured_error_ppm)
    decision = _decision(params, rnd, sub, closing=False)
    if decision == ACCEPTED:
        sub = _accept(ctx, params, rnd, sub)
    elif decision == REJECTED:
        sub = _reject(ctx, params, rnd, sub)
    elif decision == NOT_MERGED:
        sub = _not_merged(ctx, params, rnd, sub)
    _put_submission(ctx.state, sub)


def _decision(params: Params, rnd: Round, sub: Submission, closing: bool) -> str:
    """What the votes so far decide: REJECTED, ACCEPTED, NOT_MERGED or PENDING.

    Fraud and accept each need the quorum. Valid power (accept + no gain) at
    quorum settles that the work is correct; it is not merged once accept
    cannot reach the quorum any more: no gain has the quorum, the power yet to
    vote is too small, or (`closing`) the window is over.
    """
    needed = quorum(params, rnd.total_power)
    if sub.reject_power >= needed:
        return REJECTED
    if sub.accept_power >= needed:
        return ACCEPTED
    if sub.accept_power + sub.no_gain_power >= needed:
        unvoted = rnd.total_power - sub.accept_power - sub.no_gain_power - sub.reject_power
        if closing or sub.no_gain_power >= needed or sub.accept_power + unvoted < needed:
            return NOT_MERGED
    return PENDING


def attest_merge(ctx: Context, signer: str, msg: tx_pb2.MsgAttestMerge) -> None:
    """MsgAttestMerge: a snapshotted validator's recomputation of the merged checkpoint."""
    params = get_params(ctx.state)
    rnd = _round_in_progress(ctx.state, msg.round)
    if rnd.phase != MERGE:
        raise WrongPhase(f"round {rnd.id} is not merging (phase {rnd.phase})")
    power = _snapshot_power(rnd, signer)
    if not is_cid(msg.cid) or not is_sha256_hex(msg.sha256) or msg.bytes == 0:
        raise InvalidSubmission("invalid merge reference: expected a CIDv1, a 64-hex sha256 and a non-zero size")
    key = MERGE_VOTE_PREFIX + _u64(rnd.id) + _raw(signer)
    if ctx.state.get(key) is not None:
        raise DuplicateAttestation(f"{signer} already attested the merge of round {rnd.id}")
    if not msg.prompts_correct <= msg.prompts_total <= params.eval_prompts:
        raise InvalidSubmission(f"invalid prompt score {msg.prompts_correct}/{msg.prompts_total}: at most eval_prompts = {params.eval_prompts} prompts, correct <= total")
    vote = {"validator": signer, "cid": msg.cid, "sha256": msg.sha256, "bytes": msg.bytes, "held_out_loss_micro": msg.held_out_loss_micro,
            "prompts_correct": msg.prompts_correct, "prompts_total": msg.prompts_total, "power": power}
    ctx.state.set(key, encode_json(vote))
    ctx.emit("merge_attested", round=rnd.id, validator=signer, cid=msg.cid, sha256=msg.sha256)
    agreeing = [v for v in merge_votes(ctx.state, rnd.id) if (v["cid"], v["sha256"], v["bytes"]) == (msg.cid, msg.sha256, msg.bytes)]
    if sum(v["power"] for v in agreeing) >= quorum(params, rnd.total_power):
        _register_merge(ctx, params, rnd, agreeing)


def bond_trainer(ctx: Context, signer: str, msg: tx_pb2.MsgBondTrainer) -> None:
    """MsgBondTrainer: put up collateral for training work."""
    if msg.amount <= 0:
        raise InvalidAmount(f"invalid amount {msg.amount}: must be a positive integer of {bank.DENOM}")
    params = get_params(ctx.state)
    bond = trainer_bond(ctx.state, signer)
    bank.transfer(ctx, signer, TRAINER_POOL, msg.amount)
    _put_trainer_bond(ctx.state, params, signer, replace(bond, bonded=bond.bonded + msg.amount))
    ctx.emit("trainer_bonded", trainer=signer, amount=msg.amount)


def unbond_trainer(ctx: Context, signer: str, msg: tx_pb2.MsgUnbondTrainer) -> None:
    """MsgUnbondTrainer: start returning unlocked collateral after trainer_unbonding_blocks."""
    if msg.amount <= 0:
        raise InvalidAmount(f"invalid amount {msg.amount}: must be a positive integer of {bank.DENOM}")
    params = get_params(ctx.state)
    bond = trainer_bond(ctx.state, signer)
    if bond.bonded - bond.locked < msg.amount:
        locked = f" ({bond.locked}{bank.DENOM} more is locked by an undecided submission)" if bond.locked else ""
        raise InsufficientTrainerBond(f"cannot unbond {msg.amount}{bank.DENOM}: {signer} has {bond.bonded - bond.locked}{bank.DENOM} unlocked trainer bond{locked}")
    due = ctx.height + params.trainer_unbonding_blocks
    _put_trainer_bond(ctx.state, params, signer, replace(bond, bonded=bond.bonded - msg.amount, unbonding=bond.unbonding + msg.amount))
    enqueue(ctx.state, TRAINER_UNBONDING_PREFIX, TRAINER_UNBONDING_SEQ_KEY, due, {"trainer": signer, "amount": msg.amount, "completion_height": due})
    ctx.emit("trainer_unbonding_started", trainer=signer, amount=msg.amount, completion_height=due)


CALLS = {"submit_delta": submit_delta, "attest": attest, "attest_merge": attest_merge, "bond_trainer": bond_trainer, "unbond_trainer": unbond_trainer}

# --- Decisions --------------------------------------------------------------------


def _accept(ctx: Context, params: Params, rnd: Round, sub: Submission) -> Submission:
    _release(ctx, params, sub, slashed=0)
    if params.reward:
        bank.mint(ctx, sub.trainer, params.reward)
    _put_round(ctx.state, replace(get_round(ctx.state, rnd.id), accepted=sorted(get_round(ctx.state, rnd.id).accepted + [sub.index])))
    ctx.emit("delta_accepted", round=rnd.id, submission=sub.index, trainer=sub.trainer, reward=params.reward)
    return replace(sub, status=ACCEPTED)


def _not_merged(ctx: Context, params: Params, rnd: Round, sub: Submission) -> Submission:
    """Correct work that does not help: the whole bond is unlocked, nothing slashed, nothing paid, not in the merge."""
    _release(ctx, params, sub, slashed=0)
    ctx.emit("delta_not_merged", round=rnd.id, submission=sub.index, trainer=sub.trainer)
    return replace(sub, status=NOT_MERGED)


def _reject(ctx: Context, params: Params, rnd: Round, sub: Submission) -> Submission:
    """Slash slash_bps of the submission's locked bond; the attesters who rejected it share attester_share_bps of that by power."""
    slashed = sub.bond * params.slash_bps // BPS
    _release(ctx, params, sub, slashed=slashed)
    paid = 0
    if slashed:
        bank.transfer(ctx, TRAINER_POOL, FORFEIT_POOL, slashed)
        to_attesters = slashed * params.attester_share_bps // BPS
        rejecters = [a for a in attestations(ctx.state, rnd.id, sub.index) if a.verdict == FRAUD]
        total = sum(a.power for a in rejecters)
        for a in rejecters:
            cut = to_attesters * a.power // total if total else 0
            if cut:
                bank.transfer(ctx, FORFEIT_POOL, a.validator, cut)
                paid += cut
        if slashed - paid:
            bank.burn(ctx, FORFEIT_POOL, slashed - paid)
    ctx.emit("delta_rejected", round=rnd.id, submission=sub.index, trainer=sub.trainer, slashed=slashed)
    return replace(sub, status=REJECTED)


def _release(ctx: Context, params: Params, sub: Submission, slashed: int) -> None:
    """A decided or expired submission unlocks its bond, less what was slashed from it."""
    bond = trainer_bond(ctx.state, sub.trainer)
    _put_trainer_bond(ctx.state, params, sub.trainer, replace(bond, bonded=bond.bonded - slashed, locked=bond.locked - sub.bond))


FORFEIT_POOL = bank.module_address("training_forfeits")  # holds a slash only within the tx that splits it


def _penalize_verifiers(ctx: Context, params: Params, rnd: Round, open_at_end: list[int]) -> None:
    """Each snapshotted validator pays once per submission it got wrong, or skipped while its vote was still needed.

    Wrong is fraud against a submission decided valid (accepted or not merged),
    or a valid verdict on one decided fraud; accept against no gain is not wrong
    (both say the work is correct; whether it helps is a measurement).
    Skipping a submission that others decided costs nothing: after the quorum the
    chain refuses attestations (AlreadyDecided), so up to 1/3 of the power can never
    vote on it, and blaming them punished the slowest honest validators every round.
    `open_at_end`: indexes still pending when the window closed (expired, or not
    merged for want of their votes): skipping those is absence.
    The round's snapshot, not today's set, says who was asked: stake that left
    after voting is held by staking until the round closes, so it still pays.
    """
    if not params.verifier_penalty_bps:
        return
    for sub in submissions(ctx.state, rnd.id):  # at most max_submissions
        voted = {a.validator: a.verdict == FRAUD for a in attestations(ctx.state, rnd.id, sub.index)}
        for operator, _ in rnd.powers:  # at most max_validators
            if operator not in voted:
                if sub.index not in open_at_end:
                    continue  # decided without it: it could not have attested any more
                reason = "absent"
            elif sub.status in (ACCEPTED, NOT_MERGED, REJECTED) and voted[operator] != (sub.status == REJECTED):
                reason = "wrong"
            else:
                continue
            amount = staking.penalize(ctx, operator, params.verifier_penalty_bps, f"training_{reason}", since_height=rnd.open_height)
            ctx.emit("verifier_penalized", round=rnd.id, submission=sub.index, validator=operator, amount=amount, reason=reason)


def _register_merge(ctx: Context, params: Params, rnd: Round, agreeing: list[dict]) -> None:
    base = registry.get(ctx.state, rnd.base_version)
    def median(field: str) -> int:  # validators measure the same file; the median ignores an outlier
        values = sorted(v.get(field, 0) for v in agreeing)
        return values[len(values) // 2]

    metrics = {"held_out_loss_micro": median("held_out_loss_micro"), "accepted_submissions": len(rnd.accepted)}
    if median("prompts_total"):
        metrics |= {"prompts_correct": median("prompts_correct"), "prompts_total": median("prompts_total")}
    first = agreeing[0]
    version = registry.register(
        ctx, parent=base.id, cid=first["cid"], sha256=first["sha256"], size=first["bytes"], family=base.family,
        config_json=base.config_json, dataset_ids=[rnd.dataset_id], licence=base.licence, creator=rnd.aggregator or first["validator"],
        round=rnd.id, metrics=metrics,
        note=f"round {rnd.id}: accepted submissions {rnd.accepted}",
    )
    _close(ctx, replace(rnd, version=version.id))


def _close(ctx: Context, rnd: Round) -> None:
    _put_round(ctx.state, replace(rnd, phase=CLOSED))
    ctx.state.delete(CURRENT_KEY)
    ctx.emit("round_closed", round=rnd.id, version="" if rnd.version is None else rnd.version)


# --- Genesis ----------------------------------------------------------------------


def genesis(ctx: Context, config: dict) -> None:
    """training genesis: {"params": {...}}."""
    params = Params(**config.get("params", {}))
    params.validate()
    ctx.state.set(PARAMS_KEY, encode_json(asdict(params)))


# --- Hooks ------------------------------------------------------------------------


def end_block(ctx: Context) -> None:
    """Pay out due trainer unbondings; advance the round in progress by height, or open the next one."""
    _complete_trainer_unbondings(ctx)
    params = get_params(ctx.state)
    rnd = current_round(ctx.state)
    if rnd is None:
        _maybe_open(ctx, params)
        return
    if rnd.phase == SUBMIT and ctx.height >= rnd.submit_until - 1:
        rnd = replace(rnd, phase=VERIFY)
        _put_round(ctx.state, rnd)
    if rnd.phase == VERIFY:
        subs = submissions(ctx.state, rnd.id)  # at most max_submissions
        all_decided = all(s.status != PENDING for s in subs)
        if all_decided or ctx.height >= rnd.verify_until - 1:
            _end_verification(ctx, params, rnd, subs)
    elif rnd.phase == MERGE and ctx.height >= rnd.merge_until - 1:
        _close(ctx, rnd)  # no quorum on a merge in time: nothing is registered


def _complete_trainer_unbondings(ctx: Context) -> None:
    """Pay out entries due by now (the queue is ordered by due height)."""
    due = due_entries(ctx.state, TRAINER_UNBONDING_PREFIX, ctx.height)
    if not due:
        return
    params = get_params(ctx.state)
    for key, entry in due:
        bond = trainer_bond(ctx.state, entry["trainer"])
        ctx.state.delete(key)
        _put_trainer_bond(ctx.state, params, entry["trainer"], replace(bond, unbonding=bond.unbonding - entry["amount"]))
        bank.transfer(ctx, TRAINER_POOL, entry["trainer"], entry["amount"])
        ctx.emit("trainer_unbonding_completed", trainer=entry["trainer"], amount=entry["amount"])


def _maybe_open(ctx: Context, params: Params) -> None:
    if not params.enabled or not ctx.block.hash:
        return
    base = registry.latest(ctx.state)
    if base is None or not datasets.exists(ctx.state, params.dataset_id):
        return
    if bonded_trainers(ctx.state) == 0:
        return  # nobody could submit: keep an idle chain idle
    # Who verifies this round, and with what weight, is fixed now (<= max_validators entries).
    powers = sorted(([operator, power] for operator, power in staking.active_powers(ctx.state).items()), key=lambda op: _raw(op[0]))
    total = sum(power for _, power in powers)
    if total == 0:
        return  # nobody could verify
    round_id = decode_int(ctx.state.get(COUNT_KEY))
    # The round starts at the next height: txs are only possible from there.
    start = ctx.height + 1
    rnd = Round(
        id=round_id, base_version=base.id, dataset_id=params.dataset_id, seed=round_seed(ctx.block.hash, round_id),
        open_height=start, submit_until=start + params.submission_blocks,
        verify_until=start + params.submission_blocks + params.verification_blocks, powers=powers, total_power=total,
    )
    # merge_until is at most verify_until + merge_blocks: penalties and votes are over by then.
    staking.hold_stake(ctx, [operator for operator, _ in powers], until_height=rnd.verify_until + params.merge_blocks)
    _put_round(ctx.state, rnd)
    ctx.state.set(CURRENT_KEY, encode_int(round_id))
    ctx.state.set(COUNT_KEY, encode_int(round_id + 1))
    ctx.emit("round_opened", round=round_id, base_version=base.id, seed=rnd.seed, submit_until=rnd.submit_until, verify_until=rnd.verify_until)


def _end_verification(ctx: Context, params: Params, rnd: Round, subs: list[Submission]) -> None:
    open_at_end = [sub.index for sub in subs if sub.status == PENDING]
    for sub in subs:
        if sub.status != PENDING:
            continue
        if _decision(params, rnd, sub, closing=True) == NOT_MERGED:  # shown valid, and accept did not get there in time
            _put_submission(ctx.state, _not_merged(ctx, params, rnd, sub))
            continue
        _release(ctx, params, sub, slashed=0)
        _put_submission(ctx.state, replace(sub, status=EXPIRED))
        ctx.emit("submission_expired", round=rnd.id, submission=sub.index, trainer=sub.trainer)
    _penalize_verifiers(ctx, params, rnd, open_at_end)
    rnd = get_round(ctx.state, rnd.id)
    if not rnd.accepted:
        _close(ctx, rnd)
        return
    rnd = replace(rnd, phase=MERGE, merge_until=ctx.height + 1 + params.merge_blocks, aggregator=_aggregator(rnd.powers, rnd.total_power, rnd.seed))
    _put_round(ctx.state, rnd)
    ctx.emit("merge_started", round=rnd.id, aggregator=rnd.aggregator, merge_until=rnd.merge_until, accepted=",".join(map(str, rnd.accepted)))


def _aggregator(powers: list[list], total: int, seed: str) -> str:
    """Stake-weighted pick from the seed: walk the round's snapshot (operator order) to seed mod total power."""
    if total == 0:
        return ""
    target = int(seed, 16) % total
    for operator, p in powers:
        if target < p:
            return operator
        target -= p
    raise AssertionError("unreachable: target < total")


# --- Queries ----------------------------------------------------------------------


def query_round(data: bytes) -> bytes:
    """/training/round ID -> Round JSON."""
    return ROUND_PREFIX + _u64(parse_uint64(data))


def query_submission(data: bytes) -> bytes:
    """/training/submission ROUND/INDEX -> Submission JSON."""
    parts = data.decode().split("/")
    if len(parts) != 2:
        raise ValueError("expected ROUND/INDEX")
    return SUBMISSION_PREFIX + _u64(parse_uint64(parts[0])) + _u64(parse_uint64(parts[1]))


def query_params(data: bytes) -> bytes:
    """/training/params -> Params JSON."""
    return PARAMS_KEY


def query_trainer_bond(data: bytes) -> bytes:
    """/training/trainer_bond ADDRESS -> TrainerBond JSON {bonded, locked, unbonding} (empty = none)."""
    return TRAINER_PREFIX + _raw(crypto.parse_address(data.decode()))


QUERIES = {"round": query_round, "submission": query_submission, "params": query_params, "trainer_bond": query_trainer_bond}


def view_current(state: Overlay, data: bytes) -> bytes:
    """/training/current -> the round in progress (or the last one) with its submissions and attestations."""
    rnd = current_round(state)
    if rnd is None:
        count = decode_int(state.get(COUNT_KEY))
        rnd = get_round(state, count - 1) if count else None
    return _round_view(state, rnd)


def view_round_detail(state: Overlay, data: bytes) -> bytes:
    """/training/round_detail ID -> the round with its submissions, attestations and merge votes."""
    return _round_view(state, get_round(state, parse_uint64(data)))


def _round_view(state: Overlay, rnd: Round | None) -> bytes:
    if rnd is None:
        return encode_json(None)
    subs = [asdict(s) | {"attestations": [asdict(a) for a in attestations(state, rnd.id, s.index)]} for s in submissions(state, rnd.id)]
    return encode_json(asdict(rnd) | {"submission_list": subs, "merge_votes": merge_votes(state, rnd.id)})


VIEWS = {"current": view_current, "round_detail": view_round_detail}
