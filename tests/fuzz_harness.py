"""Stateful fuzzing of the Application, the way CometBFT drives it: seeded random blocks, checked after every one.

A `Fuzzer` feeds two replicas of the app (separate homes) the same
InitChain/FinalizeBlock/Commit requests: random txs of every message type from
a few accounts and consensus keys, honest and byzantine (bad amounts, foreign
keys, nonce gaps, replays, bad signatures, junk bytes, unknown fields, invalid
UTF-8, lone surrogates, deep JSON), proposers, missed signatures and
double-sign evidence. Training runs with tiny windows, so rounds open, take
submissions (with trajectories, some with faked steps), sealed verdicts and
their reveals (honest, lazy, guessing, copying, falsely claiming), fraud
judgements, and sealed merge votes and their reveals (honest, garbage,
copied, re-salted, edited). After every block it checks:

- no exception escapes FinalizeBlock/Commit, nor CheckTx, PrepareProposal,
  ProcessProposal or Query on the same txs and random queries;
- both replicas return byte-identical FinalizeBlock responses (app hash,
  results, events, validator updates);
- the validator updates are ones CometBFT accepts (32-byte keys, one update
  per pubkey, no removal of a non-member, never an empty set) and the set
  CometBFT holds, replayed from every update, equals staking's active set by
  pubkey, with no jailed or zero-stake member;
- supply = sum of balances, and it moved by exactly what the block minted
  less what it burned; each module pool = what its module says it holds (the
  check-fee pool: the fees of the round's undecided submissions); trainer
  locks equal the undecided submissions' bonds and never exceed a bond;
- governance: the deposits account holds exactly the open proposals'
  deposits, each open proposal's total matches its deposit records and a
  decided one keeps none; a voting proposal's running counts equal a recount
  from its vote records and snapshot (a decided one keeps neither); a module's params change only in a block where a
  passed proposal's MsgUpdateParams says so, and a MsgUpdateParams sent
  directly never succeeds;
- the round's merge votes: one commitment per snapshotted validator at
  most, counted in the round; every revealed vote has its voter's
  commitment; nothing is revealed while the commit window is open;
- a replica closed and reopened from disk reports the committed height and
  app hash (Info) and continues in step, also when it crashed between
  FinalizeBlock and Commit.

Everything random comes from `random.Random(seed)` and the replica's own
state, so `bench/soak.py --seed S --blocks N` replays a failure exactly.
Importable from tests/ and bench/ (it needs no pytest).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import traceback
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from abci_app import crypto, runtime
from abci_app import tx as txcodec
from abci_app.app import Application
from abci_app.context import load_params
from abci_app.modules import audit, auth, bank, gov, registry, staking, training
from abci_app.pb.tendermint.abci import types_pb2 as abci

CHAIN_ID = "fuzz-chain"
GENESIS_TIME = 1_700_000_000
U64 = 2**64 - 1
MAX_TOTAL_VOTING_POWER = (2**63 - 1) // 8  # CometBFT's types.MaxTotalVotingPower


def account_key(i: int) -> crypto.PrivateKey:
    return crypto.PrivateKey(hashlib.sha256(b"fuzz account %d" % i).digest())


def consensus_key(i: int) -> crypto.PrivateKey:
    return crypto.PrivateKey(hashlib.sha256(b"fuzz consensus %d" % i).digest())


ACCOUNTS = [account_key(i) for i in range(8)]
CONSENSUS = [consensus_key(i) for i in range(6)]
AUTHORITY = ACCOUNTS[7]  # the registry authority: may register versions by tx
GENESIS_VALIDATORS = 3  # ACCOUNTS[i] with CONSENSUS[i]

STAKING_PARAMS = {
    "max_validators": 4, "min_self_bond": 100, "power_unit": 100, "unbonding_blocks": 4,
    "jail_blocks": 6, "double_sign_slash_bps": 500, "double_sign_jail_blocks": 20, "downtime_window": 6,
    "downtime_max_missed": 3, "downtime_slash_bps": 100, "block_reward": 7,
}
TRAINING_PARAMS = {
    "enabled": True, "submission_blocks": 3, "verification_blocks": 3, "reveal_blocks": 3, "dispute_blocks": 3, "merge_blocks": 3,
    "steps": 4, "audit_steps": 2, "reward": 50, "slash_bps": 2_000, "attester_share_bps": 5_000, "verifier_penalty_bps": 100,
    "check_fee": 20, "verifier_reward_bps": 1_000, "unrevealed_penalty_bps": 100, "fraud_proof_slash_bps": 500, "false_claim_penalty_bps": 100,
    "min_trainer_bond": 100, "max_submissions": 3, "eval_prompts": 2, "max_state_bytes": 1_000,
}

# Governance with windows of a few blocks, so proposals are submitted, voted on and decided within a run.
GOV_PARAMS = {"min_deposit": 100, "expedited_min_deposit": 200, "deposit_blocks": 3, "voting_blocks": 4, "expedited_voting_blocks": 2}


def fake_sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


AUDIT_MESSAGES = {training.COMMIT: "commit_verdicts", training.REVEAL: "reveal_verdicts", training.DISPUTE: "judge_claims"}  # by phase
MERGE_MESSAGES = {training.MERGE: "commit_merge", training.MERGE_REVEAL: "attest_merge"}
PHASE_MESSAGES = AUDIT_MESSAGES | MERGE_MESSAGES


def grad_proof(delta_sha256: str, step: int) -> bytes:
    """The gradient proof an honest recomputation of `step` gives (stands in for torch): derived from the delta's digest."""
    return hashlib.sha256(b"fuzz grad" + delta_sha256.encode() + step.to_bytes(4, "big")).digest()


