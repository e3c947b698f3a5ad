"""training: rounds, delta submissions, sampled audits, fraud disputes, rewards, merged versions.

Training happens off chain; this module only counts stake and checks hashes
and signatures, so block time does not depend on model size. A round:

1. opens (end_block) when training is enabled, a model version and the
   dataset exist, some dataset is admitted (datasets module) and some
   trainer is bonded; its seed is derived from the opening block's hash, so
   nobody picks their data. The admitted datasets' weights are snapshotted
   into the round (`mix`), and each submission's k steps are drawn across
   them from the seed (`draw_steps`). The active validators'
   powers are snapshotted into the round: only they audit and judge, with
   that power, and staking keeps their stake slashable until the round's last
   possible height (`staking.hold_stake`);
2. SUBMIT: bonded trainers submit one delta each (`submit_delta`) with its
   trajectory: a manifest of the k+1 training states on IPFS (by sha256) and
   a commitment to each step's gradient (`audit.grad_commitment`). A
   submission pays `check_fee` (what checking it costs the network, paid to
   its auditors) and locks the trainer's free bond until it is decided; a full
   round takes a new one only by evicting the one with the smallest bond, for
   a strictly larger bond (slots are bond-weighted, not first come);
3. COMMIT: the block that ends the submission window fixes the beacon (its
   hash) and, from it, each submission's committee: `committee_size`
   validators drawn by stake without replacement (0 = all of them). Each
   member signs `audit.audit_message` with its operator key (deterministic
   ed25519: nobody, itself included, can steer it), recomputes the
   `audit_steps` steps `audit.audit_sample` draws from the signature (from
   the committed pre-states), checks the endpoints, and sends ONE
   `commit_verdicts` for the round: the hash of all its verdicts;
4. REVEAL: members open their commitments (`reveal_verdicts`): for each
   submission accept, no gain (correct but the held-out loss regressed) or
   fraud naming the step that does not reproduce (or the endpoints, or
   unavailable content), and, for a valid verdict, the gradient proof of
   each sampled step, which must hash to the trainer's commitment: only a
   recomputation yields it. A member that does not reveal, or reveals a
   proof that does not match, pays `unrevealed_penalty_bps` per entry;
5. DISPUTE (only if some member claimed fraud): every snapshotted validator
   recomputes the claimed single steps and `judge_claims` in one tx (or
   abstains on a claim that needs a mixed dataset it cannot load: a dataset
   its owner withholds is nobody's fault the chain can see, so a claim nobody
   could check ends undecided and expires the submission, check fee
   refunded, nobody charged but absent judges). A claim upheld by
   `quorum_bps` of the snapshot power rejects the submission: `slash_bps` of
   the trainer's locked bond is slashed (part to the claimants, except those
   of an upheld "dataset unavailable" claim, k + 2, whose part is burned),
   and committee members who called it valid pay `fraud_proof_slash_bps`. A
   claim refuted by the quorum costs its claimant `false_claim_penalty_bps`
   (`verifier_penalty_bps` for k + 2, nothing for k + 1); judges against a
   decided claim, abstaining on one, or absent where it stayed undecided pay
   `verifier_penalty_bps`;
6. decisions: without an upheld claim, a submission is accepted when
   committee members with `quorum_bps` of the committee's power revealed
   accept (reward minted, less each drawn dataset's royalty to its owner
   (`reward_split`), to the trainer, merged), not merged when they said
   valid but not all accept (correct work that does not help: nothing paid,
   bond kept), else it expires (bond released, check fee refunded). The
   check fee, plus `verifier_reward_bps` of the reward on an acceptance, is
   split among the members whose proven verdict matches the decision;
7. MERGE, MERGE_REVEAL: if anything was accepted, validators recompute the
   merge (the accepted deltas averaged in submission order), evaluate it, and
   seal their vote (`commit_merge`: file and measurements) before anyone's is
   public; then they reveal it (`attest_merge`). The aggregator chosen from
   the seed publishes the file to IPFS. When every committer has revealed (or
   the window ran out), a file with the quorum is registered as the next
   version with the stake-weighted median of its voters' measurements; votes
   for another file, committed votes never revealed, and (when nothing is
   registered) missing votes pay `verifier_penalty_bps`.

Trainer bonds live here, with the module that slashes them: `bond_trainer`,
`unbond_trainer` (only the unlocked part, returned after
`trainer_unbonding_blocks`), all held by the trainer pool account.

Losses and errors are integers in millionths: no float enters state.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace

from abci_app import crypto
from abci_app.context import (
    Context, EventType, ModuleError, decode_int, decode_json, due_entries, encode_int, encode_json, enqueue, is_cid, is_printable_ascii,
    is_sha256_hex, load_params, parse_uint64, store_params,
)
from abci_app.modules import audit, bank, datasets, registry, staking
from abci_app.state import Overlay
from abci_app.tx import tx_pb2

# --- Params ---------------------------------------------------------------------

BPS = 10_000
LORA_TARGETS = ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")  # Llama projections


MAX_STEPS = 256  # k bound: a submission's grad commitments (32 bytes a step) sit in state
MAX_BATCH_SIZE = 4_096  # sequences per step: a version's windows (steps x batch_size) stay far inside uint64, and trainers' memory sane
MAX_REVEAL_CHUNKS = 64  # an auditor's verdicts may be revealed in up to this many txs (each under tx.MAX_TX_BYTES)
MAX_COMMITTEE = 1_000
# Money and work ceilings: a passed proposal may not mint without bound per submission, price trainers out for
# good, or set auditors work (prompts, windows, bytes, seconds) no honest validator can finish.
MAX_REWARD = 10**12  # ugrad (1e6 GRAD) minted per accepted submission
MAX_CHECK_FEE = 10**12  # ugrad a submission pays its matching auditors
MAX_TRAINER_BOND = 10**13  # ugrad (1e7 GRAD) of collateral a submission needs
MAX_EVAL_PROMPTS = 1_000  # prompts scored per merge (the fixed set is far smaller: more is all of them)
MAX_HELDOUT_WINDOWS = 4_096  # held-out windows evaluated per audit
MAX_STATE_BYTES = 16 * 1024**3  # 16 GiB: one state file an auditor fetches and loads
MAX_FETCH_SECONDS = 3_600  # an auditor's deadline to fetch one file
_CEILINGS = {"reward": MAX_REWARD, "check_fee": MAX_CHECK_FEE, "min_trainer_bond": MAX_TRAINER_BOND, "eval_prompts": MAX_EVAL_PROMPTS,
             "audit_heldout_windows": MAX_HELDOUT_WINDOWS, "max_state_bytes": MAX_STATE_BYTES, "fetch_seconds": MAX_FETCH_SECONDS}
# A fraud claim names step k (+0): the endpoints or manifest; k + 1: the trainer's files not fetchable in time (its fault);
# k + 2: a dataset of the mix, other than the round's own, that the claimant's sample draws from not fetchable in time (the
# dataset owner's doing, not the trainer's: it never slashes, never charges anyone, and at most expires the submission;
# judges load the data and replay the claimant's steps drawn from it, so data served to them alone lets no fake through).
CLAIM_ENDPOINTS_OFFSET, CLAIM_UNAVAILABLE_OFFSET, CLAIM_DATASET_OFFSET = 0, 1, 2


@dataclass(frozen=True)
class Params:
    enabled: bool = False  # rounds open only when true
    dataset_id: int = 0  # the registered dataset whose held-out split audits and merges evaluate (batches come from the admitted mix)
    submission_blocks: int = 20  # SUBMIT window: bonded trainers submit deltas
    verification_blocks: int = 40  # COMMIT window: committee members recompute their samples and commit
    reveal_blocks: int = 20  # REVEAL and MERGE_REVEAL windows: sealed verdicts and merge votes are opened
    dispute_blocks: int = 40  # DISPUTE window: every snapshotted validator judges the fraud claims
    merge_blocks: int = 40  # MERGE window: validators recompute the merge and seal their votes
    steps: int = 64  # k: training steps per submission, each committed to
    audit_steps: int = 12  # s: steps each committee member recomputes (s = k: full recomputation)
    committee_size: int = 0  # c: auditors per submission, drawn by stake after the window closes (0 = every validator)
    learning_rate_micro: int = 1_000  # lr = 1e-3, in millionths
    batch_size: int = 8  # sequences per training step
    seq_len: int = 64  # tokens per sequence
    step_tolerance_ppm: int = 100  # one step checked on another kernel path may differ this much: 50x the worst of 256 honest steps (docs/training.md)
    max_state_bytes: int = 64 * 1024 * 1024  # one training state file (weights + optimiser moments)
    fetch_seconds: int = 120  # an auditor that cannot fetch a file in this long calls it unavailable (a reject, not an expiry)
    max_heldout_regression_ppm: int = 50_000  # held-out loss may not rise more than 5%
    # Auditors judge "no gain" on this many held-out windows: a trainer cannot aim at them (its batches are
    # fixed by the chain), and 8 windows cut an audit's evaluation 8x for the tiny GPT (64) and 2x for SmolLM2 (16).
    audit_heldout_windows: int = 8
    reward: int = 1_000_000  # minted to a trainer per accepted submission
    slash_bps: int = 2_000  # share of the trainer bond taken from a rejected submission
    attester_share_bps: int = 5_000  # share of that slash paid to the validators whose fraud claim was upheld
    check_fee: int = 10_000  # paid by each submission to the auditors whose verdict matches the decision
    verifier_reward_bps: int = 1_000  # share of an accepted submission's reward also minted to those auditors
    unrevealed_penalty_bps: int = 100  # stake burned per committee entry not revealed, or revealed with a proof no recomputation gives
    fraud_proof_slash_bps: int = 1_000  # stake burned from an auditor that called a proven fraud valid
    false_claim_penalty_bps: int = 100  # stake burned from a validator whose fraud claim the quorum refuted
    verifier_penalty_bps: int = 10  # stake burned from a judge or merge voter that was wrong or absent
    quorum_bps: int = 6_667  # 2/3 of the active voting power
    min_trainer_bond: int = 1_000_000  # unlocked trainer collateral a submission needs (and locks)
    trainer_unbonding_blocks: int = 20  # blocks before unbonded trainer collateral is paid out
    max_submissions: int = 16  # submissions a round holds; a larger bond evicts the smallest
    # LoRA families (smollm2-lora) train adapters of this spec; full-weight families ignore it.
    lora_rank: int = 8
    lora_alpha: int = 16  # LoRA scale numerator: adapters are scaled by alpha / rank
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
        if not 0 < self.quorum_bps <= BPS or any(getattr(self, n) > BPS for n in _BPS_FIELDS):
            raise ValueError("training params in basis points must be at most 10000 (quorum above 0)")
        if self.steps == 0 or self.submission_blocks == 0 or self.batch_size == 0 or self.seq_len == 0:
            raise ValueError("training.params steps, submission_blocks, batch_size and seq_len must be positive")
        if self.batch_size > MAX_BATCH_SIZE:
            raise ValueError(f"training.params.batch_size must be at most {MAX_BATCH_SIZE}")
        if self.verification_blocks == 0 or self.reveal_blocks == 0 or self.dispute_blocks == 0 or self.merge_blocks == 0:
            # A 0-block MERGE window still ends at the next block, as a 1-block one does (harmless to consensus), but it
            # reads as "no merge window": the same positive rule as the other windows.
            raise ValueError("training.params verification_blocks, reveal_blocks, dispute_blocks and merge_blocks must be positive")
        for name, ceiling in _CEILINGS.items():
            if getattr(self, name) > ceiling:
                raise ValueError(f"training.params.{name} must be at most {ceiling}")
        if self.steps > MAX_STEPS or not 0 < self.audit_steps <= self.steps:
            raise ValueError(f"training.params: need 0 < audit_steps <= steps <= {MAX_STEPS} (audit_steps = steps recomputes everything)")
        if self.max_submissions > registry.MAX_CONTRIBUTIONS:
            raise ValueError(f"training.params.max_submissions must be at most {registry.MAX_CONTRIBUTIONS} (a version records each accepted one)")
        if self.committee_size > MAX_COMMITTEE:
            raise ValueError(f"training.params.committee_size must be at most {MAX_COMMITTEE} (0 = every validator)")
        if self.min_trainer_bond == 0:
            raise ValueError("training.params.min_trainer_bond must be positive: a free submission slot is a free lock-out")
        if self.lora_rank == 0 or self.lora_alpha == 0:
            raise ValueError("training.params lora_rank and lora_alpha must be positive")
        if self.max_state_bytes == 0 or self.fetch_seconds == 0 or self.audit_heldout_windows == 0:
            raise ValueError("training.params max_state_bytes, fetch_seconds and audit_heldout_windows must be positive")
        round_blocks = sum(getattr(self, name) for name in _WINDOW_FIELDS) + self.reveal_blocks  # reveal_blocks serves two windows
        if round_blocks > MAX_ROUND_BLOCKS or self.trainer_unbonding_blocks > MAX_ROUND_BLOCKS:
            # A round holds its validators' stake until it closes and no proposal can shorten a round in flight:
            # an absurd window would freeze training and every undelegation from those validators (review 14, finding 2).
            raise ValueError(f"training.params: a round's windows sum to {round_blocks} blocks and trainer_unbonding_blocks is "
                             f"{self.trainer_unbonding_blocks}; each must be at most {MAX_ROUND_BLOCKS}")


# What a governance change may not loosen past (genesis may, for a test net; a change may keep or tighten it):
# below these, one passed proposal turns training into minting for anyone with a colluding validator.
MIN_CHANGED_QUORUM_BPS = 5_000  # a submission is decided by at least half the active power
MAX_CHANGED_STEP_TOLERANCE_PPM = 10_000  # 1%: a spot-check on another kernel path still tells a faked step
MAX_CHANGED_REGRESSION_PPM = 200_000  # 20%: the no-gain test still refuses a delta that wrecks the model
MIN_CHANGED_AUDIT_STEPS = 4  # (or every step, when a submission has fewer)
MAX_CHANGED_PENALTY_BPS = 1_000  # an honest validator's mistake costs at most 10% of its stake
_PENALTY_FIELDS = ("unrevealed_penalty_bps", "fraud_proof_slash_bps", "false_claim_penalty_bps", "verifier_penalty_bps")


def check_params_change(current: Params, new: Params, state: Overlay | None = None) -> None:
    """What a governance MsgUpdateParams may not do to valid training params (ValueError says why)."""
    if new.quorum_bps < min(MIN_CHANGED_QUORUM_BPS, current.quorum_bps):
        raise ValueError(f"training.params.quorum_bps may not fall below {MIN_CHANGED_QUORUM_BPS}")
    for name, ceiling in (("step_tolerance_ppm", MAX_CHANGED_STEP_TOLERANCE_PPM), ("max_heldout_regression_ppm", MAX_CHANGED_REGRESSION_PPM),
                          *((n, MAX_CHANGED_PENALTY_BPS) for n in _PENALTY_FIELDS)):
        if getattr(new, name) > max(ceiling, getattr(current, name)):
            raise ValueError(f"training.params.{name} may not rise above {ceiling}")
    least = min(MIN_CHANGED_AUDIT_STEPS, new.steps, current.audit_steps)
    if new.audit_steps < least:
        raise ValueError(f"training.params.audit_steps may not fall below {least} (each auditor recomputes at least that many steps)")


_WINDOW_FIELDS = ("submission_blocks", "verification_blocks", "reveal_blocks", "dispute_blocks", "merge_blocks")
MAX_ROUND_BLOCKS = 1_000_000  # ~11.5 days at a block a second: every window of a round, together

_BPS_FIELDS = ("slash_bps", "attester_share_bps", "verifier_reward_bps", "unrevealed_penalty_bps", "fraud_proof_slash_bps",
               "false_claim_penalty_bps", "verifier_penalty_bps")


# --- Storage --------------------------------------------------------------------

PREFIX = b"training/"
PARAMS_KEY = PREFIX + b"params"  # Params as canonical JSON
CURRENT_KEY = PREFIX + b"current"  # id of the round in progress (absent between rounds)
COUNT_KEY = PREFIX + b"count"  # rounds ever opened
ROUND_PREFIX = PREFIX + b"round/"  # <round 8 BE> -> Round JSON
SUBMISSION_PREFIX = PREFIX + b"submission/"  # <round 8 BE><index 8 BE> -> Submission JSON
BY_TRAINER_PREFIX = PREFIX + b"by_trainer/"  # <round 8 BE><trainer 20> -> index
COMMITMENT_PREFIX = PREFIX + b"commitment/"  # <round 8 BE><validator 20> -> {"chunks": [hex], "opened": [bool], "revealed"}
GRAD_COMMITMENTS_PREFIX = PREFIX + b"grad_commitments/"  # <round 8 BE><index 8 BE> -> 32 bytes a step (apart: reveals rewrite the submission)
VERDICT_PREFIX = PREFIX + b"verdict/"  # <round 8 BE><index 8 BE><validator 20> -> AuditEntry JSON
CLAIM_PREFIX = PREFIX + b"claim/"  # <round 8 BE><index 8 BE><step 8 BE> -> Claim JSON
JUDGED_PREFIX = PREFIX + b"judged/"  # <round 8 BE><validator 20> -> [[index, step, valid]] (one judge_claims per round)
MERGE_VOTE_PREFIX = PREFIX + b"merge_vote/"  # <round 8 BE><validator 20> -> MergeVote JSON
MERGE_COMMITMENT_PREFIX = PREFIX + b"merge_commitment/"  # <round 8 BE><validator 20> -> sha256 (32 bytes)
TRAINER_PREFIX = PREFIX + b"trainer/"  # <trainer 20> -> TrainerBond JSON
BONDED_TRAINERS_KEY = PREFIX + b"bonded_trainers"  # trainers with bonded >= min_trainer_bond: opening a round reads no list
COUNTED_PREFIX = PREFIX + b"counted/"  # <trainer 20> -> b"1" while the trainer is in BONDED_TRAINERS_KEY
TRAINER_UNBONDING_PREFIX = PREFIX + b"trainer_unbonding/"  # <due height 8 BE><seq 8 BE> -> TrainerUnbonding JSON
TRAINER_UNBONDING_SEQ_KEY = PREFIX + b"trainer_unbonding_seq"  # next sequence number in TRAINER_UNBONDING_PREFIX

TRAINER_POOL = bank.module_address("trainer_pool")  # holds every trainer's bonded and unbonding collateral
CHECK_FEE_POOL = bank.module_address("training_check_fees")  # the check fees of the round's undecided submissions

SUBMIT, COMMIT, REVEAL, DISPUTE, MERGE, MERGE_REVEAL, CLOSED = "submit", "commit", "reveal", "dispute", "merge", "merge_reveal", "closed"
PENDING, ACCEPTED, REJECTED, EXPIRED = "pending", "accepted", "rejected", "expired"
NOT_MERGED = "not_merged"  # valid (recomputation matches) but it does not help: not merged, no reward, bond kept
UPHELD, REFUTED, UNDECIDED = "upheld", "refuted", "undecided"  # a fraud claim after the dispute
_ABSENT = object()  # a judge that sent no judgement on a claim (one that abstained sent None)


@dataclass(frozen=True)
class Round:
    id: int
    base_version: int
    dataset_id: int
    seed: str  # hex; sha256 of the opening block's hash and the round id
    open_height: int
    submit_until: int  # submissions accepted while height < submit_until
    commit_until: int = 0  # set when the commit phase starts (upper bounds: phases end early once everyone acted)
    reveal_until: int = 0
    dispute_until: int = 0
    merge_until: int = 0  # the merge votes' commit window
    merge_reveal_until: int = 0
    merge_commits: int = 0  # snapshotted validators that committed a merge vote
    merge_reveals: int = 0  # ... and revealed it
    phase: str = SUBMIT
    submissions: int = 0  # submissions in the round now (at most max_submissions; an eviction frees one)
    next_index: int = 0  # index of the next submission: an evicted index is never reused, so no late vote lands on another delta
    accepted: list[int] = field(default_factory=list)
    aggregator: str = ""  # chosen from the seed when the merge phase starts
    version: int | None = None  # the version registered from this round
    powers: list[list] = field(default_factory=list)  # [[operator, power]] of the active set at opening, operator byte order (<= max_validators)
    total_power: int = 0  # sum of `powers`: the dispute and merge quorum's denominator
    beacon: str = ""  # hash of the block that closed the submission window: committees and samples derive from it
    auditors: list[str] = field(default_factory=list)  # validators on some committee, operator order: who must commit
    commits: int = 0  # auditors that committed
    reveals: int = 0  # auditors that revealed
    claims: int = 0  # fraud claims open for the dispute
    judges: int = 0  # snapshotted validators that judged the claims
    mix: list[list] = field(default_factory=list)  # [[dataset id, weight]] admitted at opening, by id (<= datasets.MAX_ADMITTED): what steps draw from
    # The training Params at opening: the round runs under these to its end, so a change gov passes mid-round
    # (steps, audit_steps, windows, rewards) applies from the next round and no in-flight work is judged by new rules.
    params: dict = field(default_factory=dict)


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
    trajectory_cid: str = ""
    trajectory_sha256: str = ""
    state_bytes: int = 0
    status: str = PENDING
    bond: int = 0  # trainer bond locked by this submission until it is decided; slash_bps of it is at stake
    check_fee: int = 0  # paid in, held until the decision
    committee: list[list] = field(default_factory=list)  # [[operator, power]] drawn at the beacon, operator order
    committee_power: int = 0
    accept_power: int = 0  # committee power that revealed accept
    no_gain_power: int = 0  # committee power that revealed "valid, does not help"
    reject_power: int = 0  # committee power that revealed a fraud claim


@dataclass(frozen=True)
class TrainerBond:
    bonded: int = 0  # collateral in the pool, locked or not
    locked: int = 0  # part of `bonded` held by an undecided submission: not unbondable
    unbonding: int = 0  # unbonded, waiting for trainer_unbonding_blocks


@dataclass(frozen=True)
class AuditEntry:
    """One committee member's revealed verdict on one submission."""

    validator: str
    verdict: str  # accept | no_gain | fraud
    power: int
    steps_checked: list[int]  # the sample its signature drew
    proven: bool  # gave a gradient proof for every sampled step (same kernel path as the trainer)
    proof_ok: bool  # ... and every proof hashes to the trainer's commitment
    fraud_step: int
    measured_error_ppm: int
    reason: str
    height: int


