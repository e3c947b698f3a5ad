"""The fast path of a tx (issue 13): each signature verified once per node, a cache that can only
skip work, the proposer's own proposal not re-executed, a block executed once per node (FinalizeBlock
hands over what ProcessProposal executed), committed values cached coherently."""

from __future__ import annotations

import hashlib
import json

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from abci_app import crypto, runtime
from abci_app.modules import bank
from abci_app import tx as txlib
from abci_app.app import Application
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.state import Store
from tests.fuzz_harness import preparation_of, proposal_of
from tests.unit.conftest import fixed_key

CHAIN = "fast-path"
TIME = Timestamp(seconds=1_700_000_100)


def make_app(home, keys) -> Application:
    app = Application(home)
    state = {"bank": {"params": {"min_fee": 1}, "balances": [{"address": k.address, "amount": 10_000} for k in keys]}}
    app.init_chain(abci.RequestInitChain(chain_id=CHAIN, app_state_bytes=json.dumps(state).encode(), initial_height=1))
    return app


def block_requests(txs: list[bytes], height: int = 1):
    prepare = abci.RequestPrepareProposal(txs=txs, height=height, time=TIME, max_tx_bytes=10**7)
    process = abci.RequestProcessProposal(txs=txs, height=height, time=TIME)
    finalize = abci.RequestFinalizeBlock(txs=txs, height=height, time=TIME, hash=hashlib.sha256(b"%d" % height).digest())
    return prepare, process, finalize


