"""gov: stake-weighted proposals whose messages the gov module account executes (Cosmos SDK x/gov v1).

A proposal carries a title, a summary and a list of messages (TxBody
entries). It opens in the deposit period; once its deposits reach the
minimum it enters the voting period, where stakers vote yes / no / abstain /
no_with_veto. Votes count stake snapshotted when voting started: the active
validators' tokens (at most max_validators entries), which stay slashable
until voting_end (staking.hold_stake); a vote lasts at most
staking.unbonding_blocks, so that hold never delays an exit past it. A delegator's stake follows its
validator's vote unless the delegator voted itself with a delegation older
than the snapshot; each vote adds its weight to running per-option counts
when it is cast (a re-vote takes its old weight back first), so the end
block only reads them. A passed proposal's messages run as
the gov module account, atomically (all or none); the outcome and any
failure reason are stored in the proposal and emitted as events.

Every message is checked when the proposal is submitted (it runs on a
scratch copy of the state and must succeed), and MsgUpdateParams carries a
module's whole parameter set, checked by that module's own validate(): a
proposal that could only fail is refused, never passed and then failed.
MsgUpdateParams also names the sha256 of the params it was drafted against:
if another proposal changed them since, it fails at execution rather than
silently undoing that change.

Deposits are held by the `gov_deposits` account, apart from the executing
`gov` account (which holds nothing), so no proposal can spend them. They are
refunded when a proposal passes, fails or is rejected, and burned when it is
vetoed, when its deposit period ends short of the minimum
(burn_proposal_deposit_prevote) and, if burn_vote_quorum is set, when it
misses quorum. Hooks read only the proposals whose window ends at this
height (queues keyed by end height); a proposal's deposit records are at
most MAX_DEPOSITORS (each new one adds at least 1/MAX_DEPOSITORS of the
minimum, so full slots mean a reached minimum), its snapshot at most
max_validators entries, and each vote reads at most MAX_VOTE_DELEGATIONS
delegations, paid for by its voter.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace

from abci_app import crypto, paging
from abci_app.context import (
    MAX_UINT64, Context, EventType, ModuleError, decode_int, decode_json, due_entries, encode_int, encode_json, load_params,
    loads_bounded, parse_uint64, store_params,
)
from abci_app.modules import bank, staking
from abci_app.state import Overlay
from abci_app.tx import tx_pb2

# --- Params ---------------------------------------------------------------------

BPS = 10_000
MAX_BLOCKS = 10_000_000  # a window of ~4 months at 1 s blocks; heights stay far inside 8 bytes
MAX_TITLE = 140
MAX_SUMMARY = 4096
MAX_MESSAGES = 16  # messages a proposal carries (the tx size limit bounds their bytes)
MAX_DEPOSITORS = 64  # distinct depositors of one proposal: refunds walk them all in one hook
MAX_PARAMS_JSON = 8192  # bytes of MsgUpdateParams.params_json
MAX_PARAM_INT = 2**63 - 1
MAX_VOTE_DELEGATIONS = 32  # delegations one vote reads: a voter with more delegations consolidates them first
MAX_MIN_DEPOSIT = 10**15  # ugrad (1e9 GRAD); update_params also keeps it within MAX_DEPOSIT_SUPPLY_BPS of the supply
MAX_DEPOSIT_SUPPLY_BPS = 1_000  # a new expedited_min_deposit is at most 10% of the supply: proposals stay fundable
MAX_QUORUM_BPS = 6_667  # CometBFT runs on 2/3 of the stake; a quorum above it lets an absent third block gov for good
MIN_VETO_BPS = 1_000  # a veto needs at least 10% of the votes
MIN_QUORUM_BPS = 1_000  # below 10% of the stake, a small validator passes anything nobody notices within the window
MAX_INITIAL_DEPOSIT_BPS = 5_000  # a submission carries at most half the minimum: others can fund the rest
# Floors a params change may not shrink a window below (genesis may pick shorter ones, for test nets): below them the
# stake must vote, or the deposit arrive, on a predicted proposal within seconds, and gov could not undo the change.
MIN_WINDOW_BLOCKS = {"deposit_blocks": 10, "voting_blocks": 10, "expedited_voting_blocks": 5}
# Options as x/gov numbers them.
YES, ABSTAIN, NO, NO_WITH_VETO = 1, 2, 3, 4
OPTIONS = {YES: "yes", ABSTAIN: "abstain", NO: "no", NO_WITH_VETO: "no_with_veto"}
# Statuses a proposal goes through: deposit -> voting -> one of the final five.
DEPOSIT_PERIOD, VOTING_PERIOD = "deposit_period", "voting_period"
PASSED, REJECTED, VETOED, FAILED, DROPPED = "passed", "rejected", "vetoed", "failed", "dropped"


@dataclass(frozen=True)
class Params:
    min_deposit: int = 10_000_000  # deposits a proposal needs to enter voting
    expedited_min_deposit: int = 50_000_000  # the same for an expedited proposal
    min_initial_deposit_bps: int = 2_500  # share of the min deposit a submission must carry: empty proposals cost something
    deposit_blocks: int = 600  # heights a proposal may wait for its deposits
    voting_blocks: int = 20  # heights the vote lasts: at most staking.unbonding_blocks (check_voting_within_unbonding)
    expedited_voting_blocks: int = 10  # heights an expedited vote lasts (shorter than voting_blocks)
    quorum_bps: int = 3_340  # share of the bonded stake that must vote (abstain counts)
    threshold_bps: int = 5_000  # yes must be above this share of the non-abstain votes
    expedited_threshold_bps: int = 6_670  # the same for an expedited proposal (above threshold_bps)
    veto_threshold_bps: int = 3_340  # no_with_veto above this share of all votes vetoes the proposal
    burn_vote_quorum: bool = False  # burn the deposits of a proposal that misses quorum (else refund)
    burn_proposal_deposit_prevote: bool = True  # burn the deposits of a proposal that never reached min_deposit (else refund)
    burn_vote_veto: bool = True  # burn the deposits of a vetoed proposal (else refund)

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"gov.params.{f.name} must be true or false")
            elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_UINT64:
                raise ValueError(f"gov.params.{f.name} must be an integer from 0 to 2^64-1")
        if not 1 <= self.min_deposit <= self.expedited_min_deposit <= MAX_MIN_DEPOSIT:
            raise ValueError(f"gov.params: need 1 <= min_deposit <= expedited_min_deposit <= {MAX_MIN_DEPOSIT}")
        if not 1 <= self.deposit_blocks <= MAX_BLOCKS or not 1 <= self.voting_blocks <= MAX_BLOCKS:
            raise ValueError(f"gov.params deposit_blocks and voting_blocks must be 1 to {MAX_BLOCKS}")
        if not 1 <= self.expedited_voting_blocks < self.voting_blocks:
            raise ValueError("gov.params.expedited_voting_blocks must be at least 1 and below voting_blocks")
        if self.min_initial_deposit_bps > MAX_INITIAL_DEPOSIT_BPS:
            raise ValueError(f"gov.params.min_initial_deposit_bps must be at most {MAX_INITIAL_DEPOSIT_BPS}: a proposer alone need not hold more than half the minimum")
        # Bounds that keep gov usable whatever it votes for itself: each end of a range would let nothing pass again.
        if not MIN_QUORUM_BPS <= self.quorum_bps <= MAX_QUORUM_BPS:
            raise ValueError(f"gov.params.quorum_bps must be {MIN_QUORUM_BPS} to {MAX_QUORUM_BPS}: below, a small validator passes "
                             f"anything unnoticed; above 2/3 a third of the stake, absent, blocks every proposal")
        if not MIN_VETO_BPS <= self.veto_threshold_bps <= BPS:
            raise ValueError(f"gov.params.veto_threshold_bps must be {MIN_VETO_BPS} to 10000: below, a little stake vetoes (and burns) every proposal")
        if not BPS // 2 <= self.threshold_bps <= self.expedited_threshold_bps < BPS:
            raise ValueError("gov.params: need 5000 <= threshold_bps <= expedited_threshold_bps < 10000 (yes must be above it: 10000 passes nothing)")


GOV = bank.module_address("gov")  # executes passed proposals' messages; holds nothing
DEPOSITS = bank.module_address("gov_deposits")  # holds the deposits of open proposals

# --- Storage --------------------------------------------------------------------

PREFIX = b"gov/"
PARAMS_KEY = PREFIX + b"params"  # Params as canonical JSON
NEXT_ID_KEY = PREFIX + b"next_id"  # the next proposal id (ids start at 1)
PROPOSAL_PREFIX = PREFIX + b"proposal/"  # <id 8 BE> -> Proposal JSON
DEPOSIT_PREFIX = PREFIX + b"deposit/"  # <id 8 BE><depositor 20> -> amount (deleted when refunded or burned)
VOTE_PREFIX = PREFIX + b"vote/"  # <id 8 BE><voter 20> -> {"option" (1 yes, 2 abstain, 3 no, 4 no_with_veto), "parts": [[operator, tokens]]}
SNAPSHOT_PREFIX = PREFIX + b"snapshot/"  # <id 8 BE><operator 20> -> {"tokens", "overridden"}: the active set when voting started
COUNTS_PREFIX = PREFIX + b"counts/"  # <id 8 BE> -> Tally JSON: the running count while voting (the final one moves to the Proposal)
DEPOSIT_QUEUE_PREFIX = PREFIX + b"deposit_queue/"  # <deposit_end 8 BE><id 8 BE> -> id: proposals waiting for deposits
VOTING_QUEUE_PREFIX = PREFIX + b"voting_queue/"  # <voting_end 8 BE><id 8 BE> -> id: proposals being voted on


@dataclass(frozen=True)
class Tally:
    yes: int = 0
    abstain: int = 0
    no: int = 0
    no_with_veto: int = 0
    bonded: int = 0  # the active validators' tokens snapshotted when voting started

    @property
    def voted(self) -> int:
        return self.yes + self.abstain + self.no + self.no_with_veto


@dataclass(frozen=True)
class Proposal:
    id: int
    title: str
    summary: str
    proposer: str
    messages: list[str]  # base64 of each TxBody entry
    expedited: bool
    status: str
    submit_height: int
    deposit_end: int
    total_deposit: int = 0
    depositors: int = 0
    voting_start: int = 0
    voting_end: int = 0
    tally: dict | None = None  # the final Tally, once counted
    result_height: int = 0  # when it was decided
    failed_reason: str = ""  # why it was rejected, vetoed, dropped, or why its messages failed


def _id8(proposal_id: int) -> bytes:
    return proposal_id.to_bytes(8, "big")


def proposal_key(proposal_id: int) -> bytes:
    return PROPOSAL_PREFIX + _id8(proposal_id)


def get_params(state: Overlay) -> Params:
    return load_params(state, PARAMS_KEY, Params)


def get_proposal(state: Overlay, proposal_id: int) -> Proposal | None:
    raw = decode_json(state.get(proposal_key(proposal_id)))
    return Proposal(**raw) if raw else None


def _put_proposal(state: Overlay, proposal: Proposal) -> None:
    state.set(proposal_key(proposal.id), encode_json(asdict(proposal)))


def _deposit_key(proposal_id: int, depositor: str) -> bytes:
    return DEPOSIT_PREFIX + _id8(proposal_id) + crypto.address_raw(depositor)


def _vote_key(proposal_id: int, voter: str) -> bytes:
    return VOTE_PREFIX + _id8(proposal_id) + crypto.address_raw(voter)


def _snapshot_key(proposal_id: int, operator: str) -> bytes:
    return SNAPSHOT_PREFIX + _id8(proposal_id) + crypto.address_raw(operator)


def _counts_key(proposal_id: int) -> bytes:
    return COUNTS_PREFIX + _id8(proposal_id)


def _queue_key(prefix: bytes, end: int, proposal_id: int) -> bytes:
    return prefix + end.to_bytes(8, "big") + _id8(proposal_id)


def _addr(raw: bytes) -> str:
    return crypto.bech32_encode(crypto.ADDRESS_HRP, raw)


def deposits(state: Overlay, proposal_id: int) -> list[tuple[str, int]]:
    """(depositor, amount) of an open proposal, in address byte order."""
    prefix = DEPOSIT_PREFIX + _id8(proposal_id)
    return [(_addr(k[len(prefix) :]), decode_int(v)) for k, v in state.iter_prefix(prefix)]


def votes(state: Overlay, proposal_id: int, after: str = "") -> Iterator[tuple[str, dict]]:
    """(voter, vote record) of a proposal in address byte order, from the first voter after address `after`
    (read from there on, lazily: a page of them costs its own reads)."""
    prefix = VOTE_PREFIX + _id8(proposal_id)
    for key, raw in state.iter_prefix(prefix, prefix + crypto.address_raw(after) if after else b""):
        yield _addr(key[len(prefix) :]), decode_json(raw)


def _get_vote(state: Overlay, proposal_id: int, voter: str) -> dict | None:
    return decode_json(state.get(_vote_key(proposal_id, voter)))


def _get_snapshot(state: Overlay, proposal_id: int, operator: str) -> dict | None:
    return decode_json(state.get(_snapshot_key(proposal_id, operator)))


def snapshot(state: Overlay, proposal_id: int) -> list[tuple[str, dict]]:
    """(operator, {"tokens", "overridden"}) of a proposal being voted on: at most max_validators entries."""
    prefix = SNAPSHOT_PREFIX + _id8(proposal_id)
    return [(_addr(k[len(prefix) :]), decode_json(v)) for k, v in state.iter_prefix(prefix)]


def messages_of(proposal: Proposal) -> list[tx_pb2.TxBody]:
    return [tx_pb2.TxBody.FromString(base64.b64decode(m)) for m in proposal.messages]


def tally(state: Overlay, proposal_id: int) -> Tally:
    """The running count of a proposal being voted on (zero outside its voting period): one read, kept up to date by
    every vote (see vote())."""
    raw = decode_json(state.get(_counts_key(proposal_id)))
    return Tally(**raw) if raw else Tally()


def _put_tally(state: Overlay, proposal_id: int, counts: dict[int, int], bonded: int) -> None:
    result = Tally(yes=counts[YES], abstain=counts[ABSTAIN], no=counts[NO], no_with_veto=counts[NO_WITH_VETO], bonded=bonded)
    state.set(_counts_key(proposal_id), encode_json(asdict(result)))


def _own_weight(entry: dict) -> int:
    """What a snapshotted validator's vote casts: its snapshotted tokens less what its delegators voted themselves
    (their delegations predate the snapshot and values only fall, so the difference is never negative in practice)."""
    return max(0, entry["tokens"] - entry["overridden"])


def outcome(params: Params, result: Tally, expedited: bool) -> tuple[str, str, bool]:
    """(status, reason, burn) of a count, in x/gov's order: quorum, all abstain, veto, threshold."""
    if result.bonded == 0 or result.voted * BPS < params.quorum_bps * result.bonded:
        return REJECTED, f"quorum not met: {result.voted} of {result.bonded} bonded voted, need {params.quorum_bps} bps", params.burn_vote_quorum
    if result.abstain == result.voted:
        return REJECTED, "every vote abstained", False
    if result.no_with_veto * BPS > params.veto_threshold_bps * result.voted:
        return VETOED, f"vetoed: no_with_veto {result.no_with_veto} of {result.voted} is above {params.veto_threshold_bps} bps", params.burn_vote_veto
    threshold = params.expedited_threshold_bps if expedited else params.threshold_bps
    if result.yes * BPS > threshold * (result.voted - result.abstain):
        return PASSED, "", False
    return REJECTED, f"threshold not met: yes {result.yes} of {result.voted - result.abstain} non-abstain is not above {threshold} bps", False