@dataclass(frozen=True)
class Claim:
    """A fraud claim on one step (or the endpoints, or availability) of one submission, and its judgement."""

    submission: int
    step: int
    claimants: list[str]  # in reveal order
    valid_power: int = 0  # judged: the step reproduces (the claim is false)
    invalid_power: int = 0  # judged: it does not (the claim holds)
    abstain_power: int = 0  # could not load a dataset the claim needs: no judgement (charged like absence once the claim is decided)
    outcome: str = ""  # upheld | refuted | undecided, set when the dispute ends


ACCEPT, NO_GAIN, FRAUD = "accept", "no_gain", "fraud"
VERDICTS = (ACCEPT, NO_GAIN, FRAUD)  # AuditVerdict.verdict 0, 1, 2


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


_raw = crypto.address_raw


def get_params(state: Overlay) -> Params:
    """The params the next round opens with (a round in progress runs under `round_params`)."""
    return load_params(state, PARAMS_KEY, Params)


def round_params(rnd: Round) -> Params:
    """The params a round opened with: everything that round does uses these."""
    return Params(**rnd.params)


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


def audit_entries(state: Overlay, round_id: int, index: int) -> list[AuditEntry]:
    """The revealed verdicts on one submission, in validator byte order."""
    return [AuditEntry(**decode_json(v)) for _, v in state.iter_prefix(VERDICT_PREFIX + _u64(round_id) + _u64(index))]


