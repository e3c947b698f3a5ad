"""State sync: snapshots are deterministic, restore through the ABCI calls only into verified state,
and a restored node then executes blocks to the same app hashes as a node that replayed them."""

import hashlib
import random
import threading

import pytest
import rlp

from abci_app import snapshots
from abci_app.abci.server import handle
from abci_app.app import Application
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.snapshots import SnapshotSettings
from abci_app.state import Pruning, verify_proof
from abci_app.modules import bank
from tests.unit.conftest import Chain

Offer = abci.ResponseOfferSnapshot
Apply = abci.ResponseApplySnapshotChunk
SMALL_CHUNKS = SnapshotSettings(interval=4, keep_recent=2, chunk_bytes=256)  # several chunks from a small state


def snapshotting_chain(home, keys, settings=SMALL_CHUNKS, pruning=Pruning()) -> Chain:
    chain = Chain(home, {k.address: 10_000 for k in keys})
    chain.app.close()
    chain.app = Application(home, settings, pruning)
    return chain


def transfers(chain: Chain, keys, rng: random.Random, count: int = 6) -> list[bytes]:
    return [chain.send_tx(*_pair(keys, rng), rng.randrange(1, 50)) for _ in range(count)]


def _pair(keys, rng):
    sender, recipient = rng.sample(keys, 2)
    return sender, recipient.address


def recorded_blocks(chain: Chain, keys, rng, blocks: int, settle: bool = True) -> list[abci.RequestFinalizeBlock]:
    """Run blocks on chain and return the FinalizeBlock requests, to feed another node the same blocks.
    settle: wait for each snapshot after its block, so none is skipped for one still being written."""
    seen = []
    finalize = chain.app.finalize_block

    def record(req):
        seen.append(req)
        return finalize(req)

    chain.app.finalize_block = record
    try:
        for _ in range(blocks):
            chain.block(transfers(chain, keys, rng))
            if settle:
                chain.app.snapshots.wait()
    finally:
        del chain.app.finalize_block
    return seen


def newest_snapshot(app: Application) -> abci.Snapshot:
    app.snapshots.wait()
    return app.list_snapshots(abci.RequestListSnapshots()).snapshots[0]


def chunks_of(app: Application, snapshot: abci.Snapshot) -> list[bytes]:
    return [app.load_snapshot_chunk(abci.RequestLoadSnapshotChunk(height=snapshot.height, format=snapshot.format, chunk=i)).chunk
            for i in range(snapshot.chunks)]


def offer(app: Application, snapshot: abci.Snapshot, app_hash: bytes) -> int:
    return app.offer_snapshot(abci.RequestOfferSnapshot(snapshot=snapshot, app_hash=app_hash)).result


def apply(app: Application, index: int, chunk: bytes, sender: str = "peer-a") -> abci.ResponseApplySnapshotChunk:
    return app.apply_snapshot_chunk(abci.RequestApplySnapshotChunk(index=index, chunk=chunk, sender=sender))


@pytest.fixture
def served(tmp_path, keys):
    """A node that took a snapshot at height 8, and that snapshot with its verified app hash and chunks."""
    chain = snapshotting_chain(tmp_path / "a", keys)
    recorded_blocks(chain, keys, random.Random(1), blocks=7)  # heights 2..8
    snapshot = newest_snapshot(chain.app)
    assert snapshot.height == 8 and snapshot.chunks > 2
    yield chain, snapshot, chain.app.store.root_at(8), chunks_of(chain.app, snapshot)
    chain.app.close()


def restore(app: Application, snapshot, app_hash, chunks) -> list[int]:
    assert offer(app, snapshot, app_hash) == Offer.ACCEPT
    return [apply(app, i, chunk).result for i, chunk in enumerate(chunks)]


