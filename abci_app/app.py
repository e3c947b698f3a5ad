"""The ABCI Application: maps CometBFT's calls onto the runtime and the store.

Methods appear in lifecycle order. A block executes on a block overlay:
begin_block, its txs, end_block, app hash. ProcessProposal must execute the
txs of the block it judges to judge them (and PrepareProposal those of the
block it builds); the execution is kept, and FinalizeBlock of that same block
only finishes it (end_block, results, app hash: work CometBFT overlaps with
timeout_commit, unlike the proposal calls, which hold up the votes). Any
other block is executed in FinalizeBlock. Commit only persists; Info reports
what was persisted, so CometBFT's handshake replays whatever we lost in a crash.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import rlp

from abci_app import runtime, snapshots
from abci_app.modules import staking
from abci_app.node import metrics
from abci_app.context import BlockInfo, Context, Misbehavior, ModuleError, Vote
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.pb.tendermint.crypto import keys_pb2, proof_pb2
from abci_app.pb.tendermint.types import validator_pb2
from abci_app.snapshots import Restore, Snapshots, SnapshotSettings
from abci_app.state import ARCHIVE, HeightUnavailable, Overlay, Pruning, Store

log = logging.getLogger("app")

APP_VERSION = 1
PROOF_OP_TYPE = "gradchain:mpt"


def _exec_result(result: runtime.TxResult) -> abci.ExecTxResult:
    return abci.ExecTxResult(code=result.code, codespace=result.codespace, log=result.log, events=_abci_events(result.events))


def _abci_events(events) -> list[abci.Event]:
    # Attributes as dicts: protobuf builds them ~40% faster than EventAttribute objects, on every tx of every block.
    return [abci.Event(type=e.type, attributes=[{"key": k, "value": v, "index": True} for k, v in e.attributes.items()]) for e in events]


def _validator_updates(ctx: Context) -> list[abci.ValidatorUpdate]:
    return [abci.ValidatorUpdate(pub_key=keys_pb2.PublicKey(ed25519=u.pubkey), power=u.power) for u in ctx.validator_updates]


_MISBEHAVIOR_KINDS = {abci.DUPLICATE_VOTE: "duplicate_vote", abci.LIGHT_CLIENT_ATTACK: "light_client_attack"}


def _block_info(proposer: bytes, block_hash: bytes, last_commit, misbehavior) -> BlockInfo:
    """The parts of a block that modules may act on: proposer, hash, last commit, evidence. PrepareProposal,
    ProcessProposal and FinalizeBlock each carry them (the proposer's copy before the block has a hash)."""
    return BlockInfo(
        proposer=proposer,
        hash=block_hash,
        # BLOCK_ID_FLAG_ABSENT is a missed signature; COMMIT and NIL votes show the validator was online.
        votes=tuple(Vote(v.validator.address, v.validator.power, v.block_id_flag != validator_pb2.BLOCK_ID_FLAG_ABSENT) for v in last_commit.votes),
        misbehavior=tuple(Misbehavior(_MISBEHAVIOR_KINDS.get(m.type, "unknown"), m.validator.address, m.height) for m in misbehavior),
    )


@dataclass
class _Executed:
    """A block's txs executed ahead of FinalizeBlock (begin_block and txs; end_block waits for the decided
    block), and everything the execution depended on: equal keys, equal execution."""

    key: tuple  # _execution_key; PrepareProposal's has no block hash yet
    ctx: Context
    results: list[runtime.TxResult]


class Application:
    def __init__(self, home: str | Path, snapshot_settings: SnapshotSettings = SnapshotSettings(), pruning: Pruning = ARCHIVE):
        Path(home).mkdir(parents=True, exist_ok=True)
        self.snapshots = Snapshots(Path(home) / "snapshots", snapshot_settings)
        # Turning pruning on at this start keeps the heights of the snapshots we serve.
        self.store = Store(Path(home) / "state.sqlite", pruning, protect=self.snapshots.heights())
        self._restore: Restore | None = None  # the snapshot being restored, from an accepted OfferSnapshot
        # InitChain's writes stay uncommitted until block 1 commits (if we crash
        # before that, CometBFT calls InitChain again), so later calls build on it.
        self._genesis: Overlay | None = None
        self._block: Overlay | None = None  # executed by FinalizeBlock, awaiting Commit
        self._block_height = 0
        self._check_state = self._base()  # mempool view: committed state + accepted txs
        self._prepared: _Executed | None = None  # the last proposal we built
        self._executed: _Executed | None = None  # the last proposal we accepted

    def close(self) -> None:
        self._end_restore()
        self.snapshots.close()
        self.store.close()

    def _end_restore(self) -> None:
        """Drop the restore in progress, if any, with whatever it staged."""
        if self._restore is not None:
            self._restore.close()
            self._restore = None

    def _base(self) -> Overlay:
        """A fresh overlay over the latest state a new block would start from."""
        return self._genesis.child() if self._genesis is not None else self.store.begin_block()

    def _block_context(self, height: int, time_ns: int, info: BlockInfo) -> Context:
        """A fresh block overlay over the latest state (InitChain's writes for block 1). begin_block and the txs
        see no block hash (PrepareProposal has none yet, and all three calls must execute alike); end_block does."""
        block = self._genesis.fork() if self._genesis is not None else self.store.begin_block()
        return Context(block, runtime.chain_id(block), height, time_ns, replace(info, hash=b""))

    def _begin(self, height: int, time_ns: int, info: BlockInfo) -> Context:
        ctx = self._block_context(height, time_ns, info)
        runtime.begin_block(ctx)
        return ctx

    def _proposal_context(self, height: int, time_ns: int, info: BlockInfo) -> tuple[Context, bool]:
        """For PrepareProposal and ProcessProposal: begin_block run, and True (the execution may be kept); or, when
        begin_block raises (a bug), a context without it and False: txs are judged as they would be otherwise (begin_block
        touches no nonce, fee or liquid balance), nothing is kept, and FinalizeBlock meets the bug on every node, a
        halt that shows, rather than every proposal rejected in silence."""
        try:
            return self._begin(height, time_ns, info), True
        except Exception:
            log.exception("internal error in begin_block at height %d; judging the proposal's txs without it", height)
            return self._block_context(height, time_ns, info), False

    def _finish(self, ctx: Context, info: BlockInfo, results: list[runtime.TxResult]) -> abci.ResponseFinalizeBlock:
        """end_block (which may use the block's hash, so `info` has it) and the response FinalizeBlock returns."""
        ctx.block = info
        runtime.end_block(ctx)
        return abci.ResponseFinalizeBlock(
            tx_results=[_exec_result(result) for result in results],
            events=_abci_events(ctx.events),
            validator_updates=_validator_updates(ctx),
            app_hash=ctx.state.app_hash(),
        )

    def _execution_key(self, height: int, time_ns: int, info: BlockInfo, txs) -> tuple:
        """Everything a block's execution depends on: the block (txs, height, time, proposer, hash, last
        commit, evidence) and the committed state under it. Equal keys, equal results."""
        return (height, time_ns, info, tuple(txs), self.store.height, self.store.app_hash)

    # --- Info: on connect, and for CometBFT's handshake after a restart ---------

    def info(self, req: abci.RequestInfo) -> abci.ResponseInfo:
        height = self.store.height
        return abci.ResponseInfo(
            data="gradchain",
            version="0.1.0",
            app_version=APP_VERSION,
            last_block_height=height,
            last_block_app_hash=self.store.app_hash if height else b"",
        )

    # --- InitChain: once, before the first block --------------------------------

    def init_chain(self, req: abci.RequestInitChain) -> abci.ResponseInitChain:
        app_state = json.loads(req.app_state_bytes or b"{}")
        genesis = self.store.begin_block()
        ctx = Context(genesis, req.chain_id, 0, req.time.ToNanoseconds())
        runtime.genesis(ctx, app_state)
        if req.consensus_params.HasField("evidence"):
            staking.check_evidence_age(genesis, req.consensus_params.evidence.max_age_num_blocks)
        self._genesis = genesis
        self._prepared = self._executed = None  # built on an earlier genesis: not to be reused
        self._check_state = self._base()
        # An empty list keeps CometBFT's genesis validators; ours replace them when staking has any.
        log.info("InitChain: chain %s, %d validators from staking genesis", req.chain_id, len(ctx.validator_updates))
        return abci.ResponseInitChain(app_hash=genesis.app_hash(), validators=_validator_updates(ctx))

    # --- CheckTx: the mempool asks whether a tx may enter (and re-asks after commits)

    def check_tx(self, req: abci.RequestCheckTx) -> abci.ResponseCheckTx:
        """NEW and RECHECK alike: the tx must be admitted on the mempool view, which
        holds committed state plus every tx admitted since. So each sender's nonces
        are contiguous there (a gap is refused with BadNonce), and after a commit the
        recheck, which starts from committed state, evicts what is no longer valid,
        including txs left behind a gap by an evicted one. Never raises."""
        try:
            ctx = Context(self._check_state, runtime.chain_id(self._check_state), self.store.height + 1, 0)
            result = runtime.admit(ctx, req.tx, runtime.CHECK)
        except Exception:
            log.exception("internal error in CheckTx")
            return abci.ResponseCheckTx(code=runtime.Internal.code, codespace="runtime", log="internal error (see the node's log)")
        if not result.admitted:
            return abci.ResponseCheckTx(code=result.code, codespace=result.codespace, log=result.log)
        return abci.ResponseCheckTx(code=0, gas_wanted=1)

    # --- PrepareProposal: we are the proposer and may reorder or drop txs -------

    def prepare_proposal(self, req: abci.RequestPrepareProposal) -> abci.ResponsePrepareProposal:
        """Keep, in order, the txs that runtime.admit accepts on the block as FinalizeBlock would
        execute it (after begin_block): the same check ProcessProposal applies, so our proposal is
        never refused. The execution is kept: our ProcessProposal of this very proposal does not repeat it."""
        time_ns = req.time.ToNanoseconds()
        info = _block_info(req.proposer_address, b"", req.local_last_commit, req.misbehavior)
        self._prepared = None
        ctx, keep = self._proposal_context(req.height, time_ns, info)
        chosen, results, size = [], [], 0
        for raw in runtime.order_by_nonce(list(req.txs)):
            if size + len(raw) > req.max_tx_bytes:
                break
            try:
                result = runtime.admit(ctx, raw, runtime.PREPARE)
            except Exception:  # admit writes nothing to ctx when it raises
                log.exception("internal error in PrepareProposal; leaving the tx out")
                continue
            if result.admitted:
                chosen.append(raw)
                results.append(result)
                size += len(raw)
        if keep:
            self._prepared = _Executed(self._execution_key(req.height, time_ns, info, chosen), ctx, results)
        return abci.ResponsePrepareProposal(txs=chosen)

    # --- ProcessProposal: a proposal to vote on; the same validity check --------

    def process_proposal(self, req: abci.RequestProcessProposal) -> abci.ResponseProcessProposal:
        """ACCEPT only if every tx, in block order, passes runtime.admit as in PrepareProposal
        (after begin_block, as FinalizeBlock will execute it): a proposer cannot fill blocks with
        txs that pay no fee. The accepted block's execution is kept for FinalizeBlock; our own
        proposal was executed by PrepareProposal and is not executed again.
        Always answers: an exception here would halt the node."""
        reject = abci.ResponseProcessProposal(status=abci.ResponseProcessProposal.REJECT)
        accept = abci.ResponseProcessProposal(status=abci.ResponseProcessProposal.ACCEPT)
        time_ns = req.time.ToNanoseconds()
        info = _block_info(req.proposer_address, req.hash, req.proposed_last_commit, req.misbehavior)
        ours, self._prepared, self._executed = self._prepared, None, None
        key = self._execution_key(req.height, time_ns, info, req.txs)
        try:
            if ours is not None and ours.key == self._execution_key(req.height, time_ns, replace(info, hash=b""), req.txs):
                ctx, results, keep = ours.ctx, ours.results, True  # PrepareProposal admitted exactly these txs, in order, on this state
            else:
                (ctx, keep), results = self._proposal_context(req.height, time_ns, info), []
                for index, raw in enumerate(req.txs):
                    result = runtime.admit(ctx, raw, runtime.PROCESS)
                    if not result.admitted:
                        log.warning("rejecting proposal at height %d: tx %d fails ante: %s", req.height, index, result.log)
                        return reject
                    results.append(result)
        except Exception:
            log.exception("internal error in ProcessProposal at height %d; rejecting", req.height)
            return reject
        if keep:
            self._executed = _Executed(key, ctx, results)
        return accept

    # --- FinalizeBlock: execute the decided block, return results and app hash --

    def finalize_block(self, req: abci.RequestFinalizeBlock) -> abci.ResponseFinalizeBlock:
        time_ns = req.time.ToNanoseconds()
        info = _block_info(req.proposer_address, req.hash, req.decided_last_commit, req.misbehavior)
        executed, self._executed, self._prepared = self._executed, None, None
        ahead = executed is not None and executed.key == self._execution_key(req.height, time_ns, info, req.txs)
        if ahead:
            ctx, results = executed.ctx, executed.results
        else:
            ctx = self._begin(req.height, time_ns, info)
            results = [runtime.execute(ctx, raw) for raw in req.txs]
        response = self._finish(ctx, info, results)
        self._block, self._block_height = ctx.state, req.height
        metrics.record_block(req.height, response, executed_ahead=ahead)  # operator metrics: reads the response, never raises
        return response

    # --- Commit: persist what FinalizeBlock executed ----------------------------

    def commit(self, req: abci.RequestCommit) -> abci.ResponseCommit:
        assert self._block is not None, "Commit without FinalizeBlock"
        app_hash = self.store.commit(self._block, self._block_height, protect=self.snapshots.heights())
        log.info("committed height %d app hash %s", self._block_height, app_hash.hex().upper())
        self._genesis, self._block, self._prepared, self._executed = None, None, None, None
        self._check_state = self.store.begin_block()  # CheckTx(RECHECK) rebuilds the mempool view
        try:
            self.snapshots.maybe_take(self.store)
        except Exception:  # the block is committed; a missed snapshot only costs joining nodes
            log.exception("could not start the snapshot at height %d; skipped", self._block_height)
        return abci.ResponseCommit(retain_height=0)

    # --- Query: read committed state, at a height, with a Merkle proof ----------

    def query(self, req: abci.RequestQuery) -> abci.ResponseQuery:
        """Any path, data and height gets an answer: a bad argument is BadQuery, and
        anything unexpected is logged and answered with the internal code, never raised."""
        try:
            return self._query(req)
        except Exception:
            log.exception("internal error in Query %r", req.path[:runtime.MAX_QUERY_PATH])
            return abci.ResponseQuery(code=runtime.Internal.code, codespace="runtime", log="internal error (see the node's log)")

    def _query(self, req: abci.RequestQuery) -> abci.ResponseQuery:
        latest = self.store.height
        if not 0 <= req.height <= latest:
            return abci.ResponseQuery(code=runtime.BadQuery.code, codespace="runtime", log=f"no committed state at height {req.height} (latest is {latest})")
        try:
            key, view = runtime.resolve_query(req.path, req.data, self.store.begin_block(), next_height=latest + 1)
        except ModuleError as exc:
            return abci.ResponseQuery(code=exc.code, codespace=exc.codespace, log=exc.log)
        if key is None:  # a computed view of the latest state: no proof, no history
            return abci.ResponseQuery(value=view, height=latest)
        try:
            result = self.store.query(key, height=req.height, prove=req.prove)
        except HeightUnavailable as exc:  # pruned, before a restored snapshot, or never committed
            return abci.ResponseQuery(code=runtime.BadQuery.code, codespace="runtime", log=str(exc))
        response = abci.ResponseQuery(key=key, value=result.value or b"", height=result.height)
        if result.proof is not None:
            op = proof_pb2.ProofOp(type=PROOF_OP_TYPE, key=key, data=rlp.encode(result.proof))
            response.proof_ops.ops.append(op)
        return response

    # --- State sync: serving our snapshots (snapshot connection) -----------------

    def list_snapshots(self, req: abci.RequestListSnapshots) -> abci.ResponseListSnapshots:
        """A peer's state sync asks what we have: our complete snapshots, newest first. Never raises."""
        try:
            return abci.ResponseListSnapshots(snapshots=self.snapshots.list())
        except Exception:
            log.exception("internal error in ListSnapshots")
            return abci.ResponseListSnapshots()

    def load_snapshot_chunk(self, req: abci.RequestLoadSnapshotChunk) -> abci.ResponseLoadSnapshotChunk:
        """A peer fetches one chunk; empty (CometBFT's "missing") when we no longer have it. Never raises."""
        try:
            return abci.ResponseLoadSnapshotChunk(chunk=self.snapshots.load_chunk(req.height, req.format, req.chunk))
        except Exception:
            log.exception("internal error in LoadSnapshotChunk")
            return abci.ResponseLoadSnapshotChunk()

    # --- State sync: restoring one (a new node, instead of InitChain and replay) -

    def offer_snapshot(self, req: abci.RequestOfferSnapshot) -> abci.ResponseOfferSnapshot:
        """CometBFT offers a peer's snapshot with the app hash of its height, taken from a
        light-client-verified header. ACCEPT our format with sane metadata into an empty store."""
        try:
            self._end_restore()  # a new offer replaces any restore in progress
            result, why = snapshots.check_offer(self.store, req, self.snapshots.settings.restore_max_bytes)
            if result == abci.ResponseOfferSnapshot.ACCEPT:
                self._restore = Restore(self.store, req.snapshot, req.app_hash)
        except Exception:  # REJECT, not ABORT: ABORT ends CometBFT's state sync for good
            log.exception("internal error in OfferSnapshot")
            return abci.ResponseOfferSnapshot(result=abci.ResponseOfferSnapshot.REJECT)
        log.info("OfferSnapshot at height %d (format %d, %d chunks): %s", req.snapshot.height, req.snapshot.format, req.snapshot.chunks, why)
        return abci.ResponseOfferSnapshot(result=result)

    def apply_snapshot_chunk(self, req: abci.RequestApplySnapshotChunk) -> abci.ResponseApplySnapshotChunk:
        """Chunks of the accepted snapshot, in order. A chunk failing its digest is refetched from
        another peer; after the last, the state is committed only if its root is the verified app hash."""
        Apply = abci.ResponseApplySnapshotChunk
        if self._restore is None:
            log.error("ApplySnapshotChunk %d without an accepted snapshot", req.index)
            return Apply(result=Apply.RETRY_SNAPSHOT)  # CometBFT offers the snapshot again; ABORT would end state sync
        try:
            response, why = self._restore.apply(req)
        except Exception as exc:  # a peer's bytes never end state sync (ABORT): drop the snapshot and its peers
            log.exception("internal error applying snapshot chunk %d", req.index)
            response, why = self._restore.reject(f"internal error: {exc!r}")
        done = response.result != Apply.ACCEPT or self._restore.next_index == len(self._restore.digests)
        if response.result in (Apply.ACCEPT, Apply.RETRY):
            log.log(logging.INFO if response.result == Apply.ACCEPT else logging.WARNING, "ApplySnapshotChunk: %s", why)
        else:
            log.error("ApplySnapshotChunk: %s (%s)", why, Apply.Result.Name(response.result))
        if done and response.result != Apply.RETRY:
            self._end_restore()
            if response.result == Apply.ACCEPT:
                self._restored()
        return response

    def _restored(self) -> None:
        """The store holds a restored height: start the next block, the mempool and proposals from it."""
        self._genesis, self._block, self._prepared, self._executed = None, None, None, None
        self._check_state = self.store.begin_block()