def claims(state: Overlay, round_id: int, index: int) -> list[Claim]:
    """The fraud claims on one submission, by step."""
    return [Claim(**decode_json(v)) for _, v in state.iter_prefix(CLAIM_PREFIX + _u64(round_id) + _u64(index))]


def _put_claim(state: Overlay, round_id: int, claim: Claim) -> None:
    state.set(CLAIM_PREFIX + _u64(round_id) + _u64(claim.submission) + _u64(claim.step), encode_json(asdict(claim)))


def commitment(state: Overlay, round_id: int, validator: str) -> dict | None:
    """{"chunks": [hex commitment per chunk], "opened": [bool per chunk], "revealed": all opened} of an auditor, or None."""
    return decode_json(state.get(COMMITMENT_PREFIX + _u64(round_id) + _raw(validator)))


def merge_votes(state: Overlay, round_id: int) -> list[dict]:
    return [decode_json(v) for _, v in state.iter_prefix(MERGE_VOTE_PREFIX + _u64(round_id))]


def grad_commitments(state: Overlay, round_id: int, index: int) -> bytes:
    """A submission's per-step gradient commitments (32 bytes a step)."""
    return state.get(GRAD_COMMITMENTS_PREFIX + _u64(round_id) + _u64(index)) or b""


def verdicts_commitment(round_id: int, salt: bytes, operator_pubkey: bytes, verdicts, chunk: int = 0) -> bytes:
    """One chunk's commitment in MsgCommitVerdicts: sha256 over the round, the chunk, the salt, the key and each
    AuditVerdict's canonical bytes. The salt keeps a commitment to a short list of verdicts from being guessed by
    trying them all; chunks let an auditor on many committees reveal in several txs."""
    h = hashlib.sha256(audit.VERDICTS_DOMAIN + _u64(round_id) + chunk.to_bytes(4, "big") + salt + operator_pubkey)
    for v in verdicts:
        raw = v.SerializeToString(deterministic=True)
        h.update(len(raw).to_bytes(4, "big") + raw)
    return h.digest()


def reveal_chunk(seat: int, seats: int, chunks: int) -> int:
    """Which chunk an auditor's seat-th committee seat (of `seats`, by submission index) is revealed in: fixed by
    the commitment's chunk count, so no submission can be sealed in two chunks to open whichever wins."""
    return seat * chunks // seats


def seats_of(state: Overlay, round_id: int, auditor: str) -> list[int]:
    """The submission indexes whose committee the auditor sits on, in order (at most max_submissions)."""
    return [s.index for s in submissions(state, round_id) if auditor in dict(s.committee)]


def committee(powers: list[list], beacon: str, round_id: int, index: int, size: int) -> list[list]:
    """`size` members drawn by stake without replacement from the snapshot (all when size is 0 or too big), operator order.

    Each draw walks the remaining members to sha256(beacon, round, index, draw) mod their power."""
    remaining = [list(p) for p in powers if p[1] > 0]
    if size == 0 or size >= len(remaining):
        return remaining
    chosen = []
    seed = hashlib.sha256(b"gradchain/committee/v1" + bytes.fromhex(beacon) + _u64(round_id) + _u64(index)).digest()
    for draw in range(size):
        total = sum(p for _, p in remaining)
        target = int.from_bytes(hashlib.sha256(seed + _u64(draw)).digest(), "big") % total
        for i, (operator, p) in enumerate(remaining):
            if target < p:
                chosen.append(remaining.pop(i))
                break
            target -= p
    return sorted(chosen, key=lambda op: _raw(op[0]))


def trainer_bond(state: Overlay, trainer: str) -> TrainerBond:
    """A trainer's collateral: bonded (locked or not) and unbonding."""
    raw = decode_json(state.get(TRAINER_PREFIX + _raw(trainer)))
    return TrainerBond(**raw) if raw else TrainerBond()


def _put_trainer_bond(state: Overlay, trainer: str, bond: TrainerBond) -> None:
    """Write a trainer's collateral and keep the count of trainers bonded at least min_trainer_bond. Each trainer's
    own flag says whether it is counted, so a min_trainer_bond changed by gov never un-counts one it did not count
    (the count stays exact per flag, and trainers are re-judged by the new minimum as their bonds change)."""
    counted = COUNTED_PREFIX + _raw(trainer)
    was = state.get(counted) is not None
    now = bond.bonded >= get_params(state).min_trainer_bond
    if was != now:
        state.set(BONDED_TRAINERS_KEY, encode_int(bonded_trainers(state) + (1 if now else -1)))
        state.set(counted, b"1") if now else state.delete(counted)
    key = TRAINER_PREFIX + _raw(trainer)
    state.set(key, encode_json(asdict(bond))) if bond != TrainerBond() else state.delete(key)


def bonded_trainers(state: Overlay) -> int:
    """How many trainers had at least min_trainer_bond bonded when their bond last changed (COUNTED_PREFIX)."""
    return decode_int(state.get(BONDED_TRAINERS_KEY))


def trainer_unbondings(state: Overlay) -> list[dict]:
    """Pending trainer unbondings, by due height (for queries and tests; hooks read only due entries)."""
    return [decode_json(v) for _, v in state.iter_prefix(TRAINER_UNBONDING_PREFIX)]


def round_seed(block_hash: bytes, round_id: int) -> str:
    """The round's seed: from the block that opened it, which no trainer controls."""
    return hashlib.sha256(b"gradchain/round-seed" + block_hash + _u64(round_id)).hexdigest()


DRAW_DOMAIN = b"gradchain/data-draw/v1"


def draw_seed(seed: str, trainer: str) -> bytes:
    """The seed of one trainer's draw across datasets in one round (its batch seeds: abci_app.ml.train.batch_seed)."""
    return hashlib.sha256(DRAW_DOMAIN + bytes.fromhex(seed) + _raw(trainer)).digest()


def draw_steps(seed: str, trainer: str, mix: list[list], steps: int) -> list[int]:
    """The dataset each of a submission's `steps` steps takes its batch from, integers only:

    1. counts, by systematic sampling: W is the mix's total weight, u = H(draw seed || "offset") mod W, and the
       points u + j*W (j < steps) fall on [0, steps*W), where dataset i (by id) owns [steps*C_i, steps*C_(i+1)),
       C_i the weights before it. Each dataset gets floor or ceil of steps*w/W steps, exactly that on average;
    2. order: those counts, by id, are laid on the steps sorted by H(draw seed || u32be(step)), so the
       datasets interleave. A mix of one dataset gives it every step (the single-dataset rounds of before)."""
    live = [(d, w) for d, w in mix if w > 0]
    if not live or steps <= 0:
        return []
    key = draw_seed(seed, trainer)
    total = sum(w for _, w in live)
    point = int.from_bytes(hashlib.sha256(key + b"offset").digest(), "big") % total
    drawn, i, edge = [], 0, steps * live[0][1]
    for _ in range(steps):
        while point >= edge:  # the next dataset's interval
            i += 1
            edge += steps * live[i][1]
        drawn.append(live[i][0])
        point += total
    order = sorted(range(steps), key=lambda step: hashlib.sha256(key + step.to_bytes(4, "big")).digest())
    out = [0] * steps
    for position, dataset_id in zip(order, drawn):
        out[position] = dataset_id
    return out


def step_counts(seed: str, trainer: str, mix: list[list], steps: int) -> list[list[int]]:
    """[[dataset id, steps drawn from it]] of one submission, by id, datasets drawn at least once."""
    counts: dict[int, int] = {}
    for dataset_id in draw_steps(seed, trainer, mix, steps):
        counts[dataset_id] = counts.get(dataset_id, 0) + 1
    return [[d, counts[d]] for d in sorted(counts)]


def _mixed_steps(state: Overlay, rnd: Round, sub: Submission) -> set[int]:
    """The steps of `sub` that draw from a dataset other than the round's own (dataset_id): the data an auditor loads
    only when its sample needs it, and the only data whose unavailability is not the trainer's fault."""
    own = datasets.get(state, rnd.dataset_id)
    draws = draw_steps(rnd.seed, sub.trainer, rnd.mix, sub.steps)  # <= MAX_STEPS; [] for a round without a mix
    other: dict[int, bool] = {}
    for d in draws:  # one lookup per distinct dataset (<= datasets.MAX_ADMITTED)
        if d not in other:
            entry = datasets.get(state, d)
            other[d] = d != rnd.dataset_id and (own is None or entry is None or entry.sha256 != own.sha256)
    return {i for i, d in enumerate(draws) if other[d]}