# --- Events ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProposalSubmitted(EventType):
    """A proposal was submitted; `messages` names its messages, comma-separated; deposits are taken until deposit_end."""

    type = "proposal_submitted"
    proposal: int
    proposer: str
    messages: str
    expedited: bool
    deposit_end: int


@dataclass(frozen=True)
class DepositAdded(EventType):
    """Tokens were added to a proposal's deposit; `total` is its deposit now."""

    type = "deposit_added"
    proposal: int
    depositor: str
    amount: int
    total: int


@dataclass(frozen=True)
class VotingStarted(EventType):
    """A proposal reached its min deposit: votes are taken until voting_end (its end block counts them)."""

    type = "voting_started"
    proposal: int
    voting_end: int


@dataclass(frozen=True)
class Voted(EventType):
    """A staker voted (a later vote replaces an earlier one); option: yes, abstain, no or no_with_veto."""

    type = "voted"
    proposal: int
    voter: str
    option: str
    stake: int  # the snapshotted stake it casts now (a validator's shrinks as its delegators vote themselves)


@dataclass(frozen=True)
class ProposalPassed(EventType):
    """A proposal passed and its messages were executed by the gov module account."""

    type = "proposal_passed"
    proposal: int
    yes: int
    abstain: int
    no: int
    no_with_veto: int