def fake_cid(tag: str) -> str:
    """A well-formed CIDv1 (base32, 59 characters): the chain checks its form, never its bytes."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    digest = hashlib.sha256(tag.encode()).digest() * 2
    return "bafkrei" + "".join(alphabet[b % 32] for b in digest[:52])


# Per seed, some params take extreme values: a zero fee, a 100% slash, a one-validator set, a quorum of one vote...
EXTREME_PARAMS = {
    "bank": {"min_fee": [1, 2]},  # bank.Params refuses a zero fee (free txs)
    "staking": {"max_validators": [1, 2, 4], "power_unit": [1, 100], "unbonding_blocks": [0, 1, 4], "jail_blocks": [0, 3],
                "double_sign_slash_bps": [0, 500, 10_000], "downtime_slash_bps": [0, 100, 1_000], "block_reward": [0, 7, 10**6]},
    "training": {"verifier_penalty_bps": [0, 100, 10_000], "slash_bps": [0, 2_000, 10_000], "attester_share_bps": [0, 5_000, 10_000],
                 "quorum_bps": [1, 6_667, 10_000], "reward": [0, 50], "max_submissions": [1, 3], "check_fee": [0, 1, 20],
                 "committee_size": [0, 1, 2], "audit_steps": [1, 4], "unrevealed_penalty_bps": [0, 10_000], "fraud_proof_slash_bps": [0, 10_000],
                 "false_claim_penalty_bps": [0, 10_000], "verifier_reward_bps": [0, 10_000]},
}


def random_params(r: random.Random) -> dict[str, dict]:
    """Module -> the params that differ from the defaults above, for one seed."""
    return {module: {name: r.choice(values) for name, values in choices.items() if r.random() < 0.4} for module, choices in EXTREME_PARAMS.items()}


def genesis_app_state(params: dict[str, dict] | None = None) -> dict:
    params = params or {}
    return {
        "bank": {"params": {"min_fee": 1} | params.get("bank", {}), "balances": [{"address": k.address, "amount": 200_000} for k in ACCOUNTS]},
        "staking": {"params": STAKING_PARAMS | params.get("staking", {}), "validators": [
            {"operator": ACCOUNTS[i].address, "pubkey": CONSENSUS[i].pubkey.hex(), "moniker": f"val{i}", "self_bond": 1_000 * (i + 1)}
            for i in range(GENESIS_VALIDATORS)
        ]},
        "datasets": {"datasets": [{"name": "corpus", "cid": fake_cid("corpus"), "sha256": fake_sha("corpus"), "licence": "public-domain",
                                   "bytes": 100, "tokens": 100, "tokenizer": "bytes"}]},
        "registry": {"params": {"authority": AUTHORITY.address},
                     "versions": [{"cid": fake_cid("v0"), "sha256": fake_sha("v0"), "bytes": 10, "family": "tiny-gpt",
                                   "config": {"n_layer": 1}, "dataset_ids": [0], "licence": "Apache-2.0"}]},
        "training": {"params": TRAINING_PARAMS | params.get("training", {})},
        "gov": {"params": GOV_PARAMS},
    }


class FuzzFailure(AssertionError):
    """An invariant broke or an exception escaped; the message says how to replay it."""


# --- byzantine building blocks -------------------------------------------------------

INTERESTING_INTS = [0, 1, 2, 99, 100, 101, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, U64]
STRINGS = ["", "a", "val", " ", "\t", "x" * 64, "x" * 65, "y" * 1_000, "é", "名前", "\u0085", "\u200b", "\u00ad", "\x00", "\x7f",
           "a\nb", "\U0001f600", "\u0378", "\ufeff", "A" * 5_000]
JUNK_PATHS = ["", "/", "//", "/bank", "/bank/", "bank/balance", "/bank/balance/x", "/nope/x", "/app", "/app/params/x",
              "/../bank/balance", "/bank/balance\x00", "/" + "a" * 5_000, "/staking/__init__", "/bank/transfer", "/bank/_set_balance",
              "/training/_round_view", "/registry/register", "/auth/nonce/../nonce", "/BANK/BALANCE"]


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sign_body(key: crypto.PrivateKey, body_bytes: bytes, chain_id: str = CHAIN_ID) -> bytes:
    """A Tx over arbitrary body bytes with a valid signature: lets unknown fields and bad encodings reach the app."""
    signature = key.sign(crypto.sign_bytes(chain_id, body_bytes))
    return txcodec.Tx(body=body_bytes, pubkey=key.pubkey, signature=signature).SerializeToString(deterministic=True)


def create_validator_msg(pubkey: bytes, amount: int, moniker: str, operator: str, r: random.Random | None = None):
    """MsgCreateValidator with a proof of possession where the chain asks for one (signed by the consensus key
    when the fuzzer holds it; sometimes, with `r`, a proof for another operator or chain, or none)."""
    msg = txcodec.MsgCreateValidator(pubkey=pubkey, amount=amount, moniker=moniker)
    if "pubkey_signature" not in txcodec.MsgCreateValidator.DESCRIPTOR.fields_by_name or not hasattr(staking, "pop_message"):
        return msg
    holder = next((k for k in CONSENSUS if k.pubkey == pubkey), None)
    roll = r.random() if r is not None else 0.0
    if holder is None or roll > 0.95:
        msg.pubkey_signature = r.randbytes(r.choice([0, 64])) if r is not None else b""
    elif roll > 0.9:
        msg.pubkey_signature = holder.sign(staking.pop_message(r.choice([CHAIN_ID, "other-chain"]), r.choice(ACCOUNTS).address))
    else:
        msg.pubkey_signature = holder.sign(staking.pop_message(CHAIN_ID, operator))
    return msg


def random_fill(r: random.Random, message, depth: int = 0, addresses: list[str] | None = None):
    """Fill every field of a protobuf message at random (for messages the fuzzer has no model of)."""
    for f in message.DESCRIPTOR.fields:
        repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == FieldDescriptor.LABEL_REPEATED
        for _ in range(r.randint(0, 3) if repeated else 1):
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                if depth < 2:
                    child = getattr(message, f.name).add() if repeated else getattr(message, f.name)
                    random_fill(r, child, depth + 1, addresses)
                continue
            value = _random_scalar(r, f, addresses or [])
            if repeated:
                getattr(message, f.name).append(value)
            else:
                setattr(message, f.name, value)
    return message


def _random_scalar(r: random.Random, f, addresses: list[str]):
    t = f.type
    if t == FieldDescriptor.TYPE_BOOL:
        return r.random() < 0.5
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return r.choice(INTERESTING_INTS + [r.randint(0, 5_000)])
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return r.choice([0, 1, 2**31, 2**32 - 1, r.randint(0, 5_000)])
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return r.choice([0, 1, -1, 2**63 - 1, -(2**63), r.randint(-5_000, 5_000)])
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_ENUM):
        return r.choice([0, 1, -1, 2**31 - 1, -(2**31)]) if t != FieldDescriptor.TYPE_ENUM else f.enum_type.values[0].number
    if t == FieldDescriptor.TYPE_BYTES:
        return r.choice([b"", r.randbytes(32), r.randbytes(r.randint(0, 100)), CONSENSUS[r.randrange(len(CONSENSUS))].pubkey])
    if t == FieldDescriptor.TYPE_STRING:
        if addresses and r.random() < 0.6:
            return r.choice(addresses)
        return r.choice(STRINGS)
    return 0


# --- queries --------------------------------------------------------------------------


def query_paths() -> list[str]:
    """Every registered query path, /app/params and a few that nobody serves."""
    paths = ["/app/params"]
    for name, module in runtime.MODULES.items():
        paths += [f"/{name}/{q}" for q in getattr(module, "QUERIES", {})]
        paths += [f"/{name}/{v}" for v in getattr(module, "VIEWS", {})]
    return paths


def query_data(r: random.Random) -> bytes:
    address = r.choice(ACCOUNTS).address
    return r.choice([
        b"", b"0", b"1", b"-1", b"2", b"1/0", b"0/0", b"-1/-1", b"0/-1", b"1/2/3", b"/", b"99999999999999999999999",
        str(2**64).encode(), str(2**63).encode(), str(U64).encode(), b"9" * 5_000, b"1_000", b" 1 ", b"0x10", b"1e3", b"+1",
        "\u0661".encode(), "\uff11".encode(), b"\xff\xfe", b"\x80", b"\xed\xa0\x80", b"\x00", r.randbytes(r.randint(0, 64)),
        address.encode(), address.upper().encode(), address[:-1].encode() + b"q", b"gc1", staking.BONDED_POOL.encode(),
        b"%d/%d" % (r.randint(0, 3), r.randint(0, 3)), b"%d" % r.randint(0, 5), b"x" * 100_000,
    ])


def random_query(r: random.Random, latest_height: int) -> abci.RequestQuery:
    paths = query_paths()
    path = r.choice(paths) if r.random() < 0.8 else r.choice(JUNK_PATHS)
    height = r.choice([0, 0, 0, latest_height, max(latest_height - 1, 0), 1, -1, latest_height + 1, 2**63 - 1, -(2**63), r.randint(-5, latest_height + 5)])
    return abci.RequestQuery(path=path, data=query_data(r), height=height, prove=r.random() < 0.5)


def check_query(app: Application, req: abci.RequestQuery) -> abci.ResponseQuery:
    """Query must answer (never raise) with a response the ABCI server can serialize."""
    response = app.query(req)
    if not isinstance(response, abci.ResponseQuery):
        raise FuzzFailure(f"Query returned {type(response).__name__}")
    response.SerializeToString()
    return response


# --- the validator set CometBFT would hold ---------------------------------------------


def apply_updates(validator_set: dict[bytes, int], updates, strict: bool = True) -> dict[bytes, int]:
    """CometBFT's rules for ABCI validator updates (types.ValidatorSet.UpdateWithChangeSet); raises FuzzFailure
    where CometBFT would refuse the block and halt (strict=False: apply what it can, for keep_going runs)."""
    seen: set[bytes] = set()
    out = dict(validator_set)
    if not strict:
        for u in updates:
            if u.power > 0:
                out[u.pub_key.ed25519] = u.power
            else:
                out.pop(u.pub_key.ed25519, None)
        return out
    for u in updates:
        pubkey = u.pub_key.ed25519
        if u.pub_key.WhichOneof("sum") != "ed25519" or len(pubkey) != 32:
            raise FuzzFailure(f"validator update with a non-ed25519 or malformed key {u.pub_key}")
        if pubkey in seen:
            raise FuzzFailure(f"duplicate validator update for pubkey {pubkey.hex()} in one block (CometBFT halts)")
        seen.add(pubkey)
        if u.power < 0:
            raise FuzzFailure(f"negative power {u.power} for {pubkey.hex()}")
        if u.power == 0:
            if pubkey not in out:
                raise FuzzFailure(f"removal of {pubkey.hex()}, which is not in the validator set (CometBFT halts)")
            del out[pubkey]
        else:
            out[pubkey] = u.power
    if not out:
        raise FuzzFailure("validator updates empty the validator set (CometBFT halts)")
    if sum(out.values()) > MAX_TOTAL_VOTING_POWER:
        raise FuzzFailure(f"total voting power {sum(out.values())} above CometBFT's maximum")
    return out


# --- replicas ---------------------------------------------------------------------


class Replica:
    def __init__(self, home: Path):
        self.home = home
        self.app = Application(home)

    def reopen(self) -> abci.ResponseInfo:
        """Close and reopen from disk, as after a crash or restart; what Info reports."""
        self.app.close()
        self.app = Application(self.home)
        return self.app.info(abci.RequestInfo(version="0.39.4", block_version=11, p2p_version=8, abci_version="2.2.0"))

    def close(self) -> None:
        self.last_app_hash = self.app.store.app_hash  # for reports after the run
        self.app.close()


def committed_state(app: Application):
    return app.store.begin_block()


def _u(raw_address: bytes) -> str:
    return crypto.bech32_encode(crypto.ADDRESS_HRP, raw_address)


def trainer_bond(state, trainer: str) -> int:
    """A trainer's bonded collateral, wherever the module that holds it keeps it."""
    if hasattr(staking, "trainer_bond"):
        return staking.trainer_bond(state, trainer)
    return training.trainer_bond(state, trainer).bonded


def trainer_pool(state) -> tuple[str, int]:
    """(trainer pool address, what it must hold): bonded plus unbonding collateral."""
    if hasattr(staking, "TRAINER_POOL"):  # bonds in staking, unbonding entries in staking's unbonding pool
        return staking.TRAINER_POOL, sum(int(v) for _, v in state.iter_prefix(staking.TRAINER_PREFIX))
    total = 0
    for _, raw in state.iter_prefix(training.TRAINER_PREFIX):
        bond = json.loads(raw)
        total += bond.get("bonded", 0) + bond.get("unbonding", 0)
    return training.TRAINER_POOL, total


def staking_accounting(state) -> None:
    """Staking's own bookkeeping rules (shares, held stake, rewards), as its unit tests state them."""
    try:
        from tests.unit.test_staking import check_invariants
    except ImportError:
        return

    class Committed:  # check_invariants reads chain.app.store.begin_block()
        class app:
            class store:
                begin_block = staticmethod(lambda: state)

    try:
        check_invariants(Committed)
    except AssertionError as exc:
        line = traceback.extract_tb(exc.__traceback__)[-1].line
        raise FuzzFailure(f"staking accounting (tests/unit/test_staking.check_invariants): {line} {exc}") from None


def training_locks(state) -> tuple[int, list[str]]:
    """(what the check-fee pool must hold, problems): the undecided submissions of the round in progress hold their
    check fees in the pool and lock exactly their bonds; no lock exceeds its bond."""
    rnd = training.current_round(state)
    pending = [s for s in training.submissions(state, rnd.id) if s.status == training.PENDING] if rnd is not None else []
    problems = []
    locks = {}
    for key, raw in state.iter_prefix(training.TRAINER_PREFIX):
        bond = training.TrainerBond(**json.loads(raw))
        if not 0 <= bond.locked <= bond.bonded or bond.unbonding < 0:
            problems.append(f"trainer {_u(key[len(training.TRAINER_PREFIX):])} has {bond}")
        if bond.locked:
            locks[_u(key[len(training.TRAINER_PREFIX):])] = bond.locked
    if locks != {s.trainer: s.bond for s in pending}:
        problems.append(f"trainer locks {locks} != the undecided submissions' bonds {[(s.trainer, s.bond) for s in pending]}")
    return sum(s.check_fee for s in pending), problems


def merge_problems(state) -> list[str]:
    """The round in progress's sealed merge votes: stored commitments are 32 bytes, from snapshotted validators,
    and counted in merge_commits; every revealed vote has its voter's commitment; none is revealed before merge_reveal."""
    rnd = training.current_round(state)
    if rnd is None:
        return []
    prefix = training.MERGE_COMMITMENT_PREFIX + rnd.id.to_bytes(8, "big")
    sealed = {_u(k[len(prefix):]): v for k, v in state.iter_prefix(prefix)}
    voters = [v["validator"] for v in training.merge_votes(state, rnd.id)]
    problems = []
    if len(sealed) != rnd.merge_commits:
        problems.append(f"round {rnd.id} counts {rnd.merge_commits} merge commitments, state holds {len(sealed)}")
    snapshot = {operator for operator, _ in rnd.powers}
    if any(len(v) != audit.DIGEST_BYTES or operator not in snapshot for operator, v in sealed.items()):
        problems.append(f"round {rnd.id} holds a merge commitment that is malformed or not a snapshotted validator's: {sorted(sealed)}")
    if any(voter not in sealed for voter in voters):
        problems.append(f"round {rnd.id} counts merge votes {voters} without their commitments {sorted(sealed)}")
    if voters and rnd.phase != training.MERGE_REVEAL:
        problems.append(f"round {rnd.id} holds revealed merge votes {voters} in its {rnd.phase} phase")
    return problems


def open_proposals(state) -> list[int]:
    """Ids of the proposals in their deposit or voting period, from gov's queues (ascending)."""
    return sorted(int(raw) for prefix in (gov.DEPOSIT_QUEUE_PREFIX, gov.VOTING_QUEUE_PREFIX) for _, raw in state.iter_prefix(prefix))


def gov_deposits(state) -> tuple[int, list[str]]:
    """(what the deposits account must hold, problems): the deposit records of open proposals, each open proposal's
    total equal to its records; a decided proposal keeps none (they were refunded or burned)."""
    held: dict[int, int] = {}
    for key, raw in state.iter_prefix(gov.DEPOSIT_PREFIX):
        proposal_id = int.from_bytes(key[len(gov.DEPOSIT_PREFIX) : len(gov.DEPOSIT_PREFIX) + 8], "big")
        held[proposal_id] = held.get(proposal_id, 0) + int(raw)
    problems = []
    for proposal_id in sorted(set(held) | set(open_proposals(state))):
        proposal = gov.get_proposal(state, proposal_id)
        if proposal is None or proposal.status not in (gov.DEPOSIT_PERIOD, gov.VOTING_PERIOD):
            problems.append(f"proposal {proposal_id} ({proposal and proposal.status}) still holds deposits {held.get(proposal_id)} or a queue entry")
        elif proposal.total_deposit != held.get(proposal_id, 0):
            problems.append(f"proposal {proposal_id} counts {proposal.total_deposit} deposited, its records sum to {held.get(proposal_id, 0)}")
    return sum(held.values()), problems