def test_restored_node_executes_the_next_blocks_like_a_replaying_node(tmp_path, keys, served):
    chain, snapshot, app_hash, chunks = served
    restored = Application(tmp_path / "b", SMALL_CHUNKS)
    assert restore(restored, snapshot, app_hash, chunks) == [Apply.ACCEPT] * snapshot.chunks
    info = restored.info(abci.RequestInfo())
    assert (info.last_block_height, info.last_block_app_hash) == (8, app_hash)
    for key in keys:  # serves queries, with proofs, at the restored height
        answer = restored.query(abci.RequestQuery(path="/bank/balance", data=key.address.encode(), prove=True))
        assert (answer.code, answer.height, answer.value) == (0, 8, chain.query("/bank/balance", key.address, height=8).value)
        assert verify_proof(app_hash, bank.balance_key(key.address), answer.value, rlp.decode(answer.proof_ops.ops[0].data))
    for req in recorded_blocks(chain, keys, random.Random(2), blocks=6):  # heights 9..14, snapshot at 12 on both
        assert restored.finalize_block(req).app_hash == chain.app.store.root_at(req.height)
        restored.commit(abci.RequestCommit())
        restored.snapshots.wait()
    assert restored.store.app_hash == chain.app.store.app_hash
    # and the restored node's own snapshot at 12 is byte-identical to the replaying node's
    assert newest_snapshot(restored) == newest_snapshot(chain.app)
    assert chunks_of(restored, newest_snapshot(restored)) == chunks_of(chain.app, newest_snapshot(chain.app))
    restored.close()


def test_snapshots_are_identical_across_nodes(tmp_path, keys):
    one, two = snapshotting_chain(tmp_path / "one", keys), snapshotting_chain(tmp_path / "two", keys)
    for req in recorded_blocks(one, keys, random.Random(3), blocks=7):
        two.app.finalize_block(req)
        two.app.commit(abci.RequestCommit())
        two.app.snapshots.wait()
    assert newest_snapshot(one.app) == newest_snapshot(two.app)
    assert chunks_of(one.app, newest_snapshot(one.app)) == chunks_of(two.app, newest_snapshot(two.app))
    one.app.close()
    two.app.close()


def test_snapshot_holds_its_height_while_later_blocks_commit(tmp_path, keys):
    chain = snapshotting_chain(tmp_path / "a", keys)
    recorded_blocks(chain, keys, random.Random(4), blocks=2)  # heights 2, 3
    go = threading.Event()
    take = chain.app.snapshots._take
    chain.app.snapshots._take = lambda reader, height: (go.wait(), take(reader, height))
    recorded_blocks(chain, keys, random.Random(5), blocks=3, settle=False)  # 4 (snapshot starts, then waits), 5, 6
    go.set()
    snapshot = newest_snapshot(chain.app)
    assert snapshot.height == 4
    restored = Application(tmp_path / "b")
    assert restore(restored, snapshot, chain.app.store.root_at(4), chunks_of(chain.app, snapshot))[-1] == Apply.ACCEPT
    assert restored.store.app_hash == chain.app.store.root_at(4) != chain.app.store.app_hash
    restored.close()
    chain.app.close()


def test_tampered_chunk_is_refetched_from_another_peer(tmp_path, served):
    _, snapshot, app_hash, chunks = served
    restored = Application(tmp_path / "b")
    assert offer(restored, snapshot, app_hash) == Offer.ACCEPT
    assert apply(restored, 0, chunks[0]).result == Apply.ACCEPT
    tampered = chunks[1][:-1] + bytes([chunks[1][-1] ^ 1])
    answer = apply(restored, 1, tampered, sender="liar")
    assert (answer.result, list(answer.refetch_chunks), list(answer.reject_senders)) == (Apply.RETRY, [1], ["liar"])
    assert restored.store.is_empty()
    assert [apply(restored, i, chunks[i]).result for i in range(1, len(chunks))] == [Apply.ACCEPT] * (len(chunks) - 1)
    assert restored.info(abci.RequestInfo()).last_block_app_hash == app_hash
    restored.close()