@dataclass(frozen=True)
class ProposalFailed(EventType):
    """A proposal passed but one of its messages failed: none of them took effect; `reason` says which and why."""

    type = "proposal_failed"
    proposal: int
    reason: str


@dataclass(frozen=True)
class ProposalRejected(EventType):
    """A proposal was rejected: quorum or threshold not met, or every vote abstained."""

    type = "proposal_rejected"
    proposal: int
    reason: str
    yes: int
    abstain: int
    no: int
    no_with_veto: int


@dataclass(frozen=True)
class ProposalVetoed(EventType):
    """no_with_veto passed veto_threshold_bps: the proposal is rejected and its deposits burned (burn_vote_veto)."""

    type = "proposal_vetoed"
    proposal: int
    yes: int
    abstain: int
    no: int
    no_with_veto: int


@dataclass(frozen=True)
class ProposalDropped(EventType):
    """A proposal's deposit period ended short of the min deposit."""

    type = "proposal_dropped"
    proposal: int
    total_deposit: int


@dataclass(frozen=True)
class ExpeditedConverted(EventType):
    """An expedited proposal did not pass: it is voted on again as a regular one until voting_end."""

    type = "expedited_converted"
    proposal: int
    voting_end: int


@dataclass(frozen=True)
class DepositsRefunded(EventType):
    """A decided proposal's deposits went back to their depositors."""

    type = "deposits_refunded"
    proposal: int
    amount: int