def gov_count_problems(state) -> list[str]:
    """A voting proposal's running counts equal a recount from its votes and snapshot: each vote's delegations count
    its option and leave their validator, each snapshotted validator that voted casts the rest; nothing is overcast.
    A decided proposal keeps no counts and no snapshot. (The recount reads every vote: a check, not consensus code.)"""
    problems = []
    voting = {int(raw) for _, raw in state.iter_prefix(gov.VOTING_QUEUE_PREFIX)}
    for prefix in (gov.COUNTS_PREFIX, gov.SNAPSHOT_PREFIX):
        for proposal_id in sorted({int.from_bytes(k[len(prefix) : len(prefix) + 8], "big") for k, _ in state.iter_prefix(prefix)} - voting):
            problems.append(f"proposal {proposal_id} is not being voted on but keeps {prefix.decode()} records")
    for proposal_id in sorted(voting):
        snap = dict(gov.snapshot(state, proposal_id))
        counts = dict.fromkeys(gov.OPTIONS, 0)
        overridden = dict.fromkeys(snap, 0)
        for voter, record in gov.votes(state, proposal_id):
            for operator, tokens in record["parts"]:
                counts[record["option"]] += tokens
                overridden[operator] += tokens
            if voter in snap:
                counts[record["option"]] += snap[voter]["tokens"] - snap[voter]["overridden"]
        recount = gov.Tally(counts[gov.YES], counts[gov.ABSTAIN], counts[gov.NO], counts[gov.NO_WITH_VETO], sum(e["tokens"] for e in snap.values()))
        if gov.tally(state, proposal_id) != recount:
            problems.append(f"proposal {proposal_id} counts {gov.tally(state, proposal_id)}, its votes recount to {recount}")
        wrong = [op for op, entry in snap.items() if entry["overridden"] != overridden[op] or entry["overridden"] > entry["tokens"]]
        if wrong:
            problems.append(f"proposal {proposal_id}: snapshot entries {wrong} do not match the votes cast through them")
    return problems


def params_snapshot(state) -> dict[str, bytes | None]:
    """Module -> its stored params, for every module that has params."""
    return {name: state.get(target.key) for name in runtime.MODULES if (target := runtime.module_params(name)) is not None}


def check_state_invariants(state, pool_offsets: dict[str, int] | None = None) -> tuple[dict[bytes, int], list[str], dict[str, int]]:
    """Bank and staking bookkeeping on committed state: (staking's wanted set by pubkey, problems, pool surpluses).

    A pool must hold exactly what the modules say it holds; `pool_offsets` (keep_going runs) is a surplus
    already reported, e.g. tokens someone sent to a pool, so that later blocks are checked against it.
    """
    problems: list[str] = []
    balance_prefix = bank.PREFIX + b"balance/"
    balances = {_u(k[len(balance_prefix):]): int(v) for k, v in state.iter_prefix(balance_prefix)}
    if any(v <= 0 for v in balances.values()):
        problems.append(f"a stored balance is not positive: {[(a, v) for a, v in balances.items() if v <= 0]}")
    if sum(balances.values()) != bank.supply(state):
        problems.append(f"supply {bank.supply(state)} != sum of balances {sum(balances.values())}")
    vals = list(staking.validators(state))
    pools = {"bonded pool": (staking.BONDED_POOL, sum(v.tokens for v in vals), "validators' tokens")}
    pool, expected = trainer_pool(state)
    pools["trainer pool"] = (pool, expected, "trainer collateral")
    if hasattr(training, "CHECK_FEE_POOL"):
        fees, lock_problems = training_locks(state)
        pools["check-fee pool"] = (training.CHECK_FEE_POOL, fees, "undecided submissions' check fees")
        problems += lock_problems
    if hasattr(training, "MERGE_COMMITMENT_PREFIX"):
        problems += merge_problems(state)
    deposited, deposit_problems = gov_deposits(state)
    pools["gov deposits"] = (gov.DEPOSITS, deposited, "open proposals' deposits")
    pools["gov account"] = (gov.GOV, 0, "nothing (it executes proposals, it holds no funds)")
    problems += deposit_problems
    if hasattr(gov, "COUNTS_PREFIX"):
        problems += gov_count_problems(state)
    if not hasattr(staking, "LEAVING_PREFIX"):  # before delegations became shares: tokens are exactly the delegations
        pools["unbonding pool"] = (staking.UNBONDING_POOL, sum(u["amount"] for u in staking.unbondings(state)), "pending unbondings")
        for v in vals:
            delegated = sum(a for _, a in staking.delegations_to(state, v.operator))
            if v.tokens != delegated:
                problems.append(f"validator {v.operator} has {v.tokens} tokens but {delegated} delegated")
    else:
        try:
            staking_accounting(state)
        except FuzzFailure as exc:
            problems.append(str(exc))
    surplus = {}
    for name, (address, expected, what) in pools.items():
        surplus[name] = balances.get(address, 0) - expected
        if surplus[name] != (pool_offsets or {}).get(name, 0):
            problems.append(f"{name} holds {balances.get(address, 0)}, {what} sum to {expected}")
    wanted: dict[bytes, int] = {}
    for v, p in staking.active_set(state):
        pubkey = bytes.fromhex(v.pubkey)
        if pubkey in wanted:
            problems.append(f"two active validators share pubkey {v.pubkey}")
        if p <= 0 or v.tokens <= 0 or v.jailed:
            problems.append(f"active validator {v.operator} has power {p}, tokens {v.tokens}, jailed {v.jailed}")
        wanted[pubkey] = p
    return wanted, problems, surplus


# --- the fuzzer -------------------------------------------------------------------


@dataclass
class Stats:
    blocks: int = 0
    txs: int = 0
    txs_ok: int = 0
    checks: int = 0  # invariant checks passed
    queries: int = 0
    reopens: int = 0
    executed_ahead: int = 0  # blocks the lead replica finalized from its ProcessProposal's execution
    messages: Counter = field(default_factory=Counter)  # message name -> txs carrying it
    messages_ok: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)  # event type -> count (block and tx events)
    refusals: Counter = field(default_factory=Counter)  # (message, codespace, code) -> failed txs
    sample_logs: dict = field(default_factory=dict)  # (message, codespace, code) -> one log


def proposal_of(block: abci.RequestFinalizeBlock) -> abci.RequestProcessProposal:
    """The ProcessProposal request CometBFT sends for the block that FinalizeBlock `block` decides."""
    return abci.RequestProcessProposal(txs=block.txs, height=block.height, time=block.time, proposer_address=block.proposer_address,
                                       hash=block.hash, proposed_last_commit=block.decided_last_commit, misbehavior=block.misbehavior)


def preparation_of(block: abci.RequestFinalizeBlock) -> abci.RequestPrepareProposal:
    """The PrepareProposal request of `block`'s proposer, offering exactly its txs (no hash yet)."""
    votes = [abci.ExtendedVoteInfo(validator=v.validator, block_id_flag=v.block_id_flag) for v in block.decided_last_commit.votes]
    return abci.RequestPrepareProposal(txs=block.txs, height=block.height, time=block.time, max_tx_bytes=1 << 30,
                                       proposer_address=block.proposer_address, local_last_commit=abci.ExtendedCommitInfo(votes=votes),
                                       misbehavior=block.misbehavior)