def test_wrong_app_hash_is_rejected_and_leaves_the_store_empty(tmp_path, served):
    _, snapshot, app_hash, chunks = served
    restored = Application(tmp_path / "b")
    results = restore(restored, snapshot, hashlib.sha256(b"not the header's").digest(), chunks)
    assert results == [Apply.ACCEPT] * (len(chunks) - 1) + [Apply.REJECT_SNAPSHOT]
    assert restored.store.is_empty()
    info = restored.info(abci.RequestInfo())
    assert (info.last_block_height, info.last_block_app_hash) == (0, b"")
    assert restore(restored, snapshot, app_hash, chunks)[-1] == Apply.ACCEPT  # the next offer starts clean
    restored.close()


def test_consistent_but_false_snapshot_is_rejected(tmp_path, served):
    """A peer may list digests of chunks it made up: only the verified app hash decides."""
    chain, snapshot, app_hash, chunks = served
    entries = [(k, v) for i in range(snapshot.chunks) for k, v in snapshots.decode_chunk(i, chunks[i])]
    entries[0] = (entries[0][0], b"999999999")  # one value changed
    forged = list(snapshots.encode_chunks(entries, SMALL_CHUNKS.chunk_bytes))
    metadata = snapshots.metadata_of(forged)
    fake = abci.Snapshot(height=8, format=1, chunks=len(forged), hash=hashlib.sha256(metadata).digest(), metadata=metadata)
    restored = Application(tmp_path / "b")
    assert restore(restored, fake, app_hash, forged)[-1] == Apply.REJECT_SNAPSHOT
    assert restored.store.is_empty()
    restored.close()


def test_malformed_chunk_matching_its_digest_rejects_the_snapshot(tmp_path, served):
    _, _, app_hash, _ = served
    garbage = [snapshots.CHUNK_MAGIC + (0).to_bytes(4, "big") + b"\x00\x00\x00\x09short"]
    metadata = snapshots.metadata_of(garbage)
    fake = abci.Snapshot(height=8, format=1, chunks=1, hash=hashlib.sha256(metadata).digest(), metadata=metadata)
    restored = Application(tmp_path / "b")
    assert restore(restored, fake, app_hash, garbage) == [Apply.REJECT_SNAPSHOT]
    assert restored.store.is_empty()
    restored.close()


def test_bad_offers_are_refused(tmp_path, served):
    chain, snapshot, app_hash, _ = served
    fresh = Application(tmp_path / "b")

    def changed(**fields):
        copy = abci.Snapshot()
        copy.CopyFrom(snapshot)
        for name, value in fields.items():
            setattr(copy, name, value)
        return copy

    assert offer(fresh, changed(format=2), app_hash) == Offer.REJECT_FORMAT
    assert offer(fresh, changed(chunks=0, metadata=b""), app_hash) == Offer.REJECT
    assert offer(fresh, changed(chunks=snapshots.MAX_CHUNKS + 1), app_hash) == Offer.REJECT
    assert offer(fresh, changed(metadata=snapshot.metadata[:-1]), app_hash) == Offer.REJECT
    assert offer(fresh, changed(hash=b"\x00" * 32), app_hash) == Offer.REJECT
    assert offer(fresh, changed(height=0), app_hash) == Offer.REJECT
    assert offer(fresh, snapshot, app_hash[:31]) == Offer.REJECT
    assert offer(chain.app, snapshot, app_hash) == Offer.REJECT  # a node with state does not restore over it
    assert fresh.store.is_empty()
    fresh.close()


def test_chunks_out_of_order_or_unoffered_are_refused(tmp_path, served):
    _, snapshot, app_hash, chunks = served
    fresh = Application(tmp_path / "b")
    assert apply(fresh, 0, chunks[0]).result == Apply.RETRY_SNAPSHOT  # no offer accepted: CometBFT offers again
    assert offer(fresh, snapshot, app_hash) == Offer.ACCEPT
    assert apply(fresh, 1, chunks[1]).result == Apply.RETRY_SNAPSHOT
    assert apply(fresh, 0, chunks[0]).result == Apply.RETRY_SNAPSHOT  # the restore was dropped; CometBFT re-offers
    assert restore(fresh, snapshot, app_hash, chunks)[-1] == Apply.ACCEPT
    assert apply(fresh, 0, chunks[0]).result == Apply.RETRY_SNAPSHOT  # done: nothing more to apply
    fresh.close()