def reward_split(reward: int, counts: list[list[int]], royalties: dict[int, int]) -> tuple[int, list[list[int]]]:
    """(the trainer's part, [[dataset id, royalty]]) of an accepted reward: nothing is minted beyond `reward`.

    Dataset d claims reward x royalty_bps_d x n_d / (10000 x n), n_d of the n steps (so windows) drawn from it.
    The royalties total T = floor(sum of the claims), exactly; each dataset gets the floor of its claim and the
    T - sum(floors) units left (fewer than the datasets) go one each to the largest fractional parts, ties to
    the lower id. The trainer gets reward - T: every rounding unit stays with the trainer, none is minted."""
    n = sum(c for _, c in counts)
    if not n or not reward:
        return reward, [[d, 0] for d, _ in counts]
    scale = BPS * n
    claims = [(d, reward * royalties.get(d, 0) * c) for d, c in counts]
    total = sum(claim for _, claim in claims) // scale
    shares = {d: claim // scale for d, claim in claims}
    left = total - sum(shares.values())
    for d, _ in sorted(claims, key=lambda dc: (-(dc[1] % scale), dc[0]))[:left]:
        shares[d] += 1
    return reward - total, [[d, shares[d]] for d, _ in counts]


def quorum(params: Params, total_power: int) -> int:
    """The smallest power that is at least quorum_bps of the total (integer ceiling)."""
    return -(-total_power * params.quorum_bps // BPS)


# --- Events ---------------------------------------------------------------------


@dataclass(frozen=True)
class RoundOpened(EventType):
    """A round opened on the latest version; submissions are taken while height < submit_until."""

    type = "round_opened"
    round: int
    base_version: int
    seed: str
    submit_until: int


@dataclass(frozen=True)
class DeltaSubmitted(EventType):
    """A bonded trainer submitted a delta and its trajectory; `bond` of its collateral is locked until the decision."""

    type = "delta_submitted"
    round: int
    submission: int
    trainer: str
    cid: str
    sha256: str
    bond: int
    trajectory_cid: str


@dataclass(frozen=True)
class SubmissionEvicted(EventType):
    """A larger bond (`by`) took the slot of this submission in a full round; its lock and check fee are returned."""

    type = "submission_evicted"
    round: int
    submission: int
    trainer: str
    bond: int
    by: str


@dataclass(frozen=True)
class AuditStarted(EventType):
    """The submission window closed: committees are drawn from `beacon`; auditors commit their sealed verdicts before commit_until."""

    type = "audit_started"
    round: int
    beacon: str
    commit_until: int
    auditors: int


@dataclass(frozen=True)
class VerdictsCommitted(EventType):
    """An auditor sealed its verdicts for the round."""

    type = "verdicts_committed"
    round: int
    validator: str


@dataclass(frozen=True)
class RevealStarted(EventType):
    """Auditors open their commitments before reveal_until."""

    type = "reveal_started"
    round: int
    reveal_until: int


@dataclass(frozen=True)
class VerdictRevealed(EventType):
    """An auditor's verdict on one submission (accept, no_gain or fraud); `steps` is its sample, comma-separated; proven and proof_ok are True or False."""

    type = "verdict_revealed"
    round: int
    submission: int
    validator: str
    verdict: str
    steps: str
    proven: bool
    proof_ok: bool


@dataclass(frozen=True)
class DisputeStarted(EventType):
    """Some auditor claimed fraud: every snapshotted validator judges the claims before dispute_until."""

    type = "dispute_started"
    round: int
    dispute_until: int
    claims: int


@dataclass(frozen=True)
class ClaimsJudged(EventType):
    """A snapshotted validator judged the round's fraud claims (`judgements` of them)."""

    type = "claims_judged"
    round: int
    validator: str
    judgements: int


@dataclass(frozen=True)
class ClaimDecided(EventType):
    """A fraud claim on one step was decided: upheld, refuted or undecided."""

    type = "claim_decided"
    round: int
    submission: int
    step: int
    outcome: str


@dataclass(frozen=True)
class DeltaAccepted(EventType):
    """A submission was accepted: `reward` minted (to its trainer, less the royalties of royalty_paid), and it joins the merge."""

    type = "delta_accepted"
    round: int
    submission: int
    trainer: str
    reward: int


@dataclass(frozen=True)
class DeltaNotMerged(EventType):
    """A submission was valid but does not help: its lock is released, nothing slashed or paid."""

    type = "delta_not_merged"
    round: int
    submission: int
    trainer: str


@dataclass(frozen=True)
class DeltaRejected(EventType):
    """A fraud claim on the submission was upheld: `slashed` of its locked bond was taken."""

    type = "delta_rejected"
    round: int
    submission: int
    trainer: str
    slashed: int


@dataclass(frozen=True)
class SubmissionExpired(EventType):
    """No decision within the windows: the lock (and, unless its content was claimed unavailable, the check fee) is returned."""

    type = "submission_expired"
    round: int
    submission: int
    trainer: str


@dataclass(frozen=True)
class VerifierPaid(EventType):
    """An auditor whose proven verdict matched the decision was paid its share."""

    type = "verifier_paid"
    round: int
    submission: int
    validator: str
    amount: int


@dataclass(frozen=True)
class VerifierPenalized(EventType):
    """A validator's stake was burned; reason: unrevealed, bad_proof, accepted_fraud, false_claim, false_dataset_claim, wrong, absent, merge_wrong or merge_absent."""

    type = "verifier_penalized"
    round: int
    validator: str
    amount: int
    reason: str


@dataclass(frozen=True)
class MergeStarted(EventType):
    """Submissions were accepted (`accepted`: their indexes, comma-separated): validators seal a merge vote before merge_until."""

    type = "merge_started"
    round: int
    aggregator: str
    merge_until: int
    accepted: str


@dataclass(frozen=True)
class MergeCommitted(EventType):
    """A snapshotted validator sealed its merge vote."""

    type = "merge_committed"
    round: int
    validator: str


@dataclass(frozen=True)
class MergeRevealStarted(EventType):
    """Validators reveal their merge votes before merge_reveal_until."""

    type = "merge_reveal_started"
    round: int
    merge_reveal_until: int


@dataclass(frozen=True)
class MergeAttested(EventType):
    """A validator revealed its merge vote for the file (cid, sha256)."""

    type = "merge_attested"
    round: int
    validator: str
    cid: str
    sha256: str


@dataclass(frozen=True)
class MergeNotRegistered(EventType):
    """The file the quorum agreed on could not be registered (`reason`: the registry's refusal, e.g. an existing
    version's sha256); the round closes without a version."""

    type = "merge_not_registered"
    round: int
    cid: str
    sha256: str
    reason: str


@dataclass(frozen=True)
class RoundClosed(EventType):
    """The round is over; `version` is the model version it registered ("" when none was)."""

    type = "round_closed"
    round: int
    version: int | str


@dataclass(frozen=True)
class TrainerBonded(EventType):
    """A trainer put up collateral."""

    type = "trainer_bonded"
    trainer: str
    amount: int


@dataclass(frozen=True)
class TrainerUnbondingStarted(EventType):
    """Unlocked trainer collateral is paid back at completion_height."""

    type = "trainer_unbonding_started"
    trainer: str
    amount: int
    completion_height: int


@dataclass(frozen=True)
class TrainerUnbondingCompleted(EventType):
    """Trainer collateral was paid back."""

    type = "trainer_unbonding_completed"
    trainer: str
    amount: int


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
    """A malformed field (CID, sha256, size, steps, trajectory, state size, grad commitments, kernel path, a merge vote's
    file or prompt score), or a claim judged twice in one tx."""

    code = 5


class UnknownSubmission(TrainingError):
    """No submission with that index in the round, or no fraud claim on that step."""

    code = 6


class NotValidator(TrainingError):
    """Only the validators snapshotted when the round opened audit and judge in it (and only committee members commit verdicts)."""

    code = 7


class DuplicateAttestation(TrainingError):
    """A validator commits, reveals (each chunk) and judges once per round, and commits and reveals its merge vote once."""

    code = 8


class AlreadyDecided(TrainingError):
    """The submission or claim is already decided."""

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


class InvalidReveal(TrainingError):
    """A reveal that does not open its commitment (of verdicts or a merge vote), has the wrong key, salt size or chunk, or a
    bad entry (off the signer's committees, out of order, bad signature, proof list or step); or a commitment that is not
    whole sha256 digests."""

    code = 13


class NotCommitted(TrainingError):
    """A reveal (of verdicts or a merge vote) from a validator that committed nothing in the round."""

    code = 14


# --- Calls ------------------------------------------------------------------------


def _round_in_progress(state: Overlay, round_id: int) -> Round:
    rnd = current_round(state)
    if rnd is None or rnd.id != round_id:
        now = f"round {rnd.id} is in progress" if rnd else "no round is in progress"
        raise UnknownRound(f"round {round_id} is not open ({now}; see `gradchain query training round`)")
    return rnd


def _in_phase(rnd: Round, phase: str) -> None:
    if rnd.phase != phase:
        raise WrongPhase(f"round {rnd.id} is in its {rnd.phase} phase, not {phase}")


def submit_delta(ctx: Context, signer: str, msg: tx_pb2.MsgSubmitDelta) -> None:
    """MsgSubmitDelta: a bonded trainer's delta and trajectory for the open round; pays check_fee and locks the
    trainer's free bond until it is decided."""
    rnd = _round_in_progress(ctx.state, msg.round)
    params = round_params(rnd)
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
    if not is_cid(msg.trajectory_cid) or not is_sha256_hex(msg.trajectory_sha256):
        raise InvalidSubmission("invalid trajectory reference: expected the manifest's CIDv1 and 64-hex sha256")
    if not 0 < msg.state_bytes <= params.max_state_bytes:
        raise InvalidSubmission(f"state files of {msg.state_bytes} bytes: each must be 1..{params.max_state_bytes} bytes (max_state_bytes)")
    if len(msg.grad_commitments) != audit.DIGEST_BYTES * params.steps:
        raise InvalidSubmission(f"grad_commitments must be {audit.DIGEST_BYTES} bytes per step ({audit.DIGEST_BYTES * params.steps}), got {len(msg.grad_commitments)}")
    if not is_printable_ascii(msg.kernel_path, 64, min_len=0):
        raise InvalidSubmission("kernel_path must be at most 64 printable ASCII characters")
    evicted = None
    if rnd.submissions >= params.max_submissions:
        evicted = _eviction_candidate(ctx.state, rnd.id)
        if evicted is None or evicted.bond >= stake:
            smallest = f"the smallest bond in it is {evicted.bond}{bank.DENOM}" if evicted else "none can be evicted"
            raise RoundFull(f"round {rnd.id} already has {params.max_submissions} submissions and {smallest}; a larger trainer bond ({stake}{bank.DENOM} now) takes a slot")
    if params.check_fee:  # bank.transfer refuses 0, and check_fee = 0 is a valid param
        bank.transfer(ctx, signer, CHECK_FEE_POOL, params.check_fee)  # first: the only step that can fail
    if evicted is not None:
        _evict(ctx, evicted, by=signer)
        rnd = replace(rnd, submissions=rnd.submissions - 1)
    sub = Submission(
        round=rnd.id, index=rnd.next_index, trainer=signer, cid=msg.cid, sha256=msg.sha256, bytes=msg.bytes,
        loss_before_micro=msg.loss_before_micro, loss_after_micro=msg.loss_after_micro, steps=msg.steps,
        kernel_path=msg.kernel_path, height=ctx.height, trajectory_cid=msg.trajectory_cid, trajectory_sha256=msg.trajectory_sha256,
        state_bytes=msg.state_bytes, bond=stake, check_fee=params.check_fee,
    )
    ctx.state.set(GRAD_COMMITMENTS_PREFIX + _u64(rnd.id) + _u64(sub.index), msg.grad_commitments)
    _put_trainer_bond(ctx.state, signer, replace(bond, locked=bond.locked + stake))
    _put_submission(ctx.state, sub)
    ctx.state.set(BY_TRAINER_PREFIX + _u64(rnd.id) + _raw(signer), encode_int(sub.index))
    _put_round(ctx.state, replace(rnd, submissions=rnd.submissions + 1, next_index=rnd.next_index + 1))
    ctx.emit(DeltaSubmitted(round=rnd.id, submission=sub.index, trainer=signer, cid=sub.cid, sha256=sub.sha256, bond=stake,
                            trajectory_cid=sub.trajectory_cid))


def _eviction_candidate(state: Overlay, round_id: int) -> Submission | None:
    """The submission with the smallest bond (ties: the latest index). Only submissions are in the round while it takes them."""
    return min(submissions(state, round_id), key=lambda s: (s.bond, -s.index), default=None)


def _evict(ctx: Context, sub: Submission, by: str) -> None:
    """Drop a submission and return its lock and check fee; its trainer may submit again with a larger bond."""
    bond = trainer_bond(ctx.state, sub.trainer)
    _put_trainer_bond(ctx.state, sub.trainer, replace(bond, locked=bond.locked - sub.bond))
    if sub.check_fee:
        bank.transfer(ctx, CHECK_FEE_POOL, sub.trainer, sub.check_fee)
    ctx.state.delete(SUBMISSION_PREFIX + _u64(sub.round) + _u64(sub.index))
    ctx.state.delete(GRAD_COMMITMENTS_PREFIX + _u64(sub.round) + _u64(sub.index))
    ctx.state.delete(BY_TRAINER_PREFIX + _u64(sub.round) + _raw(sub.trainer))
    ctx.emit(SubmissionEvicted(round=sub.round, submission=sub.index, trainer=sub.trainer, bond=sub.bond, by=by))


def _snapshot_power(rnd: Round, signer: str) -> int:
    """The signer's power in the round's snapshot; only its members act in the round."""
    power = dict(rnd.powers).get(signer)
    if power is None:
        raise NotValidator(f"{signer} was not an active validator when round {rnd.id} opened: only those validators audit in it")
    return power


def commit_verdicts(ctx: Context, signer: str, msg: tx_pb2.MsgCommitVerdicts) -> None:
    """MsgCommitVerdicts: an auditor seals its verdicts on every submission of its committees (one tx a round)."""
    rnd = _round_in_progress(ctx.state, msg.round)
    _in_phase(rnd, COMMIT)
    if signer not in rnd.auditors:
        raise NotValidator(f"{signer} sits on no committee of round {rnd.id}: only committee members commit verdicts")
    chunks = len(msg.commitment) // audit.DIGEST_BYTES
    seats = len(seats_of(ctx.state, rnd.id, signer))
    if len(msg.commitment) % audit.DIGEST_BYTES or not 1 <= chunks <= min(MAX_REVEAL_CHUNKS, seats):
        raise InvalidReveal(f"a commitment is 1 to min({MAX_REVEAL_CHUNKS}, committee seats = {seats}) sha256 digests "
                            f"({audit.DIGEST_BYTES} bytes each), got {len(msg.commitment)} bytes")
    key = COMMITMENT_PREFIX + _u64(rnd.id) + _raw(signer)
    if ctx.state.get(key) is not None:
        raise DuplicateAttestation(f"{signer} already committed its verdicts for round {rnd.id}")
    digests = [msg.commitment[i : i + audit.DIGEST_BYTES].hex() for i in range(0, len(msg.commitment), audit.DIGEST_BYTES)]
    ctx.state.set(key, encode_json({"chunks": digests, "opened": [False] * chunks, "revealed": False}))
    _put_round(ctx.state, replace(rnd, commits=rnd.commits + 1))
    ctx.emit(VerdictsCommitted(round=rnd.id, validator=signer))


def reveal_verdicts(ctx: Context, signer: str, msg: tx_pb2.MsgRevealVerdicts) -> None:
    """MsgRevealVerdicts: open one chunk of the sealed verdicts. Everything is checked before anything is written:
    the opening, the key, each entry's committee, signature and proof list, and that no entry was revealed in
    another chunk; proofs that do not match the trainer's commitments are recorded (they cost stake at the end of
    the reveal), not refused. The auditor counts as revealed once every chunk is open."""
    rnd = _round_in_progress(ctx.state, msg.round)
    _in_phase(rnd, REVEAL)
    key = COMMITMENT_PREFIX + _u64(rnd.id) + _raw(signer)
    sealed = decode_json(ctx.state.get(key))
    if sealed is None:
        raise NotCommitted(f"{signer} committed no verdicts in round {rnd.id}: nothing to reveal")
    if msg.chunk >= len(sealed["chunks"]):
        raise InvalidReveal(f"{signer} committed {len(sealed['chunks'])} chunks of verdicts, not chunk {msg.chunk}")
    if sealed["opened"][msg.chunk]:
        raise DuplicateAttestation(f"{signer} already revealed chunk {msg.chunk} of its verdicts for round {rnd.id}")
    if len(msg.salt) != audit.DIGEST_BYTES or len(msg.operator_pubkey) != crypto.PUBKEY_BYTES or crypto.address_of(msg.operator_pubkey) != signer:
        raise InvalidReveal(f"a reveal carries a {audit.DIGEST_BYTES}-byte salt and the signer's own {crypto.PUBKEY_BYTES}-byte ed25519 key")
    if verdicts_commitment(rnd.id, msg.salt, msg.operator_pubkey, msg.verdicts, msg.chunk).hex() != sealed["chunks"][msg.chunk]:
        raise InvalidReveal(f"these verdicts and salt do not open {signer}'s commitment for round {rnd.id}")
    seats = seats_of(ctx.state, rnd.id, signer)
    owed = [index for t, index in enumerate(seats) if reveal_chunk(t, len(seats), len(sealed["chunks"])) == msg.chunk]
    entries = []
    last = -1
    for v in msg.verdicts:  # bounded by the committees' size: at most max_submissions entries pass the checks
        if v.submission <= last:
            raise InvalidReveal("verdicts must name submissions in strictly increasing order")
        last = v.submission
        sub = get_submission(ctx.state, rnd.id, v.submission)
        if sub is None or signer not in dict(sub.committee):
            raise InvalidReveal(f"{signer} is not on the committee of submission {v.submission} of round {rnd.id}")
        if v.submission not in owed:
            raise InvalidReveal(f"submission {v.submission} is not in chunk {msg.chunk} of {signer}'s seats (training.reveal_chunk)")
        entries.append((sub, _audit_entry(ctx, rnd, sub, signer, msg.operator_pubkey, v)))
    for sub, entry in entries:
        ctx.state.set(VERDICT_PREFIX + _u64(rnd.id) + _u64(sub.index) + _raw(signer), encode_json(asdict(entry)))
        power = entry.power
        _put_submission(ctx.state, replace(sub, accept_power=sub.accept_power + power * (entry.verdict == ACCEPT),
                                           no_gain_power=sub.no_gain_power + power * (entry.verdict == NO_GAIN),
                                           reject_power=sub.reject_power + power * (entry.verdict == FRAUD)))
        claims_added = 0
        if entry.verdict == FRAUD:
            ckey = CLAIM_PREFIX + _u64(rnd.id) + _u64(sub.index) + _u64(entry.fraud_step)
            found = decode_json(ctx.state.get(ckey))
            claim = Claim(**found) if found else Claim(sub.index, entry.fraud_step, [])
            claims_added = 0 if found else 1
            _put_claim(ctx.state, rnd.id, replace(claim, claimants=claim.claimants + [signer]))
        rnd = replace(rnd, claims=rnd.claims + claims_added)
        ctx.emit(VerdictRevealed(round=rnd.id, submission=sub.index, validator=signer, verdict=entry.verdict,
                                 steps=",".join(map(str, entry.steps_checked)), proven=entry.proven, proof_ok=entry.proof_ok))
    opened = [o or i == msg.chunk for i, o in enumerate(sealed["opened"])]
    ctx.state.set(key, encode_json(sealed | {"opened": opened, "revealed": all(opened)}))
    _put_round(ctx.state, replace(rnd, reveals=rnd.reveals + all(opened)))


def _audit_entry(ctx: Context, rnd: Round, sub: Submission, signer: str, pubkey: bytes, v: tx_pb2.AuditVerdict) -> AuditEntry:
    """Check one revealed verdict and say what it proves (raises InvalidReveal on a malformed one)."""
    if v.verdict >= len(VERDICTS):
        raise InvalidReveal(f"verdict {v.verdict} on submission {sub.index}: expected 0 (accept), 1 (no gain) or 2 (fraud)")
    message = audit.audit_message(rnd.id, sub.index, sub.trajectory_sha256, rnd.beacon)
    if len(v.audit_signature) != crypto.SIGNATURE_BYTES or not crypto.verify(pubkey, message, v.audit_signature):
        raise InvalidReveal(f"the audit signature on submission {sub.index} is not {signer}'s signature of its audit message")
    if not is_printable_ascii(v.reason, 120, min_len=0):
        raise InvalidReveal("a verdict's reason is at most 120 printable ASCII characters")
    sample = audit.audit_sample(v.audit_signature, sub.steps, round_params(rnd).audit_steps)
    verdict = VERDICTS[v.verdict]
    proven = proof_ok = False
    if verdict == FRAUD:
        if v.fraud_step > sub.steps + CLAIM_DATASET_OFFSET or v.step_proofs:
            raise InvalidReveal(f"a fraud verdict names a step 0..{sub.steps + CLAIM_DATASET_OFFSET} and carries no proofs")
        if v.fraud_step == sub.steps + CLAIM_DATASET_OFFSET and not set(sample) & _mixed_steps(ctx.state, rnd, sub):
            raise InvalidReveal(f"a dataset-unavailable verdict on submission {sub.index} needs a sample that draws from a dataset other than the round's own")
    elif v.step_proofs:
        if len(v.step_proofs) != len(sample) or any(len(p) != audit.DIGEST_BYTES for p in v.step_proofs):
            raise InvalidReveal(f"a valid verdict proves all {len(sample)} sampled steps with {audit.DIGEST_BYTES}-byte proofs, or none")
        commitments = grad_commitments(ctx.state, rnd.id, sub.index)
        proven = True
        proof_ok = all(
            audit.grad_commitment(p) == commitments[audit.DIGEST_BYTES * step : audit.DIGEST_BYTES * (step + 1)] for p, step in zip(v.step_proofs, sample)
        )
    return AuditEntry(signer, verdict, dict(sub.committee)[signer], sample, proven, proof_ok, v.fraud_step if verdict == FRAUD else 0,
                      v.measured_error_ppm, v.reason, ctx.height)


def judge_claims(ctx: Context, signer: str, msg: tx_pb2.MsgJudgeClaims) -> None:
    """MsgJudgeClaims: a snapshotted validator's judgement of the round's fraud claims (one tx a round)."""
    rnd = _round_in_progress(ctx.state, msg.round)
    _in_phase(rnd, DISPUTE)
    power = _snapshot_power(rnd, signer)
    key = JUDGED_PREFIX + _u64(rnd.id) + _raw(signer)
    if ctx.state.get(key) is not None:
        raise DuplicateAttestation(f"{signer} already judged the claims of round {rnd.id}")
    judged, seen = [], []
    mixed: dict[int, set[int]] = {}  # submission -> its steps that draw from a dataset other than the round's own
    for j in msg.judgements:  # each names an open claim, at most once: bounded by rnd.claims
        name = (j.submission, j.step)
        if name in seen:
            raise InvalidSubmission(f"claim {j.submission}/{j.step} is judged twice")
        seen.append(name)
        found = decode_json(ctx.state.get(CLAIM_PREFIX + _u64(rnd.id) + _u64(j.submission) + _u64(j.step)))
        if found is None:
            raise UnknownSubmission(f"round {rnd.id} has no fraud claim on step {j.step} of submission {j.submission}")
        if j.abstain:
            # Only where a mixed dataset is needed, which its owner may withhold: the endpoints and the trainer's own
            # files need none, so abstaining there would be a free way out of judging.
            sub = get_submission(ctx.state, rnd.id, j.submission)
            if sub is not None and j.submission not in mixed:
                mixed[j.submission] = _mixed_steps(ctx.state, rnd, sub)
            if j.valid:
                raise InvalidSubmission(f"claim {j.submission}/{j.step}: an abstention says neither valid nor invalid (valid must be false)")
            if sub is None or not (j.step == sub.steps + CLAIM_DATASET_OFFSET or j.step in mixed[j.submission]):
                raise InvalidSubmission(f"claim {j.submission}/{j.step} needs no dataset but the round's own: judge it, do not abstain")
        judged.append((Claim(**found), None if j.abstain else j.valid))
    for claim, valid in judged:
        _put_claim(ctx.state, rnd.id, replace(claim, valid_power=claim.valid_power + power * (valid is True),
                                              invalid_power=claim.invalid_power + power * (valid is False),
                                              abstain_power=claim.abstain_power + power * (valid is None)))
    ctx.state.set(key, encode_json([[c.submission, c.step, valid] for c, valid in judged]))  # valid None: abstained
    _put_round(ctx.state, replace(rnd, judges=rnd.judges + 1))
    ctx.emit(ClaimsJudged(round=rnd.id, validator=signer, judgements=len(judged)))


def merge_commitment(round_id: int, signer: str, vote: tx_pb2.MsgAttestMerge) -> bytes:
    """What MsgCommitMerge carries: sha256 over the round, the voter and the vote's canonical bytes (its salt included)."""
    return hashlib.sha256(audit.MERGE_DOMAIN + _u64(round_id) + _raw(signer) + vote.SerializeToString(deterministic=True)).digest()


def commit_merge(ctx: Context, signer: str, msg: tx_pb2.MsgCommitMerge) -> None:
    """MsgCommitMerge: a snapshotted validator seals its merge vote (file and measurements) before anyone reveals."""
    rnd = _round_in_progress(ctx.state, msg.round)
    _in_phase(rnd, MERGE)
    _snapshot_power(rnd, signer)
    if len(msg.commitment) != audit.DIGEST_BYTES:
        raise InvalidReveal(f"a merge commitment is {audit.DIGEST_BYTES} bytes (sha256), got {len(msg.commitment)}")
    key = MERGE_COMMITMENT_PREFIX + _u64(rnd.id) + _raw(signer)
    if ctx.state.get(key) is not None:
        raise DuplicateAttestation(f"{signer} already committed its merge vote for round {rnd.id}")
    ctx.state.set(key, msg.commitment)
    _put_round(ctx.state, replace(rnd, merge_commits=rnd.merge_commits + 1))
    ctx.emit(MergeCommitted(round=rnd.id, validator=signer))


def attest_merge(ctx: Context, signer: str, msg: tx_pb2.MsgAttestMerge) -> None:
    """MsgAttestMerge: reveal a sealed recomputation of the merged checkpoint; at quorum on one file, register it."""
    rnd = _round_in_progress(ctx.state, msg.round)
    params = round_params(rnd)
    _in_phase(rnd, MERGE_REVEAL)
    power = _snapshot_power(rnd, signer)
    if not is_cid(msg.cid) or not is_sha256_hex(msg.sha256) or msg.bytes == 0:
        raise InvalidSubmission("invalid merge reference: expected a CIDv1, a 64-hex sha256 and a non-zero size")
    key = MERGE_VOTE_PREFIX + _u64(rnd.id) + _raw(signer)
    if ctx.state.get(key) is not None:
        raise DuplicateAttestation(f"{signer} already attested the merge of round {rnd.id}")
    if not msg.prompts_correct <= msg.prompts_total <= params.eval_prompts:
        raise InvalidSubmission(f"invalid prompt score {msg.prompts_correct}/{msg.prompts_total}: at most eval_prompts = {params.eval_prompts} prompts, correct <= total")
    sealed = ctx.state.get(MERGE_COMMITMENT_PREFIX + _u64(rnd.id) + _raw(signer))
    if sealed is None:
        raise NotCommitted(f"{signer} committed no merge vote in round {rnd.id}: nothing to reveal")
    if len(msg.salt) != audit.DIGEST_BYTES or merge_commitment(rnd.id, signer, msg) != sealed:
        raise InvalidReveal(f"this merge vote and {audit.DIGEST_BYTES}-byte salt do not open {signer}'s merge commitment for round {rnd.id}")
    vote = {"validator": signer, "cid": msg.cid, "sha256": msg.sha256, "bytes": msg.bytes, "held_out_loss_micro": msg.held_out_loss_micro,
            "prompts_correct": msg.prompts_correct, "prompts_total": msg.prompts_total, "power": power}
    ctx.state.set(key, encode_json(vote))
    _put_round(ctx.state, replace(rnd, merge_reveals=rnd.merge_reveals + 1))
    ctx.emit(MergeAttested(round=rnd.id, validator=signer, cid=msg.cid, sha256=msg.sha256))


def bond_trainer(ctx: Context, signer: str, msg: tx_pb2.MsgBondTrainer) -> None:
    """MsgBondTrainer: put up collateral for training work."""
    if msg.amount <= 0:
        raise InvalidAmount(f"invalid amount {msg.amount}: must be a positive integer of {bank.DENOM}")
    bond = trainer_bond(ctx.state, signer)
    bank.transfer(ctx, signer, TRAINER_POOL, msg.amount)
    _put_trainer_bond(ctx.state, signer, replace(bond, bonded=bond.bonded + msg.amount))
    ctx.emit(TrainerBonded(trainer=signer, amount=msg.amount))


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
    _put_trainer_bond(ctx.state, signer, replace(bond, bonded=bond.bonded - msg.amount, unbonding=bond.unbonding + msg.amount))
    enqueue(ctx.state, TRAINER_UNBONDING_PREFIX, TRAINER_UNBONDING_SEQ_KEY, due, {"trainer": signer, "amount": msg.amount, "completion_height": due})
    ctx.emit(TrainerUnbondingStarted(trainer=signer, amount=msg.amount, completion_height=due))


CALLS = {"submit_delta": submit_delta, "commit_verdicts": commit_verdicts, "reveal_verdicts": reveal_verdicts, "judge_claims": judge_claims,
         "commit_merge": commit_merge, "attest_merge": attest_merge, "bond_trainer": bond_trainer, "unbond_trainer": unbond_trainer}

# --- Decisions --------------------------------------------------------------------


def _decide_valid(ctx: Context, params: Params, rnd: Round, sub: Submission, refund: bool = True) -> None:
    """A submission without an upheld claim: accepted, not merged or expired by its committee's revealed valid verdicts.

    Verdicts whose proofs failed count for nothing (no recomputation gave them);
    unproven ones (another kernel path) count but are not paid."""
    valid = [e for e in audit_entries(ctx.state, rnd.id, sub.index) if e.verdict != FRAUD and not (e.proven and not e.proof_ok)]
    needed = quorum(params, sub.committee_power)
    accept_power = sum(e.power for e in valid if e.verdict == ACCEPT)
    if accept_power >= needed:
        _release(ctx, sub, slashed=0)
        _pay_reward(ctx, params, rnd, sub)
        rnd = get_round(ctx.state, rnd.id)
        _put_round(ctx.state, replace(rnd, accepted=sorted(rnd.accepted + [sub.index])))
        payees = [e.validator for e in valid if e.proven and e.verdict == ACCEPT]  # paid for matching the decision
        _pay_auditors(ctx, rnd, sub, payees, params.reward * params.verifier_reward_bps // BPS)
        ctx.emit(DeltaAccepted(round=rnd.id, submission=sub.index, trainer=sub.trainer, reward=params.reward))
        _put_submission(ctx.state, replace(sub, status=ACCEPTED))
    elif sum(e.power for e in valid) >= needed:
        _release(ctx, sub, slashed=0)  # correct work that does not help: bond kept, nothing paid, not merged
        _pay_auditors(ctx, rnd, sub, [e.validator for e in valid if e.proven and e.verdict == NO_GAIN], 0)
        ctx.emit(DeltaNotMerged(round=rnd.id, submission=sub.index, trainer=sub.trainer))
        _put_submission(ctx.state, replace(sub, status=NOT_MERGED))
    else:
        _expire(ctx, rnd, sub, refund)


def _pay_reward(ctx: Context, params: Params, rnd: Round, sub: Submission) -> None:
    """Mint `reward` for an accepted submission: each drawn dataset's royalty to its owner, the rest to the trainer."""
    counts = step_counts(rnd.seed, sub.trainer, rnd.mix, sub.steps)  # <= MAX_ADMITTED entries
    drawn = {d: datasets.get(ctx.state, d) for d, _ in counts}
    cap = datasets.get_params(ctx.state).max_royalty_bps  # a cap lowered after registration reaches stored royalties too
    trainer_part, royalties = reward_split(params.reward, counts, {d: min(ds.royalty_bps, cap) for d, ds in drawn.items()})
    if trainer_part:
        bank.mint(ctx, sub.trainer, trainer_part)
    for (d, n), (_, amount) in zip(counts, royalties):
        owner = datasets.owner_of(drawn[d])
        if amount:
            bank.mint(ctx, owner, amount)
        datasets.record_royalty(ctx, d, owner, amount, n * params.batch_size, rnd.id, sub.index)


def _expire(ctx: Context, rnd: Round, sub: Submission, refund: bool = True) -> None:
    """No decision: the trainer gets its lock back, and its check fee unless its own files were claimed unavailable
    (k + 1: withholding them through the audit and serving them to the judges must cost the trainer, not the
    auditors; a drawn dataset's owner withholding, k + 2, is not the trainer's doing and is refunded)."""
    _release(ctx, sub, slashed=0)
    if sub.check_fee:
        if refund:
            bank.transfer(ctx, CHECK_FEE_POOL, sub.trainer, sub.check_fee)
        else:
            bank.burn(ctx, CHECK_FEE_POOL, sub.check_fee)
    ctx.emit(SubmissionExpired(round=rnd.id, submission=sub.index, trainer=sub.trainer))
    _put_submission(ctx.state, replace(sub, status=EXPIRED))


def _reject(ctx: Context, params: Params, rnd: Round, sub: Submission, claimants: list[str], upheld_steps: list[int],
            unpaid: int = 0) -> None:
    """A fraud claim was upheld: slash slash_bps of the locked bond; the upheld claimants share attester_share_bps of it
    and the check fee, counting `unpaid` more claimants whose shares are burned (upheld dataset-unavailable claimants:
    they proved nothing, and a dataset owner must not profit from withholding its own data). Committee members pay
    fraud_proof_slash_bps when they called the submission valid although their own proven sample held an upheld step
    (or the claim was on the endpoints, which every auditor checks bitwise), or when they committed and then did not
    reveal on it (keeping quiet once a claim shows up is no way out). A member whose sample missed the bad steps made an honest miss, and one on another kernel path compared
    within tolerance: neither is charged."""
    slashed = sub.bond * params.slash_bps // BPS
    _release(ctx, sub, slashed=slashed)
    if slashed:
        bank.transfer(ctx, TRAINER_POOL, CHECK_FEE_POOL, slashed)
    _pay_auditors(ctx, rnd, sub, claimants, 0, from_slash=slashed, slash_share=slashed * params.attester_share_bps // BPS, unpaid=unpaid)
    entries = {e.validator: e for e in audit_entries(ctx.state, rnd.id, sub.index)}
    endpoints = sub.steps + CLAIM_ENDPOINTS_OFFSET
    for operator, _ in sub.committee:  # at most committee_size
        entry = entries.get(operator)
        if entry is None:
            sealed = commitment(ctx.state, rnd.id, operator)
            if sealed is not None:
                _penalize(ctx, rnd, operator, params.fraud_proof_slash_bps, "accepted_fraud")
        elif entry.verdict != FRAUD and any(step == endpoints or (entry.proven and step in entry.steps_checked) for step in upheld_steps):
            # An unproven accept (another kernel path) checked the step within step_tolerance_ppm, which a fake can
            # stay under: honest disagreement across kernel paths is not charged; the endpoints are bitwise everywhere.
            _penalize(ctx, rnd, operator, params.fraud_proof_slash_bps, "accepted_fraud")
    ctx.emit(DeltaRejected(round=rnd.id, submission=sub.index, trainer=sub.trainer, slashed=slashed))
    _put_submission(ctx.state, replace(sub, status=REJECTED))


def _pay_auditors(ctx: Context, rnd: Round, sub: Submission, payees: list[str], minted: int, from_slash: int = 0, slash_share: int = 0,
                  unpaid: int = 0) -> None:
    """Split the check fee (+ `minted` new tokens, + `slash_share` of a slash sitting in the pool) equally among
    `payees` and `unpaid` more shareholders; burn what is left (the rest of the slash, the unpaid shares, the remainder
    of the division, everything without payees)."""
    if minted and payees:
        bank.mint(ctx, CHECK_FEE_POOL, minted)
    pool = sub.check_fee + (minted if payees else 0) + from_slash
    paid_out = sub.check_fee + (minted if payees else 0) + slash_share
    share = paid_out // (len(payees) + unpaid) if payees else 0
    for payee in payees:
        if share:
            bank.transfer(ctx, CHECK_FEE_POOL, payee, share)
            ctx.emit(VerifierPaid(round=rnd.id, submission=sub.index, validator=payee, amount=share))
    if pool - share * len(payees):
        bank.burn(ctx, CHECK_FEE_POOL, pool - share * len(payees))


def _penalize(ctx: Context, rnd: Round, operator: str, bps: int, reason: str, count: int = 1) -> None:
    """Burn bps (times count, at most all) of a validator's stake, including stake that left since the round opened."""
    bps = min(BPS, bps * count)
    if bps:
        amount = staking.penalize(ctx, operator, bps, f"training_{reason}", since_height=rnd.open_height)
        ctx.emit(VerifierPenalized(round=rnd.id, validator=operator, amount=amount, reason=reason))


def _release(ctx: Context, sub: Submission, slashed: int) -> None:
    """A decided or expired submission unlocks its bond, less what was slashed from it."""
    bond = trainer_bond(ctx.state, sub.trainer)
    _put_trainer_bond(ctx.state, sub.trainer, replace(bond, bonded=bond.bonded - slashed, locked=bond.locked - sub.bond))


def _weighted_median(votes: list[dict], name: str) -> int:
    """The stake-weighted median of one measurement: the smallest value with at least half the voters' power at or
    below it, so validators holding less than half the power cannot move it however far they lie."""
    total = sum(v["power"] for v in votes)
    seen = 0
    for v in sorted(votes, key=lambda v: (v.get(name, 0), _raw(v["validator"]))):
        seen += v["power"]
        if 2 * seen >= total:
            return v.get(name, 0)
    return 0


def _end_merge(ctx: Context, params: Params, rnd: Round) -> None:
    """The merge reveal is over (everyone who committed revealed, or the window ran out). A file with quorum_bps of
    the snapshot power is registered; then votes for another file pay, and so does every validator whose vote is
    missing: one that committed and kept quiet (it may have sealed a losing vote), or, when nothing was registered,
    one that never voted. Nothing is decided at the quorum itself, so no sealed vote can wait and stay silent."""
    votes = merge_votes(ctx.state, rnd.id)  # at most one per snapshotted validator
    files: dict[tuple, int] = {}
    for v in votes:
        files[(v["cid"], v["sha256"], v["bytes"])] = files.get((v["cid"], v["sha256"], v["bytes"]), 0) + v["power"]
    needed = quorum(params, rnd.total_power)
    winner = next((f for f, power in sorted(files.items()) if power >= needed), None)  # at most one: the quorum is above half
    voted = [v["validator"] for v in votes]
    for operator, _ in rnd.powers:
        if operator in voted:
            continue
        if winner is None or ctx.state.get(MERGE_COMMITMENT_PREFIX + _u64(rnd.id) + _raw(operator)) is not None:
            _penalize(ctx, rnd, operator, params.verifier_penalty_bps, "merge_absent")
    if winner is None:
        _close(ctx, rnd)  # no quorum on a merge in time: nothing is registered
        return
    for vote in votes:
        if (vote["cid"], vote["sha256"], vote["bytes"]) != winner:
            _penalize(ctx, rnd, vote["validator"], params.verifier_penalty_bps, "merge_wrong")
    _register_merge(ctx, rnd, [v for v in votes if (v["cid"], v["sha256"], v["bytes"]) == winner])


def _register_merge(ctx: Context, rnd: Round, agreeing: list[dict]) -> None:
    base = registry.get(ctx.state, rnd.base_version)
    metrics = {"held_out_loss_micro": _weighted_median(agreeing, "held_out_loss_micro"), "accepted_submissions": len(rnd.accepted)}
    if _weighted_median(agreeing, "prompts_total"):
        metrics |= {"prompts_correct": _weighted_median(agreeing, "prompts_correct"), "prompts_total": _weighted_median(agreeing, "prompts_total")}
    first = agreeing[0]
    contributions = _contributions(ctx, rnd)
    trained_on = sorted({d for c in contributions for d, _ in c.windows}) or [rnd.dataset_id]
    try:
        version = registry.register(
            ctx, parent=base.id, cid=first["cid"], sha256=first["sha256"], size=first["bytes"], family=base.family,
            config_json=base.config_json, dataset_ids=trained_on, licence=base.licence, creator=rnd.aggregator or first["validator"],
            round=rnd.id, metrics=metrics, contributions=contributions,
            note=f"round {rnd.id}: {len(rnd.accepted)} accepted submissions (listed in the round)",  # registry notes are bounded
        )
    except ModuleError as exc:
        # Every input is bounded (<= MAX_ADMITTED datasets, steps x batch_size far inside uint64, votes checked at
        # attest_merge), but a quorum can still agree on a file already registered: end_block must not raise on
        # that, so the refusal is recorded (register checks everything before it writes) and the round closes.
        ctx.emit(MergeNotRegistered(round=rnd.id, cid=first["cid"], sha256=first["sha256"], reason=exc.log[:200]))
        _close(ctx, rnd)
        return
    _close(ctx, replace(rnd, version=version.id))


def _contributions(ctx: Context, rnd: Round) -> list[registry.Contribution]:
    """The provenance of each accepted submission (at most max_submissions <= registry.MAX_CONTRIBUTIONS)."""
    batch_size = round_params(rnd).batch_size
    out = []
    for index in rnd.accepted:
        sub = get_submission(ctx.state, rnd.id, index)
        counts = step_counts(rnd.seed, sub.trainer, rnd.mix, sub.steps)
        out.append(registry.Contribution(submission=index, trainer=sub.trainer, cid=sub.cid, sha256=sub.sha256, seed=rnd.seed,
                                         windows=[[d, n * batch_size] for d, n in counts]))
    return out


def _close(ctx: Context, rnd: Round) -> None:
    _put_round(ctx.state, replace(rnd, phase=CLOSED))
    ctx.state.delete(CURRENT_KEY)
    ctx.emit(RoundClosed(round=rnd.id, version="" if rnd.version is None else rnd.version))


# --- Genesis ----------------------------------------------------------------------


def genesis(ctx: Context, config: dict) -> None:
    """training genesis: {"params": {...}}."""
    params = Params(**config.get("params", {}))
    params.validate()
    store_params(ctx.state, PARAMS_KEY, params)


# --- Hooks ------------------------------------------------------------------------


def end_block(ctx: Context) -> None:
    """Pay out due trainer unbondings; advance the round in progress by height (or once everyone acted), or open the next one."""
    _complete_trainer_unbondings(ctx)
    rnd = current_round(ctx.state)
    if rnd is None:
        _maybe_open(ctx, get_params(ctx.state))
        return
    params = round_params(rnd)

    def last(until: int) -> bool:
        return ctx.height >= until - 1

    if rnd.phase == SUBMIT and last(rnd.submit_until):
        _start_audit(ctx, params, rnd)
    elif rnd.phase == COMMIT and (rnd.commits == len(rnd.auditors) or last(rnd.commit_until)):
        rnd = replace(rnd, phase=REVEAL, reveal_until=ctx.height + 1 + params.reveal_blocks)
        _put_round(ctx.state, rnd)
        ctx.emit(RevealStarted(round=rnd.id, reveal_until=rnd.reveal_until))
    elif rnd.phase == REVEAL and (rnd.reveals == rnd.commits or last(rnd.reveal_until)):
        _end_reveal(ctx, params, rnd)
    elif rnd.phase == DISPUTE and (rnd.judges == len(rnd.powers) or last(rnd.dispute_until)):
        _end_dispute(ctx, params, rnd)
    elif rnd.phase == MERGE and (rnd.merge_commits == len(rnd.powers) or last(rnd.merge_until)):
        rnd = replace(rnd, phase=MERGE_REVEAL, merge_reveal_until=ctx.height + 1 + params.reveal_blocks)
        _put_round(ctx.state, rnd)
        ctx.emit(MergeRevealStarted(round=rnd.id, merge_reveal_until=rnd.merge_reveal_until))
    elif rnd.phase == MERGE_REVEAL and (rnd.merge_reveals == rnd.merge_commits or last(rnd.merge_reveal_until)):
        _end_merge(ctx, params, rnd)


def _complete_trainer_unbondings(ctx: Context) -> None:
    """Pay out entries due by now (the queue is ordered by due height)."""
    due = due_entries(ctx.state, TRAINER_UNBONDING_PREFIX, ctx.height)
    if not due:
        return
    for key, entry in due:
        bond = trainer_bond(ctx.state, entry["trainer"])
        ctx.state.delete(key)
        _put_trainer_bond(ctx.state, entry["trainer"], replace(bond, unbonding=bond.unbonding - entry["amount"]))
        bank.transfer(ctx, TRAINER_POOL, entry["trainer"], entry["amount"])
        ctx.emit(TrainerUnbondingCompleted(trainer=entry["trainer"], amount=entry["amount"]))


def _maybe_open(ctx: Context, params: Params) -> None:
    if not params.enabled or not ctx.block.hash:
        return
    base = registry.latest(ctx.state)
    if base is None or not datasets.exists(ctx.state, params.dataset_id):
        return
    mix = datasets.admitted(ctx.state)  # <= max_admitted entries
    if not mix:
        return  # governance delisted every dataset: nothing to train on
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
        open_height=start, submit_until=start + params.submission_blocks, powers=powers, total_power=total, mix=mix,
        params=asdict(params),
    )
    # Every phase ends by its window at the latest: penalties and votes are over by then.
    last = rnd.submit_until + params.verification_blocks + 2 * params.reveal_blocks + params.dispute_blocks + params.merge_blocks + 2
    staking.hold_stake(ctx, [operator for operator, _ in powers], until_height=last)
    _put_round(ctx.state, rnd)
    ctx.state.set(CURRENT_KEY, encode_int(round_id))
    ctx.state.set(COUNT_KEY, encode_int(round_id + 1))
    ctx.emit(RoundOpened(round=round_id, base_version=base.id, seed=rnd.seed, submit_until=rnd.submit_until))


def _start_audit(ctx: Context, params: Params, rnd: Round) -> None:
    """The submission window closed in this block: its hash is the beacon; draw each submission's committee."""
    subs = submissions(ctx.state, rnd.id)  # at most max_submissions
    if not subs:
        _close(ctx, rnd)
        return
    beacon = hashlib.sha256(b"gradchain/beacon/v1" + ctx.block.hash + _u64(rnd.id)).hexdigest()
    auditors: dict[str, int] = {}
    for sub in subs:
        members = committee(rnd.powers, beacon, rnd.id, sub.index, params.committee_size)
        _put_submission(ctx.state, replace(sub, committee=members, committee_power=sum(p for _, p in members)))
        for operator, power in members:
            auditors[operator] = power
    rnd = replace(rnd, phase=COMMIT, beacon=beacon, auditors=sorted(auditors, key=_raw), commit_until=ctx.height + 1 + params.verification_blocks)
    _put_round(ctx.state, rnd)
    ctx.emit(AuditStarted(round=rnd.id, beacon=beacon, commit_until=rnd.commit_until, auditors=len(rnd.auditors)))


def _end_reveal(ctx: Context, params: Params, rnd: Round) -> None:
    """Charge the auditors that did not reveal (or revealed proofs no recomputation gives), decide the unclaimed
    submissions, and open the dispute if anyone claimed fraud."""
    missing: dict[str, int] = {}
    bad: dict[str, int] = {}
    for sub in submissions(ctx.state, rnd.id):  # at most max_submissions, each with at most committee_size entries
        entries = {e.validator: e for e in audit_entries(ctx.state, rnd.id, sub.index)}
        for operator, _ in sub.committee:
            entry = entries.get(operator)
            if entry is None:
                missing[operator] = missing.get(operator, 0) + 1
            elif entry.proven and not entry.proof_ok:
                bad[operator] = bad.get(operator, 0) + 1
        if sub.status == PENDING and not claims(ctx.state, rnd.id, sub.index):
            _decide_valid(ctx, params, rnd, sub)
    for operator in rnd.auditors:
        _penalize(ctx, rnd, operator, params.unrevealed_penalty_bps, "unrevealed", missing.get(operator, 0))
        _penalize(ctx, rnd, operator, params.unrevealed_penalty_bps, "bad_proof", bad.get(operator, 0))
    rnd = get_round(ctx.state, rnd.id)
    if rnd.claims:
        rnd = replace(rnd, phase=DISPUTE, dispute_until=ctx.height + 1 + params.dispute_blocks)
        _put_round(ctx.state, rnd)
        ctx.emit(DisputeStarted(round=rnd.id, dispute_until=rnd.dispute_until, claims=rnd.claims))
        return
    _finish_verification(ctx, params, rnd)


def _end_dispute(ctx: Context, params: Params, rnd: Round) -> None:
    """Decide every claim by the snapshot's quorum; reject what an upheld claim shows, decide the rest by their verdicts;
    charge false claimants, judges against a decided claim or abstaining on one, and absent judges where a claim stayed
    undecided.

    A judge that could not load a mixed dataset a claim needs abstained: it counts toward neither side, so a claim on
    data the snapshot could not check cannot be upheld by that (an upheld claim, and with it the trainer's slash and the
    accepting auditors' fraud_proof_slash_bps, always has a quorum of judges that loaded every input); it ends
    undecided and the submission expires, check fee refunded, nobody charged but absent judges. Once a claim is decided
    a quorum did load the data, so an abstention on it pays verifier_penalty_bps like absence: not recomputing is never
    cheaper than recomputing.

    A dataset-unavailable claim (k + 2) is judged on the data loaded at the dispute: upheld (the claimant's mixed steps
    or the trainer's files failed), it rejects like any upheld claim, but its claimants' slash and check fee shares are
    burned (they proved nothing, and a dataset owner must not profit from withholding its own data); refuted, the
    claimant pays verifier_penalty_bps (not a free veto) and the submission is decided by its verdicts."""
    needed = quorum(params, rnd.total_power)
    # Each judge's judgements by (submission, step): one lookup per claim and judge, however many claims a round has.
    judgements = {op: {(i, step): valid for i, step, valid in decode_json(ctx.state.get(JUDGED_PREFIX + _u64(rnd.id) + _raw(op))) or []}
                  for op, _ in rnd.powers}
    wrong: dict[str, int] = {}
    absent: dict[str, int] = {}
    false_claims: dict[str, int] = {}
    false_dataset_claims: dict[str, int] = {}
    for sub in submissions(ctx.state, rnd.id):  # at most max_submissions
        claimed = claims(ctx.state, rnd.id, sub.index)  # at most committee_size each
        if sub.status != PENDING or not claimed:
            continue
        upheld_by: list[str] = []
        unpaid: list[str] = []  # claimants of an upheld k + 2 claim
        upheld_steps: list[int] = []
        undecided = False
        for claim in claimed:
            outcome = UPHELD if claim.invalid_power >= needed else REFUTED if claim.valid_power >= needed else UNDECIDED
            _put_claim(ctx.state, rnd.id, replace(claim, outcome=outcome))
            ctx.emit(ClaimDecided(round=rnd.id, submission=sub.index, step=claim.step, outcome=outcome))
            dataset_claim = claim.step == sub.steps + CLAIM_DATASET_OFFSET
            if outcome == UPHELD and dataset_claim:
                unpaid += [c for c in claim.claimants if c not in unpaid]  # the failing step is unknown: no upheld step
            elif outcome == UPHELD:
                upheld_by += [c for c in claim.claimants if c not in upheld_by]
                upheld_steps.append(claim.step)
            elif outcome == REFUTED and dataset_claim:
                # A quorum loaded the data: "unavailable" was at best bad luck, charged as a wrong judge is.
                for c in claim.claimants:
                    false_dataset_claims[c] = false_dataset_claims.get(c, 0) + 1
            elif outcome == REFUTED and claim.step != sub.steps + CLAIM_UNAVAILABLE_OFFSET:
                # Content found at the dispute may have been withheld at the audit: that cannot be proven either way,
                # so a refuted availability claim on the trainer's files costs its sender nothing (and the trainer its
                # check fee, below).
                for c in claim.claimants:
                    false_claims[c] = false_claims.get(c, 0) + 1
            undecided = undecided or outcome == UNDECIDED
            for op, _ in rnd.powers:
                said = judgements[op].get((claim.submission, claim.step), _ABSENT)
                if outcome == UNDECIDED:
                    if said is _ABSENT:  # an abstention stays free: nobody could show the data was there
                        absent[op] = absent.get(op, 0) + 1
                elif said is None:  # abstained on a claim a quorum loaded the data for
                    absent[op] = absent.get(op, 0) + 1
                elif said in (True, False) and said != (outcome == REFUTED):
                    wrong[op] = wrong.get(op, 0) + 1
        availability = any(c.step == sub.steps + CLAIM_UNAVAILABLE_OFFSET for c in claimed)
        if upheld_by or unpaid:
            _reject(ctx, params, rnd, sub, upheld_by, upheld_steps, unpaid=len([c for c in unpaid if c not in upheld_by]))
        elif undecided:
            _expire(ctx, rnd, sub, refund=not availability)
        else:
            _decide_valid(ctx, params, rnd, sub, refund=not availability)
    for operator, _ in rnd.powers:
        _penalize(ctx, rnd, operator, params.false_claim_penalty_bps, "false_claim", false_claims.get(operator, 0))
        _penalize(ctx, rnd, operator, params.verifier_penalty_bps, "false_dataset_claim", false_dataset_claims.get(operator, 0))
        _penalize(ctx, rnd, operator, params.verifier_penalty_bps, "wrong", wrong.get(operator, 0))
        _penalize(ctx, rnd, operator, params.verifier_penalty_bps, "absent", absent.get(operator, 0))
    _finish_verification(ctx, params, get_round(ctx.state, rnd.id))


def _finish_verification(ctx: Context, params: Params, rnd: Round) -> None:
    if not rnd.accepted:
        _close(ctx, rnd)
        return
    rnd = replace(rnd, phase=MERGE, merge_until=ctx.height + 1 + params.merge_blocks, aggregator=_aggregator(rnd.powers, rnd.total_power, rnd.seed))
    _put_round(ctx.state, rnd)
    ctx.emit(MergeStarted(round=rnd.id, aggregator=rnd.aggregator, merge_until=rnd.merge_until, accepted=",".join(map(str, rnd.accepted))))


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
    subs = [asdict(s) | {"grad_commitments": grad_commitments(state, rnd.id, s.index).hex(),
                         "verdicts": [asdict(e) for e in audit_entries(state, rnd.id, s.index)],
                         "claims": [asdict(c) for c in claims(state, rnd.id, s.index)]} for s in submissions(state, rnd.id)]
    sealed = {op: commitment(state, rnd.id, op) for op in rnd.auditors}
    return encode_json(asdict(rnd) | {
        "submission_list": subs, "merge_votes": merge_votes(state, rnd.id),
        "committed": [op for op in rnd.auditors if sealed[op]], "revealed": [op for op in rnd.auditors if sealed[op] and sealed[op]["revealed"]],
        "judged": [op for op, _ in rnd.powers if state.get(JUDGED_PREFIX + _u64(rnd.id) + _raw(op)) is not None],
        "merge_committed": [op for op, _ in rnd.powers if state.get(MERGE_COMMITMENT_PREFIX + _u64(rnd.id) + _raw(op)) is not None],
    })


VIEWS = {"current": view_current, "round_detail": view_round_detail}