def mixed_txs(keys) -> list[bytes]:
    """Valid transfers, a forged signature, a wrong chain id, a gap in nonces, a duplicate and non-canonical twins."""
    sink = crypto.PrivateKey(b"\x09" * 32).address
    txs = [txlib.build(keys[i % 3], CHAIN, i // 3, 1, txlib.MsgSend(recipient=sink, amount=5)) for i in range(9)]
    envelope = txlib.Tx.FromString(txs[0])
    forged = txlib.Tx(body=envelope.body, pubkey=envelope.pubkey, signature=bytes(64)).SerializeToString(deterministic=True)
    other_chain = txlib.build(keys[0], "another-chain", 3, 1, txlib.MsgSend(recipient=sink, amount=5))
    gap = txlib.build(keys[1], CHAIN, 9, 1, txlib.MsgSend(recipient=sink, amount=5))
    # Re-encodings of a valid tx (its twin is verified first): an unknown field, a repeated field.
    unknown_field = txs[1] + b"\x78\x01"
    repeated_field = txs[1] + b"\x12\x20" + envelope.pubkey
    return txs + [forged, other_chain, gap, txs[4], unknown_field, repeated_field]


def test_a_cache_miss_gives_the_same_outcome_as_a_hit(tmp_path):
    """The same txs through CheckTx and a block on two nodes: one keeps what it verified, the other
    forgets before every call. Every answer, result, event and app hash is the same."""
    keys = [fixed_key(i) for i in range(1, 4)]
    txs = mixed_txs(keys)
    warm, cold = make_app(tmp_path / "warm", keys), make_app(tmp_path / "cold", keys)
    answers = {}
    for name, app in (("warm", warm), ("cold", cold)):
        runtime.VERIFIED.clear()

        def call(method, request):
            if app is cold:
                runtime.VERIFIED.clear()
            return getattr(app, method)(request)

        checks = [call("check_tx", abci.RequestCheckTx(tx=raw)) for raw in txs]
        prepare, process, finalize = block_requests(txs)
        proposal = call("prepare_proposal", prepare)
        processed = call("process_proposal", abci.RequestProcessProposal(txs=proposal.txs, height=1, time=TIME))
        app._prepared = None  # the same proposal as a node that did not build it, executed in full
        reprocessed = call("process_proposal", abci.RequestProcessProposal(txs=proposal.txs, height=1, time=TIME))
        everything = call("process_proposal", process)  # the raw list, bad txs included: refused
        finalized = call("finalize_block", finalize)
        call("commit", abci.RequestCommit())
        rechecks = [call("check_tx", abci.RequestCheckTx(tx=raw, type=abci.CheckTxType.RECHECK)) for raw in txs]
        assert (processed.status, reprocessed.status, everything.status) == (abci.ResponseProcessProposal.ACCEPT,
                                                                             abci.ResponseProcessProposal.ACCEPT,
                                                                             abci.ResponseProcessProposal.REJECT)
        answers[name] = ([c.SerializeToString() for c in checks], list(proposal.txs), processed.status,
                         finalized.SerializeToString(deterministic=True), [c.SerializeToString() for c in rechecks])
    assert answers["warm"] == answers["cold"]
    codes = [c.code for c in abci.ResponseFinalizeBlock.FromString(answers["warm"][3]).tx_results]
    assert codes[:9] == [0] * 9 and codes[9:12] == [runtime.BadSignature.code, runtime.WrongChainId.code, 5]
    assert codes[13:] == [runtime.MalformedTx.code, runtime.MalformedTx.code]
    warm.close()
    cold.close()


def test_each_signature_is_verified_once_per_node(tmp_path, monkeypatch):
    """CheckTx, RECHECK, PrepareProposal, ProcessProposal and FinalizeBlock: one verification per tx."""
    keys = [fixed_key(i) for i in range(1, 4)]
    sink = crypto.PrivateKey(b"\x09" * 32).address
    first = [txlib.build(keys[i % 3], CHAIN, i // 3, 1, txlib.MsgSend(recipient=sink, amount=5)) for i in range(12)]
    later = [txlib.build(keys[i % 3], CHAIN, 4 + i // 3, 1, txlib.MsgSend(recipient=sink, amount=5)) for i in range(6)]
    app = make_app(tmp_path / "app", keys)
    runtime.VERIFIED.clear()
    verified: list[bytes] = []
    real_verify = crypto.verify
    monkeypatch.setattr(crypto, "verify", lambda pubkey, message, signature: verified.append(signature) or real_verify(pubkey, message, signature))
    for raw in first + later:
        assert app.check_tx(abci.RequestCheckTx(tx=raw)).code == 0
    prepare, process, finalize = block_requests(first)
    app.prepare_proposal(prepare)
    app.process_proposal(process)
    assert all(r.code == 0 for r in app.finalize_block(finalize).tx_results)
    app.commit(abci.RequestCommit())
    for raw in later:
        assert app.check_tx(abci.RequestCheckTx(tx=raw, type=abci.CheckTxType.RECHECK)).code == 0
    assert len(verified) == len(first) + len(later) == len(set(verified))
    app.close()


def test_a_forged_signature_is_checked_every_time_and_never_remembered(tmp_path, monkeypatch):
    keys = [fixed_key(1)]
    envelope = txlib.Tx.FromString(txlib.build(keys[0], CHAIN, 0, 1, txlib.MsgSend(recipient=keys[0].address, amount=1)))
    forged = txlib.Tx(body=envelope.body, pubkey=envelope.pubkey, signature=b"\x01" * 64).SerializeToString(deterministic=True)
    app = make_app(tmp_path / "app", keys)
    runtime.VERIFIED.clear()
    for _ in range(3):
        assert app.check_tx(abci.RequestCheckTx(tx=forged)).code == runtime.BadSignature.code
    assert hashlib.sha256(forged).digest() not in runtime.VERIFIED
    app.close()


def test_simulate_checks_no_signature_and_so_remembers_none(tmp_path):
    key = fixed_key(1)
    app = make_app(tmp_path / "app", [key])
    app.finalize_block(block_requests([])[2])
    app.commit(abci.RequestCommit())
    runtime.VERIFIED.clear()
    unsigned = txlib.build_unsigned(key.pubkey, CHAIN, 0, 1, txlib.MsgSend(recipient=key.address, amount=1))
    answer = app.query(abci.RequestQuery(path="/app/simulate", data=unsigned))
    assert answer.code == 0 and json.loads(answer.value)["code"] == 0
    assert hashlib.sha256(unsigned).digest() not in runtime.VERIFIED
    assert app.check_tx(abci.RequestCheckTx(tx=unsigned)).code == runtime.BadSignature.code
    app.close()


def test_the_cache_is_bounded_oldest_out_first():
    cache = runtime.VerifiedTxs(max_entries=3)
    for i in range(5):
        cache.add(bytes([i]) * 32)
    assert [bytes([i]) * 32 in cache for i in range(5)] == [False, False, True, True, True]


def test_our_own_proposal_is_accepted_without_executing_it_again_and_any_other_is_executed(tmp_path, monkeypatch):
    keys = [fixed_key(i) for i in range(1, 3)]
    sink = crypto.PrivateKey(b"\x09" * 32).address
    txs = [txlib.build(keys[i % 2], CHAIN, i // 2, 1, txlib.MsgSend(recipient=sink, amount=5)) for i in range(6)]
    app = make_app(tmp_path / "app", keys)
    admitted: list[str] = []
    real_admit = runtime.admit
    monkeypatch.setattr(runtime, "admit", lambda ctx, raw, mode: admitted.append(mode) or real_admit(ctx, raw, mode))
    prepare, process, _ = block_requests(txs)
    proposal = app.prepare_proposal(prepare)
    assert list(proposal.txs) == txs and admitted.count(runtime.PREPARE) == 6
    assert app.process_proposal(abci.RequestProcessProposal(txs=proposal.txs, height=1, time=TIME)).status == abci.ResponseProcessProposal.ACCEPT
    assert runtime.PROCESS not in admitted
    # Another proposal at the same height (a later round, another proposer) is judged in full:
    # here a sender's nonces out of order, which must be refused.
    swapped = [txs[2], txs[0], *txs[3:]]
    assert app.process_proposal(abci.RequestProcessProposal(txs=swapped, height=1, time=TIME)).status == abci.ResponseProcessProposal.REJECT
    assert runtime.PROCESS in admitted
    # The same txs at another time are not our proposal either: executed, and valid.
    admitted.clear()
    later = Timestamp(seconds=TIME.seconds + 1)
    assert app.process_proposal(abci.RequestProcessProposal(txs=txs, height=1, time=later)).status == abci.ResponseProcessProposal.ACCEPT
    assert admitted.count(runtime.PROCESS) == 6
    app.close()


# --- optimistic execution: FinalizeBlock hands over the block the proposal calls executed ---------------------


def decided(txs: list[bytes], height: int, seconds: int = TIME.seconds) -> abci.RequestFinalizeBlock:
    """A decided block with everything begin_block and end_block read: proposer, hash, last commit, evidence."""
    return abci.RequestFinalizeBlock(
        txs=txs, height=height, time=Timestamp(seconds=seconds), proposer_address=b"\x07" * 20,
        hash=hashlib.sha256(b"block %d %d" % (height, seconds)).digest(),
        decided_last_commit=abci.CommitInfo(votes=[abci.VoteInfo(validator=abci.Validator(address=b"\x05" * 20, power=10), block_id_flag=1)]),
        misbehavior=[abci.Misbehavior(type=abci.DUPLICATE_VOTE, validator=abci.Validator(address=b"\x06" * 20, power=3), height=1)],
    )


def transfers(keys, first_nonce: int) -> list[bytes]:
    """Four transfers from each of two keys, the last of which overdraws (its message fails, its fee is paid)."""
    sink = crypto.PrivateKey(b"\x09" * 32).address
    txs = [txlib.build(keys[i % 2], CHAIN, first_nonce + i // 2, 1, txlib.MsgSend(recipient=sink, amount=5)) for i in range(6)]
    return txs + [txlib.build(keys[1], CHAIN, first_nonce + 3, 1, txlib.MsgSend(recipient=sink, amount=5)),
                  txlib.build(keys[0], CHAIN, first_nonce + 3, 1, txlib.MsgSend(recipient=sink, amount=10**9))]


@pytest.fixture
def counted_admits(monkeypatch) -> list[str]:
    """The mode of every runtime.admit call (DELIVER: a tx FinalizeBlock executed itself)."""
    modes: list[str] = []
    real_admit = runtime.admit
    monkeypatch.setattr(runtime, "admit", lambda ctx, raw, mode: modes.append(mode) or real_admit(ctx, raw, mode))
    return modes


def finalized_alone(home, keys, blocks: list[abci.RequestFinalizeBlock]) -> list[bytes]:
    """What a node that saw no proposal answers for each block (it executes each in FinalizeBlock), and its app hash."""
    app = make_app(home, keys)
    answers = []
    for block in blocks:
        answers.append(app.finalize_block(block).SerializeToString(deterministic=True))
        app.commit(abci.RequestCommit())
    answers.append(app.store.app_hash)
    app.close()
    return answers


def test_finalize_block_hands_over_the_block_process_proposal_executed(tmp_path, counted_admits):
    """Blocks 1 (on InitChain's writes) and 2: ProcessProposal executes, FinalizeBlock executes no tx again, and every
    answer and the committed app hash equal those of a node that executed the blocks in FinalizeBlock."""
    keys = [fixed_key(i) for i in range(1, 3)]
    blocks = [decided(transfers(keys, 0), 1), decided(transfers(keys, 4), 2)]
    app = make_app(tmp_path / "ahead", keys)
    answers = []
    for block in blocks:
        assert app.process_proposal(proposal_of(block)).status == abci.ResponseProcessProposal.ACCEPT
        counted_admits.clear()
        response = app.finalize_block(block)
        assert runtime.DELIVER not in counted_admits
        assert response.tx_results[-1].code == bank.InsufficientBalance.code  # the overdraft failed as it would have
        answers.append(response.SerializeToString(deterministic=True))
        app.commit(abci.RequestCommit())
    answers.append(app.store.app_hash)
    app.close()
    assert answers == finalized_alone(tmp_path / "alone", keys, blocks)


def test_our_own_proposal_is_finished_from_prepare_proposal(tmp_path, counted_admits):
    keys = [fixed_key(i) for i in range(1, 3)]
    block = decided(transfers(keys, 0), 1)
    app = make_app(tmp_path / "proposer", keys)
    assert list(app.prepare_proposal(preparation_of(block)).txs) == list(block.txs)
    assert app.process_proposal(proposal_of(block)).status == abci.ResponseProcessProposal.ACCEPT
    response = app.finalize_block(block)
    assert counted_admits == [runtime.PREPARE] * len(block.txs)  # executed once, while building the proposal
    app.commit(abci.RequestCommit())
    answers = [response.SerializeToString(deterministic=True), app.store.app_hash]
    app.close()
    assert answers == finalized_alone(tmp_path / "alone", keys, [block])


@pytest.mark.parametrize("change", ["time", "hash", "last commit", "evidence", "proposer", "a rejected proposal in between"])
def test_a_block_other_than_the_one_executed_is_executed_in_full(tmp_path, counted_admits, change):
    """The decided block differs from the one ProcessProposal executed (another round's, say) in one respect: FinalizeBlock
    executes it itself, and answers as a node that saw no proposal."""
    keys = [fixed_key(i) for i in range(1, 3)]
    processed = decided(transfers(keys, 0), 1)
    block = abci.RequestFinalizeBlock()
    block.CopyFrom(processed)
    if change == "time":
        block.time.seconds += 1
    elif change == "hash":
        block.hash = bytes(32)
    elif change == "last commit":
        block.decided_last_commit.votes[0].block_id_flag = 2
    elif change == "evidence":
        del block.misbehavior[:]
    elif change == "proposer":
        block.proposer_address = b"\x08" * 20
    app = make_app(tmp_path / "app", keys)
    assert app.process_proposal(proposal_of(processed)).status == abci.ResponseProcessProposal.ACCEPT
    if change == "a rejected proposal in between":
        bad = proposal_of(processed)
        bad.txs.append(b"junk")
        assert app.process_proposal(bad).status == abci.ResponseProcessProposal.REJECT
    counted_admits.clear()
    answer = app.finalize_block(block).SerializeToString(deterministic=True)
    assert counted_admits == [runtime.DELIVER] * len(block.txs)
    app.commit(abci.RequestCommit())
    answers = [answer, app.store.app_hash]
    app.close()
    assert answers == finalized_alone(tmp_path / "alone", keys, [block])


def test_a_bug_in_end_block_does_not_turn_into_a_rejected_proposal(tmp_path, monkeypatch):
    """Every tx was admitted, so ProcessProposal accepts (rejecting would stall the chain without a word);
    FinalizeBlock then executes the block itself and meets the bug, as every node would."""
    keys = [fixed_key(1)]
    block = decided([txlib.build(keys[0], CHAIN, 0, 1, txlib.MsgSend(recipient=keys[0].address, amount=1))], 1)
    app = make_app(tmp_path / "app", keys)
    monkeypatch.setattr(runtime, "end_block", lambda ctx: 1 / 0)
    assert app.process_proposal(proposal_of(block)).status == abci.ResponseProcessProposal.ACCEPT
    with pytest.raises(ZeroDivisionError):
        app.finalize_block(block)
    app.close()


def test_a_bug_in_begin_block_halts_the_chain_in_finalize_block_not_in_silent_rejections(tmp_path, monkeypatch):
    """The proposal calls judge the txs without begin_block (it touches no nonce, fee or liquid balance) and keep
    nothing, so FinalizeBlock meets the bug on every node: a halt that shows, as before the proposal calls ran it."""
    keys = [fixed_key(1)]
    block = decided([txlib.build(keys[0], CHAIN, 0, 1, txlib.MsgSend(recipient=keys[0].address, amount=1))], 1)
    app = make_app(tmp_path / "app", keys)
    monkeypatch.setattr(runtime, "begin_block", lambda ctx: 1 / 0)
    assert list(app.prepare_proposal(preparation_of(block)).txs) == list(block.txs)
    assert app.process_proposal(proposal_of(block)).status == abci.ResponseProcessProposal.ACCEPT
    assert app._prepared is None and app._executed is None
    with pytest.raises(ZeroDivisionError):
        app.finalize_block(block)
    app.close()


@pytest.mark.parametrize("path", ["our own proposal", "another's proposal", "a block first seen in FinalizeBlock"])
def test_begin_block_and_txs_never_see_the_block_hash_and_end_block_always_does(tmp_path, monkeypatch, path):
    """PrepareProposal cannot know the hash, so no path shows it before end_block: otherwise a module reading it
    there would make the proposer's app hash differ from everyone else's."""
    keys = [fixed_key(1)]
    block = decided([txlib.build(keys[0], CHAIN, 0, 1, txlib.MsgSend(recipient=keys[0].address, amount=1))], 1)
    seen: list[tuple[str, bytes]] = []
    real_begin, real_end = runtime.begin_block, runtime.end_block
    monkeypatch.setattr(runtime, "begin_block", lambda ctx: seen.append(("begin", ctx.block.hash)) or real_begin(ctx))
    monkeypatch.setattr(runtime, "end_block", lambda ctx: seen.append(("end", ctx.block.hash)) or real_end(ctx))
    app = make_app(tmp_path / "app", keys)
    if path == "our own proposal":
        app.prepare_proposal(preparation_of(block))
    if path != "a block first seen in FinalizeBlock":
        assert app.process_proposal(proposal_of(block)).status == abci.ResponseProcessProposal.ACCEPT
    app.finalize_block(block)
    app.close()
    assert seen == [("begin", b""), ("end", block.hash)]


def test_a_fork_of_a_block_overlay_is_independent_of_it(tmp_path):
    store = Store(tmp_path / "state.sqlite")
    genesis = store.begin_block()
    genesis.set(b"a", b"1")
    root = genesis.app_hash()
    first, second = genesis.fork(), genesis.fork()
    first.set(b"b", b"2")
    second.set(b"a", b"3")
    assert (genesis.get(b"b"), genesis.get(b"a"), genesis.app_hash()) == (None, b"1", root)
    assert (first.get(b"a"), second.get(b"b")) == (b"1", None)
    assert first.app_hash() != root != second.app_hash()
    straight = store.begin_block()
    straight.set(b"a", b"1")
    straight.set(b"b", b"2")
    assert straight.app_hash() == first.app_hash()
    assert store.commit(first, 1) == straight.app_hash()
    store.close()


@pytest.mark.parametrize("reopen", [False, True])
def test_cached_committed_values_follow_every_commit(tmp_path, reopen):
    store = Store(tmp_path / "state.sqlite")
    block = store.begin_block()
    block.set(b"k/a", b"1")
    block.set(b"k/b", b"2")
    store.commit(block, 1)
    assert store.begin_block().get(b"k/a") == b"1" and store.begin_block().get(b"k/c") is None  # now cached, absence too
    block = store.begin_block()
    block.delete(b"k/a")
    block.set(b"k/c", b"3")
    store.commit(block, 2)
    if reopen:
        store.close()
        store = Store(tmp_path / "state.sqlite")
    view = store.begin_block()
    assert (view.get(b"k/a"), view.get(b"k/b"), view.get(b"k/c")) == (None, b"2", b"3")
    assert list(view.iter_prefix(b"k/")) == [(b"k/b", b"2"), (b"k/c", b"3")]
    store.close()


def test_a_block_reports_its_txs_events_in_their_results_only(tmp_path):
    """A transfer's events are in its tx result; the block's own events are its hooks' (none here)."""
    keys = [fixed_key(1)]
    app = make_app(tmp_path / "app", keys)
    raw = txlib.build(keys[0], CHAIN, 0, 1, txlib.MsgSend(recipient=crypto.PrivateKey(b"\x09" * 32).address, amount=5))
    response = app.finalize_block(block_requests([raw])[2])
    assert [e.type for e in response.tx_results[0].events] == ["fee_paid", "message", "transfer"]
    assert [e.type for e in response.events] == []
    app.close()