def test_heights_before_the_snapshot_say_so(tmp_path, keys, served):
    _, snapshot, app_hash, chunks = served
    restored = Application(tmp_path / "b")
    restore(restored, snapshot, app_hash, chunks)
    answer = restored.query(abci.RequestQuery(path="/bank/balance", data=keys[0].address.encode(), height=5))
    assert answer.code != 0 and "starts at height 8" in answer.log
    restored.close()


def test_old_snapshots_are_dropped_and_missing_chunks_are_empty(tmp_path, keys):
    chain = snapshotting_chain(tmp_path / "a", keys, SnapshotSettings(interval=2, keep_recent=2))
    for _ in range(7):  # heights 2..8: snapshots at 2, 4, 6, 8
        chain.block([])
        chain.app.snapshots.wait()
    assert [s.height for s in chain.app.list_snapshots(abci.RequestListSnapshots()).snapshots] == [8, 6]
    assert chain.app.load_snapshot_chunk(abci.RequestLoadSnapshotChunk(height=4, format=1, chunk=0)).chunk == b""
    assert chain.app.load_snapshot_chunk(abci.RequestLoadSnapshotChunk(height=8, format=7, chunk=0)).chunk == b""
    assert chain.app.load_snapshot_chunk(abci.RequestLoadSnapshotChunk(height=8, format=1, chunk=99)).chunk == b""
    chain.app.close()


def test_a_failing_snapshot_never_fails_commit(tmp_path, keys):
    chain = snapshotting_chain(tmp_path / "a", keys, SnapshotSettings(interval=1))
    (tmp_path / "a" / "blocker").write_text("")
    chain.app.snapshots.root = tmp_path / "a" / "blocker"  # writing under a file fails in the thread
    before = chain.app.store.app_hash
    chain.block([])
    chain.app.snapshots.wait()
    assert chain.app.store.app_hash == before and chain.app.store.height == 2
    chain.app.store.path = str(tmp_path / "nowhere" / "x.sqlite")  # the reader cannot even open: Commit still returns
    chain.block([])
    assert chain.app.store.height == 3 and chain.app.list_snapshots(abci.RequestListSnapshots()).snapshots == []
    chain.app.close()


def test_chunk_codec_round_trips_and_refuses_garbage():
    entries = [(b"k%03d" % i, b"v" * (i % 7 + 1)) for i in range(100)]
    chunks = list(snapshots.encode_chunks(entries, 128))
    assert len(chunks) > 5 and all(len(c) <= 128 for c in chunks)
    assert [e for i, c in enumerate(chunks) for e in snapshots.decode_chunk(i, c)] == entries
    assert list(snapshots.encode_chunks([], 128)) == [snapshots.CHUNK_MAGIC + bytes(4)]
    for bad in (b"", b"XXXX\x00\x00\x00\x00", chunks[0][:-1], chunks[1]):
        with pytest.raises(ValueError):
            snapshots.decode_chunk(0, bad)


def test_the_abci_server_routes_the_snapshot_calls(tmp_path, served):
    chain, snapshot, app_hash, chunks = served
    fresh = Application(tmp_path / "b")
    listed = handle(chain.app, abci.Request(list_snapshots=abci.RequestListSnapshots())).list_snapshots.snapshots
    assert [s.height for s in listed] == [8, 4] and listed[0] == snapshot
    load = abci.RequestLoadSnapshotChunk(height=snapshot.height, format=snapshot.format, chunk=0)
    assert handle(chain.app, abci.Request(load_snapshot_chunk=load)).load_snapshot_chunk.chunk == chunks[0]
    offered = handle(fresh, abci.Request(offer_snapshot=abci.RequestOfferSnapshot(snapshot=snapshot, app_hash=app_hash)))
    assert offered.offer_snapshot.result == Offer.ACCEPT
    for i, chunk in enumerate(chunks):
        applied = handle(fresh, abci.Request(apply_snapshot_chunk=abci.RequestApplySnapshotChunk(index=i, chunk=chunk)))
        assert applied.apply_snapshot_chunk.result == Apply.ACCEPT
    assert fresh.info(abci.RequestInfo()).last_block_height == snapshot.height
    fresh.close()