class Fuzzer:
    def __init__(self, root: Path, seed: int, txs_per_block: int = 6, replicas: int = 2, reopen_every: int = 25, probe: bool = True,
                 keep_going: bool = False, extreme_params: bool = True):
        """keep_going: record failures in `findings` and carry on where the replicas still agree (for exploring);
        otherwise the first failure raises FuzzFailure."""
        self.seed, self.txs_per_block, self.reopen_every, self.probe_enabled = seed, txs_per_block, reopen_every, probe
        self.keep_going = keep_going
        self.findings: dict[str, str] = {}  # signature -> first full report
        self.pool_offsets: dict[str, int] = {}
        self.jailed_until: dict[str, int] = {}  # operator -> end of its jail term, from the `jailed` events
        self.r = random.Random(seed)
        root = Path(root)
        self.replicas = [Replica(root / f"replica{i}") for i in range(replicas)]
        self.height = 0
        self.current = 0  # the block being executed, for failure messages
        self.sent: list[bytes] = []  # txs of past blocks, for replays
        self.recent: deque[str] = deque(maxlen=6)  # descriptions of the last blocks, for the failure message
        self.stats = Stats()
        self.flaky = self.r.randrange(len(CONSENSUS))  # one consensus key misses many signatures
        self.params = random_params(self.r) if extreme_params else {}
        self.supply: int | None = None  # after the last checked block
        self.params_seen: dict | None = None  # every module's stored params after the last checked block
        self.sealed: dict[tuple[int, str], tuple[bytes, list]] = {}  # (round, operator) -> (salt, verdicts) it committed
        self.merge_sealed: dict[tuple[int, str], txcodec.MsgAttestMerge] = {}  # (round, operator) -> the merge vote (salt included) it committed
        try:
            self.replicas[0].app.init_chain(self.init_request())
        except ValueError:  # genesis validation refuses this mix (its right: genesis is trusted input); use the defaults
            self.params = {}
        responses = [self._call(f"InitChain on replica {i}", rep.app.init_chain, self.init_request()) for i, rep in enumerate(self.replicas)]
        self._same("InitChain", responses)
        self.cometbft = apply_updates({}, responses[0].validators)
        self.sets_after = {0: dict(self.cometbft)}  # height -> CometBFT's set after that block's updates

    def init_request(self) -> abci.RequestInitChain:
        return abci.RequestInitChain(chain_id=CHAIN_ID, app_state_bytes=json.dumps(genesis_app_state(self.params)).encode(), initial_height=1,
                                     time=Timestamp(seconds=GENESIS_TIME))

    # --- driving ---

    def run(self, blocks: int) -> Stats:
        for _ in range(blocks):
            self.step()
        return self.stats

    def close(self) -> None:
        for rep in self.replicas:
            rep.close()

    def _call(self, what: str, fn, *args, recoverable: bool = False):
        try:
            return fn(*args)
        except FuzzFailure as exc:
            self.report(exc, recoverable)
        except BaseException as exc:
            self.report(self.failure(f"{what} raised {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-6)}"), recoverable)
        return None

    def report(self, failure: FuzzFailure, recoverable: bool = True, signature: str | None = None) -> None:
        """Raise, or in keep_going mode record a failure the run can go on from (once per signature)."""
        if not (self.keep_going and recoverable):
            raise failure
        text = str(failure)
        what = text.split("\n")[0].split(": ", 1)[-1]
        signature = signature or re.sub(r"'[^']*'|\"[^\"]*\"|b'[^']*'|[0-9a-f]{8,}|\d+", "#", what)[:90]
        self.findings.setdefault(signature, text)

    def failure(self, what: str) -> FuzzFailure:
        return FuzzFailure(
            f"fuzz seed {self.seed}, block {self.current}: {what}\n"
            f"genesis params changed for this seed: {self.params}\n"
            f"replay: .venv/bin/python bench/soak.py --seed {self.seed} --blocks {self.current} --txs-per-block {self.txs_per_block}\n"
            f"last blocks:\n" + "\n".join(self.recent)
        )

    def _same(self, what: str, responses) -> None:
        encoded = [r.SerializeToString(deterministic=True) for r in responses]
        if any(e != encoded[0] for e in encoded[1:]):
            hashes = [getattr(r, "app_hash", b"").hex() for r in responses]
            raise self.failure(f"replicas diverged on {what}: app hashes {hashes}")

    def set_for_height(self, height: int) -> dict[bytes, int]:
        """The validator set that signs `height`: updates from block H apply from H+2."""
        return self.sets_after.get(max(height - 2, 0), self.sets_after[0])

    def step(self) -> None:
        h = self.current = self.height + 1
        lead = self.replicas[0].app
        state = committed_state(lead)
        txs, notes = self.random_txs(state, h)
        req = self.random_block(h, txs)
        self.recent.append(f"  block {h}: proposer {req.proposer_address.hex()[:8]}, "
                           f"absent {[v.validator.address.hex()[:8] for v in req.decided_last_commit.votes if v.block_id_flag == 1]}, "
                           f"evidence {[m.validator.address.hex()[:8] for m in req.misbehavior]}\n" + "\n".join(f"    {n}" for n in notes))
        if self.probe_enabled:
            self.probe(lead, txs, h)
        if len(self.replicas) > 1:  # the lead votes on the decided block first and so finalizes it from that execution
            self._process_decided(lead, req)
        responses = [self._call(f"FinalizeBlock on replica {i}", rep.app.finalize_block, req, recoverable=True) for i, rep in enumerate(self.replicas)]
        if any(r is None for r in responses):  # keep_going: every node would halt here; go on with an empty block instead
            req = self.random_block(h, [])
            del req.misbehavior[:]
            txs = []
            responses = [self._call(f"FinalizeBlock of an empty block on replica {i}", rep.app.finalize_block, req) for i, rep in enumerate(self.replicas)]
        for response in responses:
            self._call("serializing FinalizeBlock's response", response.SerializeToString)
        self._same(f"FinalizeBlock {h}", responses)
        try:
            self.cometbft = apply_updates(self.cometbft, responses[0].validator_updates)
        except FuzzFailure as exc:
            self.report(self.failure(str(exc)))
            self.cometbft = apply_updates(self.cometbft, responses[0].validator_updates, strict=False)
        crash = len(self.replicas) > 1 and h >= 2 and self.r.randrange(self.reopen_every * 2) == 0
        if crash:  # the second replica dies between FinalizeBlock and Commit; CometBFT replays the block
            info = self._call("reopening a replica before Commit", self.replicas[1].reopen)
            if info.last_block_height != h - 1:
                raise self.failure(f"after a crash before Commit, Info says height {info.last_block_height}, expected {h - 1}")
            again = self._call("FinalizeBlock replayed after a crash", self.replicas[1].app.finalize_block, req)
            self._same(f"FinalizeBlock {h} replayed after a crash", [responses[0], again])
            self.stats.reopens += 1
        for i, rep in enumerate(self.replicas):
            self._call(f"Commit on replica {i}", rep.app.commit, abci.RequestCommit())
        self.height = h
        self.sets_after[h] = dict(self.cometbft)
        if h > 4:
            self.sets_after.pop(h - 4, None)
        self.last_request, self.last_response = req, responses[0]
        self._tally(txs, responses[0])
        self.check(h, responses[0].app_hash)
        self.check_supply(h, responses[0])
        self.check_params(h, responses[0])
        if len(self.replicas) > 1 and h >= 2 and self.r.randrange(self.reopen_every) == 0:
            info = self._call("reopening a replica", self.replicas[-1].reopen)
            if (info.last_block_height, info.last_block_app_hash) != (h, responses[0].app_hash):
                raise self.failure(f"reopened replica's Info says height {info.last_block_height} hash {info.last_block_app_hash.hex()}, "
                                   f"expected {h} {responses[0].app_hash.hex()}")
            self.stats.reopens += 1

    def _process_decided(self, app: Application, req: abci.RequestFinalizeBlock) -> None:
        """ProcessProposal of exactly the block FinalizeBlock will get: when accepted, the lead's FinalizeBlock takes
        over that execution while the other replicas execute the block there, and _same compares the two. At even
        heights the lead first prepares the block as its proposer would: when that keeps the txs as they are,
        ProcessProposal takes its execution over from PrepareProposal."""
        if req.height % 2 == 0:
            self._call("PrepareProposal of the decided block", app.prepare_proposal, preparation_of(req), recoverable=True)
        resp = self._call("ProcessProposal of the decided block", app.process_proposal, proposal_of(req), recoverable=True)
        if resp is not None and resp.status == abci.ResponseProcessProposal.ACCEPT:
            self.stats.executed_ahead += 1

    def check(self, h: int, app_hash: bytes) -> None:
        for i, rep in enumerate(self.replicas):
            if rep.app.store.app_hash != app_hash or rep.app.store.height != h:
                raise self.failure(f"replica {i} committed height {rep.app.store.height} hash {rep.app.store.app_hash.hex()}, FinalizeBlock said {app_hash.hex()}")
        try:
            wanted, problems, surplus = check_state_invariants(committed_state(self.replicas[0].app), self.pool_offsets)
        except BaseException as exc:
            self.report(self.failure(f"checking invariants after block {h} raised {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-4)}"))
            return
        for validator, power in staking.active_set(committed_state(self.replicas[0].app)):
            if self.jailed_until.get(validator.operator, 0) > h:
                problems.append(f"validator {validator.operator} is in the active set with power {power} at height {h}, "
                                f"but was jailed until {self.jailed_until[validator.operator]} (a jail escape)")
        for problem in problems:
            self.report(self.failure(f"after block {h}: {problem}"))
        self.pool_offsets = surplus  # keep_going: a surplus is reported once, then later blocks are checked against it
        # With no bonded, unjailed validator left, CometBFT keeps its last set (an empty one halts it) until someone bonds.
        kept_last_set = not wanted and not self.last_response.validator_updates and self.cometbft
        if wanted != self.cometbft and not kept_last_set:
            describe = lambda s: {k.hex()[:8]: p for k, p in sorted(s.items())}  # noqa: E731
            self.report(self.failure(f"after block {h}: CometBFT's set {describe(self.cometbft)} != staking's active set {describe(wanted)}"),
                        signature="CometBFT's validator set != staking's active set")
            return
        self.stats.checks += 1

    def check_supply(self, h: int, response: abci.ResponseFinalizeBlock) -> None:
        """Supply is conserved: a block changes it by what it minted less what it burned, nothing else."""
        supply = bank.supply(committed_state(self.replicas[0].app))
        events = [e for result in response.tx_results for e in result.events] + list(response.events)
        moved = sum(int(a.value) * (1 if e.type == "minted" else -1) for e in events if e.type in ("minted", "burned") for a in e.attributes if a.key == "amount")
        if self.supply is not None and supply - self.supply != moved:
            self.report(self.failure(f"after block {h}: supply moved by {supply - self.supply}, but the block minted less burned {moved}"))
        self.supply = supply
        # Deposits gov says it burned left supply from its deposits account, no more and no less (not moved elsewhere).
        attrs = [(e.type, {a.key: a.value for a in e.attributes}) for e in events]
        burned = sum(int(a["amount"]) for t, a in attrs if t == "burned" and a.get("account") == gov.DEPOSITS)
        announced = sum(int(a["amount"]) for t, a in attrs if t == "deposits_burned")
        if burned != announced:
            self.report(self.failure(f"after block {h}: gov announced {announced} of deposits burned, {burned} was burned from its account"))

    def check_params(self, h: int, response: abci.ResponseFinalizeBlock) -> None:
        """Params change only by a passed proposal: each changed module has a params_updated event in this block
        (genesis params are committed with block 1, so checking starts after it)."""
        after = params_snapshot(committed_state(self.replicas[0].app))
        announced = {a.value for e in response.events if e.type == "params_updated" for a in e.attributes if a.key == "module"}
        changed = {name for name in after if self.params_seen is not None and after[name] != self.params_seen.get(name)}
        if changed - announced:
            self.report(self.failure(f"after block {h}: params of {sorted(changed - announced)} changed without a passed proposal"))
        self.params_seen = after

    def _tally(self, txs: list[bytes], response: abci.ResponseFinalizeBlock) -> None:
        self.stats.blocks += 1
        self.stats.txs += len(txs)
        for raw, result in zip(txs, response.tx_results):
            try:
                name = txcodec.decode(raw).msg_name
            except Exception:
                name = "undecodable"
            self.stats.messages[name] += 1
            if result.code == 0:
                if name == "update_params":  # only the gov account may, and nobody can sign as it
                    self.report(self.failure(f"a MsgUpdateParams signed by an account succeeded: {result.events}"))
                self.stats.txs_ok += 1
                self.stats.messages_ok[name] += 1
            else:
                self.stats.refusals[(name, result.codespace, result.code)] += 1
                self.stats.sample_logs.setdefault((name, result.codespace, result.code), result.log[:160])
            for e in result.events:
                self.stats.events[e.type] += 1
                self._track_jail(e)
        for e in response.events:
            self.stats.events[e.type] += 1
            self._track_jail(e)
        self.sent.extend(raw for raw, result in zip(txs, response.tx_results) if result.code == 0)
        del self.sent[:-200]

    def _track_jail(self, event: abci.Event) -> None:
        """Jail terms as the events announce them: a jailed operator may sign again only after its term."""
        attributes = {a.key: a.value for a in event.attributes}
        if event.type == "jailed":
            operator = attributes["validator"]
            self.jailed_until[operator] = max(self.jailed_until.get(operator, 0), int(attributes["until"]))
        elif event.type == "unjailed":
            self.jailed_until.pop(attributes["operator"], None)

    def probe(self, app: Application, txs: list[bytes], h: int) -> None:
        """The surfaces that must never raise, with this block's txs and random queries."""
        for raw in txs[:4]:
            kind = abci.CheckTxType.RECHECK if self.r.random() < 0.3 else abci.CheckTxType.NEW
            resp = self._call("CheckTx", app.check_tx, abci.RequestCheckTx(tx=raw, type=kind), recoverable=True)
            if resp is not None:
                self._call("serializing CheckTx's response", resp.SerializeToString, recoverable=True)
        time = Timestamp(seconds=GENESIS_TIME + h)
        prepared = self._call("PrepareProposal", app.prepare_proposal,
                              abci.RequestPrepareProposal(txs=txs, max_tx_bytes=1 << 20, height=h, time=time), recoverable=True)
        for candidate in ([] if prepared is None else list(prepared.txs), txs):
            resp = self._call("ProcessProposal", app.process_proposal, abci.RequestProcessProposal(txs=candidate, height=h, time=time), recoverable=True)
            if resp is not None and resp.status not in (abci.ResponseProcessProposal.ACCEPT, abci.ResponseProcessProposal.REJECT):
                self.report(self.failure(f"ProcessProposal answered status {resp.status}"))
        for _ in range(3):
            req = random_query(self.r, self.height)
            self._call(f"Query {req.path!r} data {req.data[:40]!r} height {req.height} prove {req.prove}", check_query, app, req, recoverable=True)
            self.stats.queries += 1

    # --- blocks ---

    def random_block(self, h: int, txs: list[bytes]) -> abci.RequestFinalizeBlock:
        r = self.r
        signers = self.set_for_height(h)
        members = sorted(signers)
        roll = r.random()
        if roll < 0.05:
            proposer = b""
        elif roll < 0.08:
            proposer = r.randbytes(20)
        elif not members:
            proposer = b""
        else:
            proposer = staking.consensus_address(r.choices(members, weights=[signers[m] for m in members])[0])
        votes = []
        if h >= 2:
            last = self.set_for_height(h - 1)
            flaky = CONSENSUS[self.flaky].pubkey
            for pubkey in sorted(last):
                absent = r.random() < (0.6 if pubkey == flaky else 0.05)
                votes.append(abci.VoteInfo(validator=abci.Validator(address=staking.consensus_address(pubkey), power=last[pubkey]),
                                           block_id_flag=1 if absent else r.choice([2, 2, 2, 3])))
            if r.random() < 0.03:
                votes.append(abci.VoteInfo(validator=abci.Validator(address=r.randbytes(20), power=1), block_id_flag=r.choice([1, 2])))
        evidence = []
        if h >= 3 and r.random() < 0.04:
            back = r.randint(1, min(4, h - 1))
            past = self.set_for_height(h - back) or self.sets_after[0]
            if r.random() < 0.85 and past:
                pubkey = r.choice(sorted(past))
                address, power = staking.consensus_address(pubkey), past[pubkey]
            else:
                address, power = r.randbytes(20), 1
            kind = abci.DUPLICATE_VOTE if r.random() < 0.8 else abci.LIGHT_CLIENT_ATTACK
            evidence.append(abci.Misbehavior(type=kind, validator=abci.Validator(address=address, power=power), height=h - back,
                                             time=Timestamp(seconds=GENESIS_TIME + h - back), total_voting_power=sum(past.values())))
            if r.random() < 0.3:
                evidence.append(evidence[0])  # the same evidence twice in one block
        return abci.RequestFinalizeBlock(
            txs=txs, height=h, time=Timestamp(seconds=GENESIS_TIME + h), proposer_address=proposer,
            decided_last_commit=abci.CommitInfo(round=0, votes=votes), misbehavior=evidence,
            hash=hashlib.sha256(b"fuzz block %d %d" % (self.seed, h)).digest(),
        )

    # --- txs ---

    def random_txs(self, state, h: int) -> tuple[list[bytes], list[str]]:
        r = self.r
        ctx = TxContext(state, h)
        rnd = training.current_round(state)
        self.sealed = {k: v for k, v in self.sealed.items() if rnd is not None and k[0] == rnd.id}  # what can still be revealed
        self.merge_sealed = {k: v for k, v in self.merge_sealed.items() if rnd is not None and k[0] == rnd.id}
        count = r.randint(0, 2 * self.txs_per_block)
        if rnd is not None and rnd.phase in PHASE_MESSAGES and r.random() < 0.6:  # the validators act together now and then: rounds get to the merge
            self.combo(ctx, "everyone_merges" if rnd.phase in MERGE_MESSAGES else "everyone_audits")
        if any(True for _ in state.iter_prefix(gov.VOTING_QUEUE_PREFIX)) and r.random() < 0.3:  # ... and proposals get decided
            self.combo(ctx, "everyone_votes")
        while len(ctx.txs) < count:
            if r.random() < 0.15:
                self.combo(ctx)
            else:
                self.one_tx(ctx)
        return ctx.txs, ctx.notes

    def one_tx(self, ctx: "TxContext") -> None:
        r = self.r
        roll = r.random()
        if roll < 0.04 and self.sent:
            ctx.raw(r.choice(self.sent), "replay of an included tx")
            return
        if roll < 0.07:
            ctx.raw(r.randbytes(r.choice([0, 1, 5, 40, 200])), "junk bytes")
            return
        if roll < 0.10 and self.sent:
            raw = bytearray(r.choice(self.sent))
            raw[r.randrange(len(raw))] ^= 1 << r.randrange(8)
            ctx.raw(bytes(raw), "bit-flipped tx")
            return
        names = [f.name for f in txcodec.TxBody.DESCRIPTOR.oneofs_by_name["msg"].fields]
        weights = {"send": 3, "create_validator": 3, "delegate": 3, "undelegate": 4, "edit_validator": 1, "unjail": 2,
                   "bond_trainer": 2, "unbond_trainer": 2, "register_dataset": 1, "register_version": 2,
                   "submit_delta": 4, "commit_verdicts": 3, "reveal_verdicts": 3, "judge_claims": 3, "commit_merge": 3, "attest_merge": 3,
                   "submit_proposal": 1, "deposit": 1, "vote": 2, "update_params": 1}
        rnd = training.current_round(ctx.state)
        voting = rnd is not None and rnd.phase in PHASE_MESSAGES
        if voting:  # a short phase: its message is likelier while it lasts
            weights = weights | {PHASE_MESSAGES[rnd.phase]: 12}
        name = r.choices(names, weights=[weights.get(n, 2) for n in names])[0]
        if name in PHASE_MESSAGES.values() and voting and r.random() < 0.8:
            name = PHASE_MESSAGES[rnd.phase]  # mostly the message the phase takes, so that audits and merges get somewhere
        signer = r.choice(ACCOUNTS)
        if name == "register_version" and r.random() < 0.8:
            signer = AUTHORITY
        elif name in ("commit_verdicts", "reveal_verdicts", "judge_claims", "commit_merge", "attest_merge", "edit_validator", "unjail", "vote") and r.random() < 0.8:
            signer = r.choice(list(self.operators_by_key(ctx).values()) or ACCOUNTS)
        msg, note = self.random_msg(ctx, signer, name)
        big = name.startswith("register_") and r.random() < 0.8  # state is priced per byte: big records pay more
        ctx.signed(r, signer, msg, note, fee=r.choice([5_000, 20_000, 60_000]) if big else None)

    def random_msg(self, ctx: "TxContext", signer: crypto.PrivateKey, name: str):
        r = self.r
        maker = getattr(self, f"msg_{name}", None)
        if maker is None or r.random() < 0.05:  # a message the fuzzer has no model of, or a random fill of a known one
            msg_type = txcodec.TxBody.DESCRIPTOR.fields_by_name[name].message_type._concrete_class
            msg = random_fill(r, msg_type(), addresses=ctx.addresses())
            return msg, f"random {name}"
        return maker(ctx, signer)

    def amount(self, typical: int) -> int:
        r = self.r
        roll = r.random()
        if roll < 0.75:
            return max(1, typical)
        return r.choice([0, 1, typical + 1, typical * 2, 2**63, U64, max(typical - 1, 0)])

    def msg_send(self, ctx, signer):
        r = self.r
        recipient = r.choice(ctx.addresses() + ["", "gc1", "cosmos1abc", ACCOUNTS[0].address.upper(), ACCOUNTS[0].address[:-1] + "q", " " + ACCOUNTS[1].address])
        amount = self.amount(r.randint(1, max(1, bank.balance(ctx.state, signer.address) // 3)))
        return txcodec.MsgSend(recipient=recipient, amount=amount), f"{_n(signer)} send {amount} to {_short(recipient)}"

    def msg_create_validator(self, ctx, signer):
        r = self.r
        roll = r.random()
        if roll < 0.8:
            pubkey = r.choice(CONSENSUS).pubkey  # new, foreign or already in use
        elif roll < 0.9:
            pubkey = r.randbytes(32)
        else:
            pubkey = r.randbytes(r.choice([0, 31, 33, 64]))
        moniker = r.choice(["v", "validator", "\u00e9t\u00e9"] * 3 + STRINGS)
        amount = self.amount(STAKING_PARAMS["min_self_bond"] * r.choice([1, 1, 2, 5, 10]))
        msg = create_validator_msg(pubkey, amount, moniker, signer.address, r)
        return msg, f"{_n(signer)} create_validator key {_key(pubkey)} amount {amount} moniker {moniker[:10]!r}"

    def msg_withdraw_rewards(self, ctx, signer):
        operator = self.pick_operator(ctx)
        return txcodec.TxBody.DESCRIPTOR.fields_by_name["withdraw_rewards"].message_type._concrete_class(validator=operator), \
            f"{_n(signer)} withdraw_rewards from {_short(operator)}"

    def msg_delegate(self, ctx, signer):
        r = self.r
        operator = self.pick_operator(ctx)
        amount = self.amount(r.choice([1, 50, 100, 300]))
        return txcodec.MsgDelegate(validator=operator, amount=amount), f"{_n(signer)} delegate {amount} to {_short(operator)}"

    def msg_undelegate(self, ctx, signer):
        r = self.r
        operator = self.pick_operator(ctx)
        try:
            held = staking.delegation(ctx.state, crypto.parse_address(operator), signer.address)
        except Exception:
            held = 0
        amount = self.amount(held if r.random() < 0.5 else r.randint(1, max(1, held)))
        return txcodec.MsgUndelegate(validator=operator, amount=amount), f"{_n(signer)} undelegate {amount} of {held} from {_short(operator)}"

    def msg_edit_validator(self, ctx, signer):
        moniker = self.r.choice(["edited"] * 4 + STRINGS)
        return txcodec.MsgEditValidator(moniker=moniker), f"{_n(signer)} edit_validator {moniker[:10]!r}"

    def msg_unjail(self, ctx, signer):
        return txcodec.MsgUnjail(), f"{_n(signer)} unjail"

    def msg_bond_trainer(self, ctx, signer):
        amount = self.amount(self.r.choice([100, 150, 300]))
        return txcodec.MsgBondTrainer(amount=amount), f"{_n(signer)} bond_trainer {amount}"

    def msg_unbond_trainer(self, ctx, signer):
        held = trainer_bond(ctx.state, signer.address)
        amount = self.amount(held if self.r.random() < 0.6 else self.r.randint(1, max(1, held)))
        return txcodec.MsgUnbondTrainer(amount=amount), f"{_n(signer)} unbond_trainer {amount} of {held}"

    def break_one_field(self, valid: dict, nasty: dict, focus: str = "") -> tuple[dict, str]:
        """Mostly an honest message; sometimes one field replaced by a nasty value (one at a time, so the
        other checks still pass and the broken one is what the chain must catch), half the time `focus`."""
        if self.r.random() < 0.6:
            return valid, ""
        name = focus if focus and self.r.random() < 0.5 else self.r.choice(sorted(nasty))
        return valid | {name: self.r.choice(nasty[name])}, f" <bad {name}>"

    def msg_register_dataset(self, ctx, signer):
        r = self.r
        tag = f"data {r.randrange(1_000)}"
        valid = {"name": r.choice(["set", "kjv", "wiki-2024"]), "cid": fake_cid(tag), "sha256": fake_sha(tag), "licence": r.choice(["cc0", "MIT"]),
                 "bytes": r.randint(1, 10**9), "tokens": r.choice(INTERESTING_INTS), "tokenizer": r.choice(["bytes", "gpt2", ""])}
        nasty = {"name": STRINGS, "cid": STRINGS + [fake_cid(tag).upper()], "sha256": ["", "AB" * 32, "g" * 64, fake_sha(tag)[:-1]],
                 "licence": ["", "x" * 65, "\u00e9", "a\nb"], "bytes": [0], "tokenizer": ["x" * 60_000] + STRINGS}
        fields, broken = self.break_one_field(valid, nasty)
        msg = txcodec.MsgRegisterDataset(**fields)
        return msg, f"{_n(signer)} register_dataset {tag}{broken}"

    def msg_register_version(self, ctx, signer):
        r = self.r
        tag = f"version {r.randrange(1_000)}"
        latest = max(registry.count(ctx.state) - 1, 0)
        valid = {"parent": latest, "cid": fake_cid(tag), "sha256": fake_sha(tag), "bytes": r.randint(1, 10**9), "family": "tiny-gpt",
                 "config_json": r.choice(['{"n_layer":1}', '{"n_layer":2,"d":[1,2,3]}']), "dataset_ids": [0], "licence": "mit", "note": r.choice(["", "n"])}
        nasty = {
            "parent": [latest + 1, U64], "cid": STRINGS, "sha256": ["", "AB" * 32], "bytes": [0], "family": STRINGS + ["x" * 33],
            "config_json": ["[]", "null", "{", "", '{"a":"\\ud800"}', '{"\\udfff":1}', '{"a":' * 400 + "1" + "}" * 400, "[" * 2_040 + "]" * 2_040,
                            '{"a":1e400}', '{"a":NaN}', '{"a":1,"a":2}', '{"x":"' + "y" * 5_000 + '"}'],
            "dataset_ids": [[], [0, 0], [1], [U64]], "licence": STRINGS, "note": STRINGS,
        }
        fields, broken = self.break_one_field(valid, nasty, focus="config_json")
        msg = txcodec.MsgRegisterVersion(**fields)
        return msg, f"{_n(signer)} register_version parent {msg.parent} {tag}{broken} config {msg.config_json[:24]!r} ({len(msg.config_json)} chars)"

    def gov_params_change(self, ctx) -> txcodec.MsgUpdateParams:
        """A whole parameter set of a module as the chain has it, one field changed: often valid, sometimes not."""
        r = self.r
        module = r.choice([name for name in runtime.MODULES if runtime.module_params(name)] + ["training"])
        target = runtime.module_params(module)
        live = load_params(ctx.state, target.key, target.params_type)
        values = asdict(live)
        name = r.choice(sorted(values))
        value = values[name]
        if isinstance(value, bool):
            values[name] = not value if r.random() < 0.9 else r.choice([0, "true", None])
        elif isinstance(value, int):
            values[name] = r.choice([value, value + 1, max(value - 1, 0), 0, 1, 10_000, 2**63, -1, 1.5, str(value)])
        else:
            values[name] = r.choice([value, "", "x" * 100, ACCOUNTS[0].address, gov.GOV])
        if r.random() < 0.1:
            values.pop(name)  # not the whole set
        return txcodec.MsgUpdateParams(module=module if r.random() < 0.95 else r.choice(["auth", "", "nope"]), params_json=json.dumps(values),
                                       params_sha256=gov.params_digest(live))

    def sane_params_change(self, ctx) -> txcodec.MsgUpdateParams | None:
        """A change a proposal can carry and pass: one integer param of gov, staking, training or datasets one up or
        down, whole set, checked with gov's own parser (the first of a few tries that it accepts). Not bank's fees nor
        bools: the fuzzer's fees assume bank's genesis params, and training must stay enabled for rounds to happen."""
        r = self.r
        for _ in range(4):
            module = r.choice([name for name in ("gov", "staking", "training", "training", "datasets") if runtime.module_params(name)])
            target = runtime.module_params(module)
            live = load_params(ctx.state, target.key, target.params_type)
            values = asdict(live)
            name = r.choice(sorted(n for n, v in values.items() if isinstance(v, int) and not isinstance(v, bool)))
            values[name] = max(values[name] + r.choice([-1, 1]), 0)
            params_json = json.dumps(values)
            try:
                _, params = gov.parse_params(module, params_json)
                if target.check_change is not None:
                    target.check_change(load_params(ctx.state, target.key, target.params_type), params)
            except (gov.GovError, ValueError):
                continue
            return txcodec.MsgUpdateParams(module=module, params_json=params_json, params_sha256=gov.params_digest(live))
        return None

    def msg_submit_proposal(self, ctx, signer):
        """Mostly one sane params change with the deposit that opens the vote (or a part of it, for deposits to
        complete); else 1 to 3 messages for the gov account: params changes, version registrations, sends (which it
        cannot pay), even gov's own messages (refused); an initial deposit around the minimum."""
        r = self.r
        if r.random() < 0.6 and (change := self.sane_params_change(ctx)) is not None:
            params = gov.get_params(ctx.state)
            expedited = r.random() < 0.2
            minimum = params.expedited_min_deposit if expedited else params.min_deposit
            deposit = minimum if r.random() < 0.7 else -(-minimum * params.min_initial_deposit_bps // gov.BPS)
            body = txcodec.TxBody(update_params=change)
            msg = txcodec.MsgSubmitProposal(messages=[body], initial_deposit=deposit, title="nudge", summary="one param", expedited=expedited)
            return msg, f"{_n(signer)} submit_proposal update_params {change.module} deposit {deposit}{' expedited' if expedited else ''}"
        bodies = []
        for _ in range(r.choice([1, 1, 2, 3])):
            roll = r.random()
            if roll < 0.6:
                msg = self.gov_params_change(ctx)
            elif roll < 0.8:
                msg, _ = self.msg_register_version(ctx, signer)
            elif roll < 0.9:
                msg = txcodec.MsgSend(recipient=r.choice(ACCOUNTS).address, amount=1)
            else:
                msg = txcodec.MsgVote(proposal=1, option=1)
            body = txcodec.TxBody()
            getattr(body, txcodec._msg_field(msg)).CopyFrom(msg)
            bodies.append(body)
        expedited = r.random() < 0.2
        deposit = self.amount(r.choice([25, 50, 100, 200]))
        msg = txcodec.MsgSubmitProposal(messages=bodies, initial_deposit=min(deposit, U64), title=r.choice(["p", "x" * 141, "é"]) if r.random() < 0.1 else "p",
                                        summary="s", expedited=expedited)
        return msg, f"{_n(signer)} submit_proposal {','.join(b.WhichOneof('msg') for b in bodies)} deposit {deposit}{' expedited' if expedited else ''}"

    def pick_proposal(self, ctx) -> int:
        """Mostly an open proposal; else a recent, decided, future or absurd id."""
        open_ids = open_proposals(ctx.state)
        if open_ids and self.r.random() < 0.7:
            return self.r.choice(open_ids)
        newest = max(gov.decode_int(ctx.state.get(gov.NEXT_ID_KEY)) - 1, 0)
        return self.r.choice([newest, newest, max(newest - 1, 0), max(newest - 2, 0), newest + 1, 0, U64])

    def msg_deposit(self, ctx, signer):
        proposal, amount = self.pick_proposal(ctx), self.amount(self.r.choice([10, 50, 100]))
        return txcodec.MsgDeposit(proposal=proposal, amount=amount), f"{_n(signer)} deposit {amount} on proposal {proposal}"

    def msg_vote(self, ctx, signer):
        proposal, option = self.pick_proposal(ctx), self.r.choice([1, 1, 2, 3, 4, 4, 0, 5, 2**32 - 1])
        return txcodec.MsgVote(proposal=proposal, option=option), f"{_n(signer)} vote {option} on proposal {proposal}"

    def msg_update_params(self, ctx, signer):
        msg = self.gov_params_change(ctx)  # sent directly: only the gov account may
        return msg, f"{_n(signer)} update_params {msg.module} directly"

    def current_round_id(self, ctx) -> int:
        rnd = training.current_round(ctx.state)
        base = rnd.id if rnd is not None else 0
        return base if self.r.random() < 0.85 else self.r.choice([base + 1, max(base - 1, 0), U64])

    def msg_submit_delta(self, ctx, signer):
        """A delta with its trajectory; a cheater fakes some steps' gradient commitments (an auditor that samples one
        claims fraud on it), and sometimes one field is malformed."""
        r = self.r
        round_id = self.current_round_id(ctx)
        tag = f"delta {round_id} {signer.address} {r.randrange(3)}"
        rnd = training.current_round(ctx.state)
        params = training.round_params(rnd) if rnd is not None else training.get_params(ctx.state)
        steps, digest = params.steps, fake_sha(tag)  # the round's: a proposal changes only later rounds
        faked = [i for i in range(steps) if r.random() < 0.15]
        commitments = b"".join(audit.grad_commitment(r.randbytes(32) if i in faked else grad_proof(digest, i)) for i in range(steps))
        before = r.choice(INTERESTING_INTS)
        after = r.choice([before // 2, before // 2, r.choice(INTERESTING_INTS)])  # mostly a gain, so that rounds get to the merge
        valid = {"round": round_id, "cid": fake_cid(tag), "sha256": digest, "bytes": self.amount(100), "loss_before_micro": before,
                 "loss_after_micro": after, "steps": steps, "kernel_path": r.choice(["torch AVX2", "", "torch-2.5 AVX512"]),
                 "trajectory_cid": fake_cid("trajectory " + tag), "trajectory_sha256": fake_sha("trajectory " + tag), "state_bytes": r.choice([1, 500, 1_000]),
                 "grad_commitments": commitments}
        nasty = {"steps": [0, 1, steps + 1, U64], "kernel_path": STRINGS, "trajectory_cid": STRINGS, "trajectory_sha256": ["", "AB" * 32, digest[:-1]],
                 "state_bytes": [0, TRAINING_PARAMS["max_state_bytes"] + 1, U64], "grad_commitments": [b"", commitments[:-1], commitments + b"\0", commitments * 2],
                 "cid": STRINGS[:4], "sha256": ["", "g" * 64]}
        fields, broken = self.break_one_field(valid, nasty) if r.random() < 0.5 else (valid, "")
        return txcodec.MsgSubmitDelta(**fields), f"{_n(signer)} submit_delta round {round_id} faked steps {faked}{broken}"

    def audit_verdicts(self, ctx, key: crypto.PrivateKey, rnd) -> tuple[list, str]:
        """The verdicts `key` seals in round `rnd`: an honest recomputation of its sample of each submission on its
        committees, or one of the ways a validator cheats: always accept without proofs (lazy) or with guessed ones,
        a fraud claim on honest work (a step, the endpoints k, unavailability k + 1, or k + 2, refused), a malformed entry."""
        r = self.r
        params = training.round_params(rnd)  # the audit sample size the round opened with
        behaviour = r.choices(["honest", "lazy", "guess", "false_claim", "broken"], weights=[8, 1, 1, 1, 1])[0]
        verdicts = []
        for sub in training.submissions(ctx.state, rnd.id):
            if key.address not in dict(sub.committee) and not (behaviour == "broken" and r.random() < 0.3):
                continue
            signature = key.sign(audit.audit_message(rnd.id, sub.index, sub.trajectory_sha256, rnd.beacon))
            sample = audit.audit_sample(signature, sub.steps, params.audit_steps)
            commitments = training.grad_commitments(ctx.state, rnd.id, sub.index)
            bad = [i for i in sample if audit.grad_commitment(grad_proof(sub.sha256, i)) != commitments[32 * i : 32 * i + 32]]
            v = txcodec.AuditVerdict(submission=sub.index, audit_signature=signature, measured_error_ppm=r.choice([0, 0, 10, U64]))
            if behaviour == "honest" and bad:
                v.verdict, v.fraud_step = 2, bad[0]
            elif behaviour == "honest":
                v.verdict = 1 if sub.loss_after_micro > sub.loss_before_micro else 0
                if r.random() < 0.9:  # else it ran on another kernel path: no proofs
                    v.step_proofs.extend(grad_proof(sub.sha256, i) for i in sample)
            elif behaviour == "lazy":
                v.verdict = 0
            elif behaviour == "guess":
                v.step_proofs.extend(r.randbytes(32) for _ in sample)
            elif behaviour == "false_claim":
                v.verdict, v.fraud_step = 2, r.choice([0, sub.steps - 1, sub.steps, sub.steps + 1, sub.steps + 2])
            else:
                broken = r.choice(["verdict", "signature", "proofs", "proof_size", "reason", "fraud_with_proofs"])
                v.step_proofs.extend(grad_proof(sub.sha256, i) for i in sample)
                if broken == "verdict":
                    v.verdict = r.choice([3, 2**32 - 1])
                elif broken == "signature":
                    v.audit_signature = r.choice([b"", r.randbytes(64), r.choice(ACCOUNTS).sign(b"another message")])
                elif broken == "proofs":
                    del v.step_proofs[-1:]
                elif broken == "proof_size":
                    v.step_proofs[0] = v.step_proofs[0][:31]
                elif broken == "reason":
                    v.reason = r.choice(STRINGS[5:])
                else:
                    v.verdict = 2
            verdicts.append(v)
        if behaviour == "broken" and verdicts and r.random() < 0.3:
            verdicts.append(verdicts[0])  # the same submission twice
        return verdicts, behaviour

    def msg_commit_verdicts(self, ctx, signer):
        r = self.r
        round_id = self.current_round_id(ctx)
        rnd = training.current_round(ctx.state)
        verdicts, behaviour = self.audit_verdicts(ctx, signer, rnd) if rnd is not None else ([], "no round")
        salt = r.randbytes(32)
        sealed = training.verdicts_commitment(round_id, salt, signer.pubkey, verdicts)
        key = (round_id, signer.address)
        if key not in ctx.sealing and training.commitment(ctx.state, round_id, signer.address) is None:  # what a reveal will open
            self.sealed[key] = (salt, verdicts)
            ctx.sealing.add(key)
        commitment = sealed if r.random() < 0.95 else r.choice([b"", sealed[:31], sealed + b"\0"])
        return txcodec.MsgCommitVerdicts(round=round_id, commitment=commitment), \
            f"{_n(signer)} commit_verdicts round {round_id} {behaviour} on {[v.submission for v in verdicts]}"

    def msg_reveal_verdicts(self, ctx, signer):
        """Mostly the opening of what the signer committed; sometimes one that cannot open it: a copy of another
        auditor's sealed verdicts, another salt, another key, an edited verdict."""
        r = self.r
        round_id = self.current_round_id(ctx)
        salt, verdicts = self.sealed.get((round_id, signer.address), (r.randbytes(32), []))
        pubkey = signer.pubkey
        how = r.choices(["opening", "copy", "salt", "key", "edited"], weights=[16, 1, 1, 1, 1])[0]
        if how == "copy":
            others = [vs for (rid, operator), (_, vs) in sorted(self.sealed.items(), key=lambda item: item[0]) if rid == round_id and operator != signer.address]
            verdicts = r.choice(others) if others else verdicts
        elif how == "salt":
            salt = r.randbytes(r.choice([31, 32]))
        elif how == "key":
            pubkey = r.choice(ACCOUNTS + CONSENSUS).pubkey
        elif how == "edited" and verdicts:
            edited = txcodec.AuditVerdict()
            edited.CopyFrom(verdicts[0])
            edited.verdict = (edited.verdict + 1) % 3
            verdicts = [edited] + list(verdicts[1:])
        msg = txcodec.MsgRevealVerdicts(round=round_id, salt=salt, operator_pubkey=pubkey, verdicts=verdicts)
        return msg, f"{_n(signer)} reveal_verdicts round {round_id} {how} on {[v.submission for v in verdicts]}"

    def msg_judge_claims(self, ctx, signer):
        """Honest judgements of the round's claims (a step reproduces iff its commitment is the honest proof's; the
        fuzzer's endpoints and content are always fine), sometimes flipped (some of those
        abstained: refused unless the claim needs a mixed dataset, or valid too), partial, duplicated or about no claim."""
        r = self.r
        round_id = self.current_round_id(ctx)
        rnd = training.current_round(ctx.state)
        judgements = []
        for sub in training.submissions(ctx.state, rnd.id) if rnd is not None else []:
            commitments = training.grad_commitments(ctx.state, rnd.id, sub.index)
            for claim in training.claims(ctx.state, rnd.id, sub.index):
                step = claim.step
                valid = step >= sub.steps or audit.grad_commitment(grad_proof(sub.sha256, step)) == commitments[32 * step : 32 * step + 32]
                judgements.append(txcodec.ClaimJudgement(submission=sub.index, step=step, valid=valid))
        how = r.choices(["honest", "flipped", "partial", "twice", "unknown"], weights=[12, 2, 2, 1, 1])[0]
        if how == "flipped":
            for j in judgements:
                x = r.random()  # one draw, as before abstentions existed: the stream (and the corners it reaches) stays put
                j.valid, j.abstain = j.valid != (x < 0.5), x < 0.2
        elif how == "partial":
            judgements = [j for j in judgements if r.random() < 0.5]
        elif how == "twice" and judgements:
            judgements.append(judgements[0])
        elif how == "unknown":
            judgements.append(txcodec.ClaimJudgement(submission=r.choice([0, U64]), step=r.choice([0, 2**32, U64]), valid=True))
        return txcodec.MsgJudgeClaims(round=round_id, judgements=judgements), f"{_n(signer)} judge_claims round {round_id} {how} {len(judgements)}"

    def phase_msg(self, ctx, key, rnd):
        """The audit or merge message `key` would send in the round's phase, or None outside those phases."""
        name = PHASE_MESSAGES.get(rnd.phase)
        return getattr(self, f"msg_{name}")(ctx, key) if name else None

    def merge_vote(self, round_id: int, behaviour: str) -> tuple[txcodec.MsgAttestMerge, str]:
        """A merge vote with a fresh salt: the honest recomputation (file "merge ROUND 0", measurements within the
        params), or garbage: another file, a size of 0 or 2^64 - 1, an impossible prompt score."""
        r = self.r
        tag = f"merge {round_id} 0"
        total = r.choice([0, 1, 2])
        fields = {"bytes": 100, "held_out_loss_micro": r.choice([1_000, 1_000, 1_200, r.randint(0, 5_000)]),
                  "prompts_correct": r.randint(0, total), "prompts_total": total}
        if behaviour == "garbage":
            broken = r.choice(["file", "file", "bytes", "prompts", "loss"])
            if broken == "file":
                tag = f"merge {round_id} {r.randint(1, 2)}"
            elif broken == "bytes":
                fields["bytes"] = r.choice([0, U64])
            elif broken == "prompts":
                fields |= {"prompts_correct": 3, "prompts_total": r.choice([2, 3])}
            else:
                fields["held_out_loss_micro"] = r.choice(INTERESTING_INTS)
            behaviour = f"garbage ({broken})"
        vote = txcodec.MsgAttestMerge(round=round_id, cid=fake_cid(tag), sha256=fake_sha(tag), salt=r.randbytes(32), **fields)
        return vote, f"{behaviour} {tag}"

    def seal_merge(self, ctx, signer, vote: txcodec.MsgAttestMerge) -> bytes:
        """The commitment to `vote`; remembered as what the signer's reveal will open unless it already committed."""
        key = (vote.round, signer.address)
        if key not in ctx.merge_sealing and ctx.state.get(training.MERGE_COMMITMENT_PREFIX + vote.round.to_bytes(8, "big") + crypto.address_raw(signer.address)) is None:
            self.merge_sealed[key] = vote
            ctx.merge_sealing.add(key)
        return training.merge_commitment(vote.round, signer.address, vote)

    def msg_commit_merge(self, ctx, signer):
        """Mostly a commitment to an honest merge vote; sometimes to garbage, or a commitment that is no sha256."""
        r = self.r
        round_id = self.current_round_id(ctx)
        vote, what = self.merge_vote(round_id, r.choices(["honest", "garbage"], weights=[4, 1])[0])
        sealed = self.seal_merge(ctx, signer, vote)
        commitment = sealed if r.random() < 0.95 else r.choice([b"", sealed[:31], sealed + b"\0"])
        return txcodec.MsgCommitMerge(round=round_id, commitment=commitment), f"{_n(signer)} commit_merge round {round_id} {what}"

    def msg_attest_merge(self, ctx, signer):
        """Mostly the opening of the merge vote the signer committed (honest or garbage); sometimes one that cannot
        open it: another validator's opening copied, its own vote with another salt, or with an edited measurement;
        a signer that committed nothing reveals a fresh honest vote."""
        r = self.r
        round_id = self.current_round_id(ctx)
        vote = self.merge_sealed.get((round_id, signer.address))
        how = r.choices(["opening", "copy", "salt", "edited"], weights=[16, 2, 1, 1])[0]
        if vote is None:
            vote, how = self.merge_vote(round_id, "honest")[0], "unsealed"
        elif how == "copy":
            others = [v for (rid, operator), v in sorted(self.merge_sealed.items(), key=lambda item: item[0]) if rid == round_id and operator != signer.address]
            vote = r.choice(others) if others else vote
        elif how == "salt":
            vote = txcodec.MsgAttestMerge(salt=r.randbytes(r.choice([0, 31, 32])), **{f.name: v for f, v in vote.ListFields() if f.name != "salt"})
        elif how == "edited":
            vote = txcodec.MsgAttestMerge(held_out_loss_micro=vote.held_out_loss_micro + 1, **{f.name: v for f, v in vote.ListFields() if f.name != "held_out_loss_micro"})
        return vote, f"{_n(signer)} attest_merge round {round_id} {how} {vote.cid[-6:]}"

    def pick_operator(self, ctx) -> str:
        r = self.r
        operators = [v.operator for v in staking.validators(ctx.state)]
        if operators and r.random() < 0.8:
            return r.choice(operators)
        return r.choice(ctx.addresses() + ["", "gc1xyz", staking.BONDED_POOL])

    def operators_by_key(self, ctx) -> dict[str, crypto.PrivateKey]:
        """Validator operators the fuzzer holds keys for."""
        ours = {k.address: k for k in ACCOUNTS}
        return {v.operator: ours[v.operator] for v in staking.validators(ctx.state) if v.operator in ours}

    # --- combos: several moves in one block that single random txs rarely line up ---

    def combo(self, ctx: "TxContext", kind: str = "") -> None:
        r = self.r
        ops = self.operators_by_key(ctx)
        kind = kind or r.choice(["exit_recreate", "grab_key", "vote_and_leave", "submit_and_unbond", "jail_escape", "everyone_audits", "everyone_merges"])
        if kind in ("exit_recreate", "grab_key", "vote_and_leave", "jail_escape") and not ops:
            kind = "everyone_audits"
        if kind == "exit_recreate":  # an operator leaves and comes back with another key in the same block
            operator = r.choice(sorted(ops))
            key = ops[operator]
            self_bond = staking.delegation(ctx.state, operator, operator)
            ctx.signed(r, key, txcodec.MsgUndelegate(validator=operator, amount=self_bond), f"{_n(key)} undelegate full self-bond {self_bond} [exit_recreate]")
            pubkey = r.choice(CONSENSUS).pubkey
            ctx.signed(r, key, create_validator_msg(pubkey, STAKING_PARAMS["min_self_bond"] * r.choice([1, 3]), "back", key.address),
                       f"{_n(key)} create_validator key {_key(pubkey)} [exit_recreate]")
        elif kind == "grab_key":  # an operator leaves; another account takes its consensus key in the same block
            operator = r.choice(sorted(ops))
            key = ops[operator]
            validator = staking.get_validator(ctx.state, operator)
            other = r.choice([k for k in ACCOUNTS if k.address != operator])
            for delegator in ([key] if r.random() < 0.7 else ACCOUNTS):
                held = staking.delegation(ctx.state, operator, delegator.address)
                if held:
                    ctx.signed(r, delegator, txcodec.MsgUndelegate(validator=operator, amount=held), f"{_n(delegator)} undelegate all {held} from {_n(key)} [grab_key]")
            pubkey = bytes.fromhex(validator.pubkey)
            ctx.signed(r, other, create_validator_msg(pubkey, STAKING_PARAMS["min_self_bond"] * 2, "grab", other.address),
                       f"{_n(other)} create_validator with {_n(key)}'s key {_key(pubkey)} [grab_key]")
        elif kind == "vote_and_leave":  # vote (commit, reveal, judge, seal or reveal a merge vote), then take the stake away in the same block
            operator = r.choice(sorted(ops))
            key = ops[operator]
            rnd = training.current_round(ctx.state)
            if rnd is not None and (made := self.phase_msg(ctx, key, rnd)) is not None:
                ctx.signed(r, key, made[0], made[1] + " [vote_and_leave]")
            self_bond = staking.delegation(ctx.state, operator, operator)
            ctx.signed(r, key, txcodec.MsgUndelegate(validator=operator, amount=self_bond), f"{_n(key)} undelegate {self_bond} [vote_and_leave]")
        elif kind == "submit_and_unbond":  # submit a delta, then pull the bond in the same block
            key = r.choice(ACCOUNTS)
            if trainer_bond(ctx.state, key.address) == 0:
                ctx.signed(r, key, txcodec.MsgBondTrainer(amount=150), f"{_n(key)} bond_trainer 150 [submit_and_unbond]")
            msg, note = self.msg_submit_delta(ctx, key)
            ctx.signed(r, key, msg, note + " [submit_and_unbond]")
            ctx.signed(r, key, txcodec.MsgUnbondTrainer(amount=max(1, trainer_bond(ctx.state, key.address) or 150)), f"{_n(key)} unbond_trainer all [submit_and_unbond]")
        elif kind == "jail_escape":  # a (possibly jailed) operator empties itself and re-creates at once
            jailed = {v.operator for v in staking.validators(ctx.state) if v.jailed}
            operator = r.choice(sorted(jailed & set(ops)) or sorted(ops))
            key = ops[operator]
            validator = staking.get_validator(ctx.state, operator)
            for delegator in ACCOUNTS:
                held = staking.delegation(ctx.state, operator, delegator.address)
                if held:
                    ctx.signed(r, delegator, txcodec.MsgUndelegate(validator=operator, amount=held), f"{_n(delegator)} undelegate all {held} [jail_escape]")
            ctx.signed(r, key, create_validator_msg(bytes.fromhex(validator.pubkey), STAKING_PARAMS["min_self_bond"], "again", key.address),
                       f"{_n(key)} create_validator same key [jail_escape]")
            ctx.signed(r, key, txcodec.MsgUnjail(), f"{_n(key)} unjail [jail_escape]")
        elif kind == "everyone_audits":  # every validator we hold commits, reveals or judges, as the phase asks
            rnd = training.current_round(ctx.state)
            if rnd is None or rnd.phase not in (training.COMMIT, training.REVEAL, training.DISPUTE):
                self.one_tx(ctx)
                return
            for operator, key in sorted(ops.items()):
                if r.random() < 0.8:
                    msg, note = self.phase_msg(ctx, key, rnd)
                    ctx.signed(r, key, msg, note + " [everyone_audits]")
        elif kind == "everyone_merges":  # every validator we hold seals an honest merge vote, or reveals (mostly the one it sealed)
            rnd = training.current_round(ctx.state)
            if rnd is None or rnd.phase not in MERGE_MESSAGES:
                self.one_tx(ctx)
                return
            for operator, key in sorted(ops.items()):
                # A quarter of them (by round) sleep through the commit window, and then try to reveal anyway.
                late = hashlib.sha256(b"late %d %d " % (self.seed, rnd.id) + operator.encode()).digest()[0] < 64
                # The late ones always try to reveal: the reveal window ends as soon as every committer revealed.
                if (r.random() >= 0.8 and not (late and rnd.phase == training.MERGE_REVEAL)) or (late and rnd.phase == training.MERGE):
                    continue
                if rnd.phase == training.MERGE:
                    vote, what = self.merge_vote(rnd.id, "honest")
                    ctx.signed(r, key, txcodec.MsgCommitMerge(round=rnd.id, commitment=self.seal_merge(ctx, key, vote)), f"{_n(key)} commit_merge {what} [everyone_merges]")
                else:
                    msg, note = self.msg_attest_merge(ctx, key)
                    ctx.signed(r, key, msg, note + " [everyone_merges]")
        elif kind == "everyone_votes":  # the validators we hold vote on a proposal as one (mostly yes, some vetoes); a delegator may override
            voting = [int(raw) for _, raw in ctx.state.iter_prefix(gov.VOTING_QUEUE_PREFIX)]
            if not voting:
                self.one_tx(ctx)
                return
            proposal = r.choice(voting)
            mood = r.choices([gov.YES, gov.NO_WITH_VETO, gov.NO, 0], weights=[6, 2, 1, 1])[0]  # 0: each its own way
            for operator, key in sorted(ops.items()):
                option = mood or r.choice(list(gov.OPTIONS))
                ctx.signed(r, key, txcodec.MsgVote(proposal=proposal, option=option), f"{_n(key)} vote {option} on proposal {proposal} [everyone_votes]")
            delegators = [k for k in ACCOUNTS if k.address not in ops and staking.delegations_of(ctx.state, k.address)]
            if delegators and r.random() < 0.5:
                key, option = r.choice(delegators), r.choice(list(gov.OPTIONS))
                ctx.signed(r, key, txcodec.MsgVote(proposal=proposal, option=option), f"{_n(key)} vote {option} on proposal {proposal} as a delegator [everyone_votes]")


class TxContext:
    """One block's txs under construction: the committed state they were drawn from and each signer's next nonce."""

    def __init__(self, state, height: int):
        self.state, self.height = state, height
        self.nonces: dict[str, int] = {}
        self.txs: list[bytes] = []
        self.notes: list[str] = []
        self.sealing: set[tuple[int, str]] = set()  # (round, operator) whose commitment this block records
        self.merge_sealing: set[tuple[int, str]] = set()  # ... and whose merge commitment

    def addresses(self) -> list[str]:
        return [k.address for k in ACCOUNTS] + [staking.BONDED_POOL, bank.FEE_COLLECTOR]

    def raw(self, raw: bytes, note: str) -> None:
        self.txs.append(raw)
        self.notes.append(note)

    def next_nonce(self, key: crypto.PrivateKey) -> int:
        if key.address not in self.nonces:
            self.nonces[key.address] = auth.get_nonce(self.state, crypto.address_raw(key.address))
        return self.nonces[key.address]

    def signed(self, r: random.Random, key: crypto.PrivateKey, msg, note: str, fee: int | None = None) -> None:
        """Sign msg with key's next nonce; sometimes mangle the envelope the way a byzantine client would."""
        nonce = self.next_nonce(key)
        fee = fee or r.choice([1, 1, 1, 2, 5, 100, 1_000])
        roll = r.random()
        if roll < 0.88:
            self.nonces[key.address] = nonce + 1
            self.raw(txcodec.build(key, CHAIN_ID, nonce, fee, msg), note)
            return
        body = txcodec.TxBody(chain_id=CHAIN_ID, nonce=nonce, fee=fee)
        getattr(body, txcodec._msg_field(msg)).CopyFrom(msg)
        body_bytes = body.SerializeToString(deterministic=True)
        mangle = r.choice(["gap", "fee0", "fee_huge", "bad_sig", "chain", "unknown_field", "outer_field", "dup_body", "over64", "bad_utf8",
                           "oversize", "old_nonce", "memo"])
        if mangle == "gap":
            raw = txcodec.build(key, CHAIN_ID, nonce + r.randint(1, 20), fee, msg)
        elif mangle == "old_nonce":
            raw = txcodec.build(key, CHAIN_ID, max(nonce - 1, 0), fee, msg)
        elif mangle == "fee0":
            raw = txcodec.build(key, CHAIN_ID, nonce, 0, msg)
        elif mangle == "fee_huge":
            raw = txcodec.build(key, CHAIN_ID, nonce, r.choice([U64, 2**63, bank.balance(self.state, key.address) + 1]), msg)
        elif mangle == "bad_sig":
            raw = bytearray(txcodec.build(key, CHAIN_ID, nonce, fee, msg))
            raw[-1 - r.randrange(64)] ^= 1 << r.randrange(8)
            raw = bytes(raw)
        elif mangle == "chain":
            raw = txcodec.build(key, "other-chain", nonce, fee, msg)
        elif mangle == "unknown_field":  # a signed body with a field nobody declared
            raw = sign_body(key, body_bytes + varint(127 << 3 | 0) + varint(r.choice([0, 1, U64])))
            self.nonces[key.address] = nonce + 1
        elif mangle == "outer_field":  # the same signed tx with an extra outer field: a new hash for the same body
            raw = txcodec.build(key, CHAIN_ID, nonce, fee, msg) + varint(9 << 3 | 2) + b"\x01x"
            self.nonces[key.address] = nonce + 1
        elif mangle == "dup_body":  # the body field twice: the last one wins in protobuf
            good = txcodec.build(key, CHAIN_ID, nonce, fee, msg)
            raw = varint(1 << 3 | 2) + varint(3) + b"abc" + good
            self.nonces[key.address] = nonce + 1
        elif mangle == "over64":  # a 10-byte varint above 2^64 for the nonce
            raw = sign_body(key, varint(1 << 3 | 2) + varint(len(CHAIN_ID)) + CHAIN_ID.encode() + varint(2 << 3) + b"\xff" * 9 + b"\x7f" + body_bytes[len(CHAIN_ID) + 2:])
        elif mangle == "bad_utf8":  # a signed memo that is not UTF-8
            raw = sign_body(key, body_bytes + varint(4 << 3 | 2) + b"\x03\xed\xa0\x80")
        elif mangle == "oversize":
            raw = txcodec.build(key, CHAIN_ID, nonce, fee, msg, memo="m" * (txcodec.MAX_TX_BYTES + 10))
        else:  # memo
            raw = txcodec.build(key, CHAIN_ID, nonce, fee, msg, memo=r.choice(STRINGS))
            self.nonces[key.address] = nonce + 1
        self.raw(raw, f"{note} <{mangle}>")


def _n(key: crypto.PrivateKey) -> str:
    for i, k in enumerate(ACCOUNTS):
        if k.address == key.address:
            return f"acct{i}"
    return key.address[:10]


def _short(address: str) -> str:
    for i, k in enumerate(ACCOUNTS):
        if k.address == address:
            return f"acct{i}"
    return repr(address[:14])


def _key(pubkey: bytes) -> str:
    for i, k in enumerate(CONSENSUS):
        if k.pubkey == pubkey:
            return f"cons{i}"
    return f"{pubkey.hex()[:8]}({len(pubkey)}B)"