@dataclass(frozen=True)
class DepositsBurned(EventType):
    """A proposal's deposits were burned (veto, deposit period expired, or quorum missed with burn_vote_quorum)."""

    type = "deposits_burned"
    proposal: int
    amount: int


@dataclass(frozen=True)
class ParamsUpdated(EventType):
    """A module's whole parameter set was replaced by a passed proposal (`params`: canonical JSON)."""

    type = "params_updated"
    module: str
    params: str


# --- Errors ---------------------------------------------------------------------


class GovError(ModuleError):
    codespace = "gov"


class UnknownProposal(GovError):
    """No proposal with that id."""

    code = 1


class InvalidProposal(GovError):
    """A bad title, summary or message list, or a message that fails when run as the gov account at submission."""

    code = 2


class InvalidDeposit(GovError):
    """A deposit of 0, an initial deposit below min_initial_deposit_bps, a new depositor's below 1/MAX_DEPOSITORS of the min deposit, or one depositor too many."""

    code = 3


class WrongPeriod(GovError):
    """A deposit outside the deposit and voting periods, or a vote outside the voting period."""

    code = 4


class InvalidVote(GovError):
    """The option is not 1 (yes), 2 (abstain), 3 (no) or 4 (no_with_veto), or the voter has over MAX_VOTE_DELEGATIONS delegations."""

    code = 5


class NoStake(GovError):
    """Only stake in the proposal's snapshot votes: a validator active when voting started, or a delegation to one made before."""

    code = 6


class Unauthorized(GovError):
    """Only the gov module account sends MsgUpdateParams (as a passed proposal's message)."""

    code = 7


class InvalidParams(GovError):
    """An unknown module, a parameter set that is not whole, a wrong type, or one its module refuses (validate(), check_params_change())."""

    code = 8


class StaleParams(GovError):
    """MsgUpdateParams' params_sha256 is not the digest of the module's params now: they changed since it was drafted."""

    code = 9


# --- Calls ------------------------------------------------------------------------

# gov's own messages cannot be a proposal's messages: the gov account has no stake or funds, and no proposal nests.
NOT_IN_PROPOSALS = ("submit_proposal", "deposit", "vote")


def _check_text(title: str, summary: str) -> None:
    if not 1 <= len(title) <= MAX_TITLE or not all(" " <= c <= "~" for c in title):
        raise InvalidProposal(f"the title must be 1 to {MAX_TITLE} printable ASCII characters")
    if not 1 <= len(summary) <= MAX_SUMMARY or not all(" " <= c <= "~" or c == "\n" for c in summary):
        raise InvalidProposal(f"the summary must be 1 to {MAX_SUMMARY} printable ASCII characters (newlines allowed)")


def _check_messages(ctx: Context, bodies: list[tx_pb2.TxBody]) -> None:
    """Each entry carries one message and nothing else, and the whole list succeeds as the gov account right now."""
    from abci_app import runtime  # the runtime composes the modules, gov among them: import when called

    if not 1 <= len(bodies) <= MAX_MESSAGES:
        raise InvalidProposal(f"a proposal carries 1 to {MAX_MESSAGES} messages, got {len(bodies)}")
    for index, body in enumerate(bodies):
        name = body.WhichOneof("msg")
        if body.chain_id or body.nonce or body.fee or body.memo:
            raise InvalidProposal(f"message {index}: leave chain_id, nonce, fee and memo empty (the proposal's tx carries them)")
        if name is None or name not in runtime.CALLS:
            raise InvalidProposal(f"message {index}: no known message")
        if name in NOT_IN_PROPOSALS:
            raise InvalidProposal(f"message {index}: {name} cannot be a proposal's message")
    modules = [body.update_params.module for body in bodies if body.WhichOneof("msg") == "update_params"]
    for index, module in enumerate(modules):
        if module in modules[:index]:
            # Chained sets would step around each module's per-change limits (a fee rises 10x per change, not 10^k).
            raise InvalidProposal(f"a proposal changes {module}'s params at most once: merge the changes into one set")
    reason = runtime.execute_as(ctx.child(), GOV, bodies)  # a scratch copy: nothing is kept
    if reason:
        raise InvalidProposal(f"refused at submission: {reason}")


def _start_voting(ctx: Context, params: Params, proposal: Proposal) -> Proposal:
    """Move a proposal whose deposits reached the minimum from the deposit queue to the voting queue, snapshot the
    active validators' tokens (at most max_validators entries) and keep that stake slashable until voting_end."""
    ctx.state.delete(_queue_key(DEPOSIT_QUEUE_PREFIX, proposal.deposit_end, proposal.id))
    window = params.expedited_voting_blocks if proposal.expedited else params.voting_blocks
    proposal = replace(proposal, status=VOTING_PERIOD, voting_start=ctx.height, voting_end=ctx.height + window)
    active = [v for v, power in staking.active_set(ctx.state) if power > 0]
    for validator in active:
        ctx.state.set(_snapshot_key(proposal.id, validator.operator), encode_json({"tokens": validator.tokens, "overridden": 0}))
    _put_tally(ctx.state, proposal.id, {option: 0 for option in OPTIONS}, sum(v.tokens for v in active))
    # Undelegated stake completes after voting_end: it cannot vote, leave, come back and vote again.
    staking.hold_stake(ctx, [v.operator for v in active], until_height=proposal.voting_end)
    ctx.state.set(_queue_key(VOTING_QUEUE_PREFIX, proposal.voting_end, proposal.id), encode_json(proposal.id))
    ctx.emit(VotingStarted(proposal=proposal.id, voting_end=proposal.voting_end))
    return proposal