def test_app_flags_build_the_settings():
    import argparse

    parser = argparse.ArgumentParser()
    snapshots.add_flags(parser)
    settings, pruning = snapshots.settings_from_flags(parser, parser.parse_args(
        ["--snapshot-interval", "500", "--snapshot-keep-recent", "3", "--pruning", "custom", "--pruning-keep-recent", "100"]))
    assert (settings.interval, settings.keep_recent, pruning) == (500, 3, Pruning(100, 10))
    settings, pruning = snapshots.settings_from_flags(parser, parser.parse_args([]))
    assert (settings.interval, pruning.archive) == (0, True)  # defaults: no snapshots, archive
    assert settings.restore_max_bytes == snapshots.DEFAULT_RESTORE_MAX_BYTES
    settings, _ = snapshots.settings_from_flags(parser, parser.parse_args(["--statesync-max-bytes", str(2**30)]))
    assert settings.restore_max_bytes == 2**30
    for bad in (["--pruning", "custom"], ["--pruning", "everything", "--pruning-keep-recent", "5"],
                ["--snapshot-interval", "-1"], ["--snapshot-keep-recent", "0"], ["--statesync-max-bytes", "1000"]):
        with pytest.raises(SystemExit):
            snapshots.settings_from_flags(parser, parser.parse_args(bad))


# --- a peer's bad snapshot never wedges the joining node (review 15: F1-F4, F9) --


def forged_offer(app: Application, chunks: list[bytes], height: int = 10, app_hash: bytes = b"\x11" * 32) -> int:
    """Offer a snapshot made of `chunks`, consistent with its own metadata."""
    metadata = snapshots.metadata_of(chunks)
    fake = abci.Snapshot(height=height, format=1, chunks=len(chunks), hash=hashlib.sha256(metadata).digest(), metadata=metadata)
    return offer(app, fake, app_hash)


def raw_chunk(index: int, entries) -> bytes:
    """A chunk as encode_chunks would make it, but with no limit on its size or its entries."""
    body = b"".join(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v for k, v in entries)
    return snapshots.CHUNK_MAGIC + index.to_bytes(4, "big") + body


def test_keys_longer_than_state_keys_reject_the_snapshot_and_its_peers_not_abort(tmp_path, served):
    """Nested keys would build a trie ~1,400 levels deep; they are refused as a bad snapshot, the
    peers that served it are dropped, and an honest snapshot then restores."""
    _, snapshot, app_hash, chunks = served
    deep = list(snapshots.encode_chunks(sorted((b"\x00" * i + b"\x01", b"v") for i in range(700)), 64 * 1024))
    assert len(deep) > 1
    restored = Application(tmp_path / "b")
    assert forged_offer(restored, deep) == Offer.ACCEPT
    answer = apply(restored, 0, deep[0], sender="evil")  # the longest keys come first
    assert (answer.result, list(answer.reject_senders)) == (Apply.REJECT_SNAPSHOT, ["evil"])
    assert restored.store.is_empty()
    assert restore(restored, snapshot, app_hash, chunks)[-1] == Apply.ACCEPT
    assert restored.store.app_hash == app_hash
    restored.close()


def test_deep_sorted_keys_build_without_recursion():
    """The restore's trie builder holds only the open path: no recursion on attacker-chosen depth,
    and the same root and nodes as a block's batch update."""
    from abci_app.state.mpt import BLANK_ROOT, BatchUpdate, SortedBuild

    deep = sorted((b"\x00" * i + b"\x01", b"v") for i in range(3000))  # 6,000 nibbles deep
    built = SortedBuild({})
    for key, value in deep:
        built.add(key, value)
    assert len(built.root()) == 32
    rng = random.Random(7)
    for _ in range(200):
        keys = {bytes(rng.choice(b"\x00\x01\x10\xffa") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 60))}
        items = sorted((k, bytes([rng.randint(1, 255)]) * rng.randint(1, 40)) for k in keys)
        batch_nodes, sorted_nodes = {}, {}
        batch_root = BatchUpdate(lambda node_hash: b"", batch_nodes).apply(BLANK_ROOT, items)
        built = SortedBuild(sorted_nodes)
        for key, value in items:
            built.add(key, value)
        assert (built.root(), sorted_nodes) == (batch_root, batch_nodes)