def _min_deposit(params: Params, proposal: Proposal) -> int:
    return params.expedited_min_deposit if proposal.expedited else params.min_deposit


def min_new_deposit(params: Params, expedited: bool) -> int:
    """The least a new depositor adds: 1/MAX_DEPOSITORS of the min deposit (rounded up), so depositors who fill
    every slot have reached the minimum between them; dust deposits cannot lock a proposal's supporters out."""
    return -(-(params.expedited_min_deposit if expedited else params.min_deposit) // MAX_DEPOSITORS)


def _check_new_deposit(params: Params, expedited: bool, amount: int) -> None:
    least = min_new_deposit(params, expedited)
    if amount < least:
        raise InvalidDeposit(f"a new depositor adds at least {least}{bank.DENOM} (1/{MAX_DEPOSITORS} of the min deposit), got {amount}{bank.DENOM}")


def _add_deposit(ctx: Context, params: Params, proposal: Proposal, depositor: str, amount: int) -> Proposal:
    """Move `amount` from depositor to the deposits account and record it; start voting at the minimum."""
    bank.transfer(ctx, depositor, DEPOSITS, amount)
    key = _deposit_key(proposal.id, depositor)
    previous = ctx.state.get(key)
    ctx.state.set(key, encode_int(decode_int(previous) + amount))
    proposal = replace(proposal, total_deposit=proposal.total_deposit + amount, depositors=proposal.depositors + (previous is None))
    ctx.emit(DepositAdded(proposal=proposal.id, depositor=depositor, amount=amount, total=proposal.total_deposit))
    if proposal.status == DEPOSIT_PERIOD and proposal.total_deposit >= _min_deposit(params, proposal):
        proposal = _start_voting(ctx, params, proposal)
    return proposal


def submit_proposal(ctx: Context, signer: str, msg: tx_pb2.MsgSubmitProposal) -> None:
    """MsgSubmitProposal: propose messages for the gov account to execute, with an initial deposit."""
    params = get_params(ctx.state)
    _check_text(msg.title, msg.summary)
    bodies = list(msg.messages)
    minimum = params.expedited_min_deposit if msg.expedited else params.min_deposit
    if msg.initial_deposit * BPS < minimum * params.min_initial_deposit_bps:
        need = -(-minimum * params.min_initial_deposit_bps // BPS)
        raise InvalidDeposit(f"initial deposit {msg.initial_deposit}{bank.DENOM} is below {need}{bank.DENOM} "
                             f"({params.min_initial_deposit_bps} bps of the {minimum}{bank.DENOM} min deposit)")
    if msg.initial_deposit:
        _check_new_deposit(params, msg.expedited, msg.initial_deposit)  # the proposer takes a depositor slot too
    if bank.balance(ctx.state, signer) < msg.initial_deposit:
        raise bank.InsufficientBalance(f"insufficient balance: {signer} has {bank.balance(ctx.state, signer)}{bank.DENOM}, "
                                       f"the initial deposit is {msg.initial_deposit}{bank.DENOM}")
    _check_messages(ctx, bodies)
    proposal_id = decode_int(ctx.state.get(NEXT_ID_KEY)) or 1
    proposal = Proposal(
        id=proposal_id, title=msg.title, summary=msg.summary, proposer=signer,
        messages=[base64.b64encode(b.SerializeToString(deterministic=True)).decode() for b in bodies],
        expedited=msg.expedited, status=DEPOSIT_PERIOD, submit_height=ctx.height, deposit_end=ctx.height + params.deposit_blocks,
    )
    ctx.state.set(NEXT_ID_KEY, encode_int(proposal_id + 1))
    ctx.state.set(_queue_key(DEPOSIT_QUEUE_PREFIX, proposal.deposit_end, proposal_id), encode_json(proposal_id))
    ctx.emit(ProposalSubmitted(proposal=proposal_id, proposer=signer, messages=",".join(b.WhichOneof("msg") for b in bodies),
                               expedited=msg.expedited, deposit_end=proposal.deposit_end))
    if msg.initial_deposit:
        proposal = _add_deposit(ctx, params, proposal, signer, msg.initial_deposit)
    _put_proposal(ctx.state, proposal)


def deposit(ctx: Context, signer: str, msg: tx_pb2.MsgDeposit) -> None:
    """MsgDeposit: add to an open proposal's deposit."""
    proposal = get_proposal(ctx.state, msg.proposal)
    if proposal is None:
        raise UnknownProposal(f"no proposal {msg.proposal} (see `gradchain query gov proposals`)")
    if proposal.status not in (DEPOSIT_PERIOD, VOTING_PERIOD):
        raise WrongPeriod(f"proposal {msg.proposal} is {proposal.status}: deposits are taken in the deposit and voting periods")
    if msg.amount == 0:
        raise InvalidDeposit("a deposit is a positive amount")
    new_depositor = ctx.state.get(_deposit_key(proposal.id, signer)) is None
    if new_depositor and proposal.depositors >= MAX_DEPOSITORS:
        raise InvalidDeposit(f"proposal {msg.proposal} has {MAX_DEPOSITORS} depositors already: only they may add to it")
    params = get_params(ctx.state)
    if new_depositor:
        _check_new_deposit(params, proposal.expedited, msg.amount)
    _put_proposal(ctx.state, _add_deposit(ctx, params, proposal, signer, msg.amount))


def vote(ctx: Context, signer: str, msg: tx_pb2.MsgVote) -> None:
    """MsgVote: a staker's vote on a proposal in its voting period; a later vote replaces it.

    The vote's weight is fixed now and added to the running counts: a validator in the snapshot casts its snapshotted
    tokens less what its delegators voted themselves; anyone casts its delegations to snapshotted validators made
    before voting started (worth what they are now: a slash or undelegation since lowers them; a delegation that
    grew since counts through its validator only). Those delegations leave their validator's weight, whenever the
    validator votes. Work: O(MAX_VOTE_DELEGATIONS) reads and writes, paid by the voter.
    """
    proposal = get_proposal(ctx.state, msg.proposal)
    if proposal is None:
        raise UnknownProposal(f"no proposal {msg.proposal} (see `gradchain query gov proposals`)")
    if proposal.status != VOTING_PERIOD:
        raise WrongPeriod(f"proposal {msg.proposal} is {proposal.status}: votes are taken in its voting period only")
    if msg.option not in OPTIONS:
        raise InvalidVote(f"invalid option {msg.option}: 1 yes, 2 abstain, 3 no, 4 no_with_veto")
    delegations = staking.voting_delegations(ctx.state, signer, MAX_VOTE_DELEGATIONS)
    if len(delegations) > MAX_VOTE_DELEGATIONS:
        raise InvalidVote(f"{signer} has more than {MAX_VOTE_DELEGATIONS} delegations: a vote reads at most that many "
                          f"(undelegate the small ones, or let the validators' votes count them)")
    own = _get_snapshot(ctx.state, proposal.id, signer)
    before = _get_vote(ctx.state, proposal.id, signer)
    mine = {operator: tokens for operator, tokens in before["parts"]} if before is not None else {}
    parts = []
    for operator, tokens, since in delegations:
        entry = _get_snapshot(ctx.state, proposal.id, operator) if operator != signer and since < proposal.voting_start else None
        if entry is not None:
            # Later delegations' rounding can lift a share's value a little: never cast more than the snapshot holds.
            counted = min(tokens, entry["tokens"] - entry["overridden"] + mine.get(operator, 0))
            if counted > 0:
                parts.append([operator, counted])
    if own is None and not parts:
        raise NoStake(f"{signer} has no stake in proposal {proposal.id}'s snapshot: only validators active at height "
                      f"{proposal.voting_start} and delegations to them made before it vote")
    # Checks done: write. Take the old vote's weight back, then add the new one.
    result = tally(ctx.state, proposal.id)
    counts = {YES: result.yes, ABSTAIN: result.abstain, NO: result.no, NO_WITH_VETO: result.no_with_veto}
    overrides: dict[str, int] = {}
    if before is not None:
        for operator, tokens in before["parts"]:
            counts[before["option"]] -= tokens
            overrides[operator] = overrides.get(operator, 0) - tokens
        if own is not None:
            counts[before["option"]] -= _own_weight(own)
    for operator, tokens in parts:
        counts[msg.option] += tokens
        overrides[operator] = overrides.get(operator, 0) + tokens
    for operator, change in overrides.items():  # the voter's validators: their own votes cast less (or more)
        _override(ctx.state, proposal.id, counts, operator, change)
    stake = sum(tokens for _, tokens in parts)
    if own is not None:
        counts[msg.option] += _own_weight(own)
        stake += _own_weight(own)
    ctx.state.set(_vote_key(proposal.id, signer), encode_json({"option": msg.option, "parts": parts}))
    _put_tally(ctx.state, proposal.id, counts, result.bonded)
    ctx.emit(Voted(proposal=proposal.id, voter=signer, option=OPTIONS[msg.option], stake=stake))


def _override(state: Overlay, proposal_id: int, counts: dict[int, int], operator: str, change: int) -> None:
    """`change` more (or less) of `operator`'s snapshotted stake is voted by its delegators: what the validator's own
    vote casts moves by the difference, if it voted. O(1)."""
    entry = _get_snapshot(state, proposal_id, operator)
    updated = entry | {"overridden": entry["overridden"] + change}
    validator_vote = _get_vote(state, proposal_id, operator)
    if validator_vote is not None:
        counts[validator_vote["option"]] += _own_weight(updated) - _own_weight(entry)
    state.set(_snapshot_key(proposal_id, operator), encode_json(updated))


def parse_params(module: str, params_json: str):
    """The Params of `module` that params_json describes, checked whole; InvalidParams says what is wrong.
    Used at submission (through the dry run) and at execution alike."""
    from abci_app import runtime  # the runtime composes the modules, gov among them: import when called

    target = runtime.module_params(module)
    if target is None:
        raise InvalidParams(f"module {module[:40]!r} has no params (modules with params: "
                            f"{', '.join(n for n in runtime.MODULES if runtime.module_params(n))})")
    try:
        values = loads_bounded(params_json, MAX_PARAMS_JSON, 2)
    except ValueError as exc:
        raise InvalidParams(f"{module} params are not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise InvalidParams(f"{module} params must be a JSON object of every field")
    expected = {f.name: f for f in fields(target.params_type)}
    missing, unknown = sorted(expected.keys() - values.keys()), sorted(values.keys() - expected.keys())
    if missing or unknown:
        raise InvalidParams(f"{module} params must carry the whole set: missing {', '.join(missing) or 'none'}; "
                            f"unknown {', '.join(k[:40] for k in unknown[:8]) or 'none'}")
    for name, f in expected.items():
        if not _same_kind(f.default, values[name]):
            raise InvalidParams(f"{module}.params.{name} must be {type(f.default).__name__}, got {values[name]!r:.40}")
    params = target.params_type(**values)
    try:
        params.validate()
    except (ValueError, TypeError) as exc:
        raise InvalidParams(f"invalid {module} params: {exc}") from None
    return target, params


def _same_kind(default, value) -> bool:
    """JSON value of the default's type: bool, a bounded int (never a bool or float), or str."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool) and -MAX_PARAM_INT <= value <= MAX_PARAM_INT
    return isinstance(value, type(default))


def params_digest(params) -> str:
    """Hex sha256 of a params set's canonical JSON: what MsgUpdateParams.params_sha256 names."""
    return hashlib.sha256(encode_json(asdict(params))).hexdigest()


def check_voting_within_unbonding(gov_params: Params, staking_params) -> None:
    """A vote lasts no longer than an unbonding: the hold that keeps voting stake slashable until voting_end
    (staking.hold_stake) then never delays an exit past unbonding_blocks, whoever opens a vote (ValueError says why)."""
    if gov_params.voting_blocks > staking_params.unbonding_blocks:  # validate() keeps the expedited window shorter
        raise ValueError(f"gov.params.voting_blocks ({gov_params.voting_blocks}) must be at most staking.params.unbonding_blocks "
                         f"({staking_params.unbonding_blocks}): a vote would hold every undelegation past its unbonding period")


def check_change(state: Overlay, module: str, current, params) -> None:
    """What a valid params set of `module` may not become from `current` (InvalidParams says why): the module's own
    rules, and gov's that span modules or need the state."""
    from abci_app import runtime  # the runtime composes the modules, gov among them: import when called

    target = runtime.module_params(module)
    if target.check_change is not None:
        try:
            target.check_change(current, params, state)  # staking reads the validators for a min_self_bond raise
        except ValueError as exc:
            raise InvalidParams(f"{module} params cannot change so: {exc}") from None
    if module == "gov" and params.expedited_min_deposit * BPS > MAX_DEPOSIT_SUPPLY_BPS * bank.supply(state):
        raise InvalidParams(f"gov.params.expedited_min_deposit {params.expedited_min_deposit}{bank.DENOM} is above "
                            f"{MAX_DEPOSIT_SUPPLY_BPS} bps of the supply ({bank.supply(state)}{bank.DENOM}): no proposal could gather it")
    if module == "gov":
        for name, floor in MIN_WINDOW_BLOCKS.items():
            if getattr(params, name) < min(floor, getattr(current, name)):
                raise InvalidParams(f"gov.params.{name} may not shrink below {floor} blocks: gov could not vote, or fund, the change back in time")
    if module in ("gov", "staking"):
        gov_params = params if module == "gov" else get_params(state)
        staking_params = params if module == "staking" else staking.get_params(state)
        try:
            check_voting_within_unbonding(gov_params, staking_params)
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None


def update_params(ctx: Context, signer: str, msg: tx_pb2.MsgUpdateParams) -> None:
    """MsgUpdateParams: replace a module's whole parameter set (the gov account only, as a proposal's message), if
    the module's params are still those it was drafted against (params_sha256): a whole set drafted before another
    change passed would silently undo that change."""
    if signer != GOV:
        raise Unauthorized(f"{signer} may not update params: only the gov module account {GOV} may, through a proposal")
    target, params = parse_params(msg.module, msg.params_json)
    current = load_params(ctx.state, target.key, target.params_type)
    if msg.params_sha256 != params_digest(current):
        raise StaleParams(f"{msg.module} params changed since this set was drafted (params_sha256 {msg.params_sha256[:64]!r}, "
                          f"now {params_digest(current)}): draft it again against the current params")
    check_change(ctx.state, msg.module, current, params)
    store_params(ctx.state, target.key, params)
    ctx.emit(ParamsUpdated(module=msg.module, params=encode_json(asdict(params)).decode()))


CALLS = {"submit_proposal": submit_proposal, "deposit": deposit, "vote": vote, "update_params": update_params}

# --- Genesis ----------------------------------------------------------------------


def genesis(ctx: Context, config: dict) -> None:
    """gov genesis: {"params": {...}}."""
    unknown = sorted(set(config) - {"params"})
    if unknown:
        raise ValueError(f"gov genesis has unknown keys: {', '.join(unknown)}")
    params = Params(**config.get("params", {}))
    params.validate()
    check_voting_within_unbonding(params, staking.get_params(ctx.state))  # staking's genesis ran first (runtime.MODULES)
    store_params(ctx.state, PARAMS_KEY, params)


# --- Hooks ------------------------------------------------------------------------


def end_block(ctx: Context) -> None:
    """Drop the proposals whose deposit period ends here short of the minimum; count the votes of those whose
    voting period ends here, then refund or burn their deposits and execute the passed ones."""
    params = get_params(ctx.state)
    for key, proposal_id in due_entries(ctx.state, DEPOSIT_QUEUE_PREFIX, ctx.height):
        ctx.state.delete(key)
        proposal = get_proposal(ctx.state, proposal_id)
        if proposal is not None and proposal.status == DEPOSIT_PERIOD:
            _settle_deposits(ctx, proposal, burn=params.burn_proposal_deposit_prevote)
            reason = f"deposit period ended with {proposal.total_deposit} of {_min_deposit(params, proposal)}{bank.DENOM}"
            _put_proposal(ctx.state, replace(proposal, status=DROPPED, result_height=ctx.height, failed_reason=reason))
            ctx.emit(ProposalDropped(proposal=proposal.id, total_deposit=proposal.total_deposit))
    for key, proposal_id in due_entries(ctx.state, VOTING_QUEUE_PREFIX, ctx.height):
        ctx.state.delete(key)
        proposal = get_proposal(ctx.state, proposal_id)
        if proposal is not None and proposal.status == VOTING_PERIOD:
            _finish_vote(ctx, params, proposal)


def _finish_vote(ctx: Context, params: Params, proposal: Proposal) -> None:
    """Decide a proposal from its running counts; O(max_validators): the snapshot is held longer or deleted."""
    result = tally(ctx.state, proposal.id)
    status, reason, burn = outcome(params, result, proposal.expedited)
    counts = {"yes": result.yes, "abstain": result.abstain, "no": result.no, "no_with_veto": result.no_with_veto}
    operators = [operator for operator, _ in snapshot(ctx.state, proposal.id)]
    if status != PASSED and not burn and proposal.expedited:
        # As x/gov: an expedited proposal that does not pass gets the rest of a regular window.
        end = proposal.voting_start + params.voting_blocks
        if end > ctx.height:
            ctx.state.set(_queue_key(VOTING_QUEUE_PREFIX, end, proposal.id), encode_json(proposal.id))
            _put_proposal(ctx.state, replace(proposal, expedited=False, voting_end=end))
            staking.hold_stake(ctx, operators, until_height=end)  # the votes cast so far keep counting
            ctx.emit(ExpeditedConverted(proposal=proposal.id, voting_end=end))
            return
    # The snapshot's hold ends here by itself (until voting_end); its records go. Vote records stay for queries.
    for operator in operators:
        ctx.state.delete(_snapshot_key(proposal.id, operator))
    ctx.state.delete(_counts_key(proposal.id))
    _settle_deposits(ctx, proposal, burn=burn)
    decided = replace(proposal, tally=asdict(result), result_height=ctx.height, failed_reason=reason)
    if status == PASSED:
        failure = _execute(ctx, proposal)
        decided = replace(decided, status=FAILED if failure else PASSED, failed_reason=failure)
        if failure:
            ctx.emit(ProposalFailed(proposal=proposal.id, reason=failure))
        else:
            ctx.emit(ProposalPassed(proposal=proposal.id, **counts))
    elif status == VETOED:
        decided = replace(decided, status=VETOED)
        ctx.emit(ProposalVetoed(proposal=proposal.id, **counts))
    else:
        decided = replace(decided, status=REJECTED)
        ctx.emit(ProposalRejected(proposal=proposal.id, reason=reason, **counts))
    _put_proposal(ctx.state, decided)


def _execute(ctx: Context, proposal: Proposal) -> str:
    """Run the proposal's messages as the gov account, all or none: "" or why they failed. Never raises."""
    from abci_app import runtime  # the runtime composes the modules, gov among them: import when called

    try:
        bodies = messages_of(proposal)
    except Exception as exc:  # stored by submit_proposal as valid TxBody bytes: unreachable unless state is damaged
        return f"messages do not decode: {type(exc).__name__}"
    return runtime.execute_as(ctx, GOV, bodies)


def _settle_deposits(ctx: Context, proposal: Proposal, burn: bool) -> None:
    """Refund (or burn) a proposal's deposits and delete their records: at most MAX_DEPOSITORS of them."""
    entries = deposits(ctx.state, proposal.id)
    total = sum(amount for _, amount in entries)
    for depositor, amount in entries:
        ctx.state.delete(_deposit_key(proposal.id, depositor))
        if not burn:
            bank.transfer(ctx, DEPOSITS, depositor, amount)
    if total and burn:
        bank.burn(ctx, DEPOSITS, total)
        ctx.emit(DepositsBurned(proposal=proposal.id, amount=total))
    elif total:
        ctx.emit(DepositsRefunded(proposal=proposal.id, amount=total))


# --- Queries ----------------------------------------------------------------------


def query_proposal(data: bytes) -> bytes:
    """/gov/proposal ID -> Proposal JSON (messages as base64 TxBody bytes)."""
    return proposal_key(parse_uint64(data))


def query_params(data: bytes) -> bytes:
    """/gov/params -> Params JSON."""
    return PARAMS_KEY


QUERIES = {"proposal": query_proposal, "params": query_params}

STATUSES = (DEPOSIT_PERIOD, VOTING_PERIOD, PASSED, REJECTED, VETOED, FAILED, DROPPED)


def view_proposals(state: Overlay, data: bytes) -> bytes:
    """/gov/proposals [STATUS][/AFTER] -> a page (abci_app.paging) of proposals, newest first, from the first
    below id AFTER, of that status if given: each without its summary and messages (their count instead), so a
    page stays small; /gov/proposal N has the rest. A page reads at most paging.MAX_SCANNED_BYTES of proposals."""
    status, after = paging.split(data)
    if status and status not in STATUSES:
        raise ValueError(f"unknown status {status[:40]!r}")
    next_id = decode_int(state.get(NEXT_ID_KEY))
    below = min(parse_uint64(after), next_id) if after else next_id

    def records():
        for proposal_id in range(below - 1, 0, -1):
            raw = state.get(proposal_key(proposal_id))
            proposal = Proposal(**decode_json(raw)) if raw else None  # never deleted: None only for a damaged state
            listed = proposal is not None and (not status or proposal.status == status)
            yield str(proposal_id), len(raw or b""), _listed(proposal) if listed else None
    return paging.page(records())


def _listed(proposal: Proposal) -> dict:
    entry = asdict(proposal) | {"messages": len(proposal.messages)}
    del entry["summary"]
    return entry


def _existing(state: Overlay, data: bytes) -> Proposal:
    proposal_id = parse_uint64(data)
    proposal = get_proposal(state, proposal_id)
    if proposal is None:
        raise ValueError(f"no proposal {proposal_id}")
    return proposal


def view_votes(state: Overlay, data: bytes) -> bytes:
    """/gov/votes ID[/AFTER] -> a page (abci_app.paging) of [{voter, option, stake}] of a proposal in address order,
    from the first voter after address AFTER. `stake`: what its delegations cast (a validator's own snapshotted
    weight is not in it)."""
    proposal_text, after = paging.split(data)
    proposal = _existing(state, proposal_text.encode())
    if after:
        crypto.parse_address(after)  # ValueError on garbage: Query answers it as a bad request
    return paging.page((voter, 0, {"voter": voter, "option": OPTIONS.get(record["option"], str(record["option"])),
                                   "stake": sum(tokens for _, tokens in record["parts"])})
                       for voter, record in votes(state, proposal.id, after))


def view_tally(state: Overlay, data: bytes) -> bytes:
    """/gov/tally ID -> the final count of a decided proposal, or the running count of one being voted on (one read)."""
    proposal = _existing(state, data)
    if proposal.tally is not None:
        return encode_json(proposal.tally | {"final": True})
    return encode_json(asdict(tally(state, proposal.id)) | {"final": False})


VIEWS = {"proposals": view_proposals, "votes": view_votes, "tally": view_tally}