def test_entries_bigger_than_state_entries_are_refused():
    key, value = b"k" * (snapshots.MAX_STATE_KEY + 1), b"v" * (snapshots.MAX_STATE_VALUE + 1)
    for entries in ([(key, b"v")], [(b"k", value)]):
        with pytest.raises(ValueError, match="allowed"):
            snapshots.decode_chunk(0, raw_chunk(0, entries))
    assert snapshots.decode_chunk(0, raw_chunk(0, [(b"k" * snapshots.MAX_STATE_KEY, b"v")]))


def test_oversized_chunk_rejects_the_snapshot_and_its_sender(tmp_path):
    big = raw_chunk(0, [(b"k%07d" % i, b"x" * 1000) for i in range(5_000)])
    big += b"\x00\x00\x00\x01z" * ((snapshots.MAX_CHUNK - len(big)) // 5 + 1)  # past the bound, still one chunk
    assert len(big) > snapshots.MAX_CHUNK
    restored = Application(tmp_path / "b")
    assert forged_offer(restored, [big]) == Offer.ACCEPT
    answer = apply(restored, 0, big, sender="evil")
    assert (answer.result, list(answer.reject_senders)) == (Apply.REJECT_SNAPSHOT, ["evil"])
    assert restored.store.is_empty()
    restored.close()


def test_root_mismatch_rejects_every_peer_that_served_the_snapshot(tmp_path, served):
    _, snapshot, _, chunks = served
    restored = Application(tmp_path / "b")
    assert offer(restored, snapshot, b"\x22" * 32) == Offer.ACCEPT
    answers = [apply(restored, i, chunk, sender=f"peer-{i % 2}") for i, chunk in enumerate(chunks)]
    assert answers[-1].result == Apply.REJECT_SNAPSHOT and list(answers[-1].reject_senders) == ["peer-0", "peer-1"]
    assert restored.store.is_empty()
    restored.close()


def test_offers_bigger_than_the_max_bytes_are_refused(tmp_path):
    """The operator's bound refuses a full-size metadata (100,000 digests); a bound that fits it accepts it."""
    chunks = snapshots.MAX_CHUNKS
    metadata = bytes(32) * chunks
    huge = abci.Snapshot(height=5, format=1, chunks=chunks, hash=hashlib.sha256(metadata).digest(), metadata=metadata)
    small = Application(tmp_path / "small", SnapshotSettings(restore_max_bytes=4 * snapshots.CHUNK_BYTES))
    assert offer(small, huge, b"\x11" * 32) == Offer.REJECT
    small.close()
    roomy = Application(tmp_path / "roomy", SnapshotSettings(restore_max_bytes=chunks * snapshots.CHUNK_BYTES))
    assert offer(roomy, huge, b"\x11" * 32) == Offer.ACCEPT
    assert len(roomy._restore.digests) == chunks
    roomy.close()


def test_an_internal_error_while_applying_rejects_the_snapshot_not_aborts(tmp_path, served, monkeypatch):
    _, snapshot, app_hash, chunks = served
    restored = Application(tmp_path / "b")
    assert offer(restored, snapshot, app_hash) == Offer.ACCEPT

    def broken(*args):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(snapshots, "decode_chunk", broken)
    answer = apply(restored, 0, chunks[0], sender="peer-a")
    assert (answer.result, list(answer.reject_senders)) == (Apply.REJECT_SNAPSHOT, ["peer-a"])
    monkeypatch.undo()
    assert restore(restored, snapshot, app_hash, chunks)[-1] == Apply.ACCEPT
    restored.close()


def test_a_restore_cometbft_never_recorded_can_be_redone_after_a_restart(tmp_path, served):
    """The app commits the restore before CometBFT saves its own state: a crash in between leaves the
    app at H and CometBFT at 0, so CometBFT state-syncs again and the restored-only state is replaced."""
    _, snapshot, app_hash, chunks = served
    joiner = Application(tmp_path / "b", SMALL_CHUNKS)
    restore(joiner, snapshot, app_hash, chunks)
    joiner.close()  # killed before CometBFT bootstrapped
    joiner = Application(tmp_path / "b", SMALL_CHUNKS)
    assert offer(joiner, snapshot, b"\x33" * 32) == Offer.ACCEPT
    assert [apply(joiner, i, c).result for i, c in enumerate(chunks)][-1] == Apply.REJECT_SNAPSHOT
    assert (joiner.store.height, joiner.store.app_hash) == (8, app_hash)  # a failed redo keeps the earlier restore
    assert restore(joiner, snapshot, app_hash, chunks)[-1] == Apply.ACCEPT
    assert (joiner.store.height, joiner.store.app_hash, joiner.store.retained_heights()) == (8, app_hash, [8])
    joiner.close()


def test_a_restored_node_that_executed_a_block_restores_no_more(tmp_path, keys, served):
    chain, snapshot, app_hash, chunks = served
    joiner = Application(tmp_path / "b", SMALL_CHUNKS)
    restore(joiner, snapshot, app_hash, chunks)
    for req in recorded_blocks(chain, keys, random.Random(2), blocks=1):
        joiner.finalize_block(req)
        joiner.commit(abci.RequestCommit())
    assert offer(joiner, snapshot, app_hash) == Offer.REJECT
    joiner.close()


def test_restore_into_a_pruning_node_counts_references(tmp_path, keys, served):
    """A pruning node's restored trie carries reference counts, so its later prunes stay exact."""
    chain, snapshot, app_hash, chunks = served
    joiner = Application(tmp_path / "b", SMALL_CHUNKS, Pruning(2, 1))
    restore(joiner, snapshot, app_hash, chunks)
    for req in recorded_blocks(chain, keys, random.Random(2), blocks=4):
        assert joiner.finalize_block(req).app_hash == chain.app.store.root_at(req.height)
        joiner.commit(abci.RequestCommit())
        joiner.snapshots.wait()
    conn = joiner.store._conn
    assert joiner.store.retained_heights() == [11, 12]  # the restored 8 is pruned like any height
    stored = {h for (h,) in conn.execute("SELECT hash FROM nodes")}
    assert stored == {h for (h,) in conn.execute("SELECT hash FROM noderefs WHERE refs > 0")}
    joiner.close()


def test_chunks_are_staged_on_disk_not_held_in_memory(tmp_path, served):
    """Each applied chunk's entries and finished trie nodes go to the staging transaction at once;
    the store's own connection sees none of it until the root matches."""
    _, snapshot, app_hash, chunks = served
    restored = Application(tmp_path / "b")
    assert offer(restored, snapshot, app_hash) == Offer.ACCEPT
    staged = restored._restore._staged
    expected = 0
    for i, chunk in enumerate(chunks[:-1]):
        assert apply(restored, i, chunk).result == Apply.ACCEPT
        expected += len(snapshots.decode_chunk(i, chunk))
        assert staged._conn.execute("SELECT COUNT(*) FROM kv").fetchone()[0] == expected
        assert staged._new_nodes == {}  # flushed to the nodes table
    assert staged._conn.execute("SELECT COUNT(*) FROM nodes").fetchone()[0] > 0
    assert restored.store._conn.execute("SELECT COUNT(*) FROM kv").fetchone()[0] == 0
    assert apply(restored, len(chunks) - 1, chunks[-1]).result == Apply.ACCEPT
    assert restored.store._conn.execute("SELECT COUNT(*) FROM kv").fetchone()[0] == expected + len(snapshots.decode_chunk(len(chunks) - 1, chunks[-1]))
    restored.close()
