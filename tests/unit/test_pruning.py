"""Pruning: retained heights prove exactly what an archive proves, pruned heights are refused with a
clear reason, and the nodes table holds exactly the nodes the retained roots reach."""

import random

import pytest

from abci_app.app import Application
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.snapshots import SnapshotSettings
from abci_app.state import HeightUnavailable, Pruning, Store
from abci_app.state import mpt
from tests.unit.conftest import Chain

KEYS = [b"acct/%03d" % i for i in range(60)] + [b"params", b"x"]


def random_block(store: Store, rng: random.Random):
    block = store.begin_block()
    for key in rng.sample(KEYS, rng.randrange(0, 8)):
        if rng.random() < 0.2:
            block.delete(key)
        else:
            block.set(key, rng.choice([b"1", b"22", b"v" * rng.randrange(1, 80)]))
    return block


def twin_stores(tmp_path, pruning: Pruning, blocks: int, seed: int, protect=()):
    """An archive and a pruning store fed the same random blocks."""
    archive, pruned = Store(tmp_path / "archive.sqlite"), Store(tmp_path / "pruned.sqlite", pruning)
    rng = random.Random(seed)
    for height in range(1, blocks + 1):
        writes = random_block(archive, rng).writes()
        for store in (archive, pruned):
            block = store.begin_block()
            for key, value in writes:
                block.set(key, value) if value is not None else block.delete(key)
            store.commit(block, height, protect=protect if store is pruned else ())
        assert pruned.app_hash == archive.app_hash  # pruning never touches the app hash
    return archive, pruned


def reachable(store: Store) -> set[bytes]:
    """Every trie node hash some retained root reaches."""
    found, todo = set(), [store.root_at(h) for h in store.retained_heights()]
    while todo:
        node_hash = todo.pop()
        if node_hash in found or node_hash == mpt.BLANK_ROOT:
            continue
        found.add(node_hash)
        todo.extend(mpt.child_hashes(mpt.decode(store._committed.node(node_hash))))
    return found


def stored(store: Store) -> set[bytes]:
    return {h for (h,) in store._conn.execute("SELECT hash FROM nodes")}


def assert_retained_heights_prove_as_archive(archive: Store, pruned: Store) -> None:
    for height in pruned.retained_heights():
        assert pruned.root_at(height) == archive.root_at(height)
        for key in KEYS:
            assert pruned.query(key, height, prove=True) == archive.query(key, height, prove=True)


def test_retained_heights_prove_everything_an_archive_proves(tmp_path):
    archive, pruned = twin_stores(tmp_path, Pruning(keep_recent=5, interval=1), blocks=120, seed=1)
    assert pruned.retained_heights() == list(range(116, 121))
    assert_retained_heights_prove_as_archive(archive, pruned)
    assert stored(pruned) == reachable(pruned)  # nothing leaked, nothing reachable lost
    assert len(stored(pruned)) < len(stored(archive)) // 5


def test_pruned_heights_are_refused_with_the_reason(tmp_path):
    _, pruned = twin_stores(tmp_path, Pruning(keep_recent=5, interval=1), blocks=30, seed=2)
    with pytest.raises(HeightUnavailable) as refused:
        pruned.query(KEYS[0], height=20, prove=True)
    assert str(refused.value) == "height 20 is pruned: this node keeps the last 5 heights"
    with pytest.raises(HeightUnavailable, match="latest is 30"):
        pruned.root_at(31)


def test_interval_prunes_in_batches_and_protected_heights_stay(tmp_path):
    archive, pruned = twin_stores(tmp_path, Pruning(keep_recent=3, interval=10), blocks=57, seed=3, protect={12, 40})
    assert pruned.retained_heights() == [12, 40, *range(48, 58)]  # last run at 50 kept 48..50; 51..57 since
    assert_retained_heights_prove_as_archive(archive, pruned)
    assert stored(pruned) == reachable(pruned)


def test_turning_pruning_on_and_off_on_an_existing_store(tmp_path):
    archive, pruned = twin_stores(tmp_path, Pruning(), blocks=40, seed=4)  # both archives so far
    pruned.close()
    pruned = Store(tmp_path / "pruned.sqlite", Pruning(keep_recent=4, interval=1))  # rebuilds counts, prunes at once
    assert pruned.retained_heights() == [37, 38, 39, 40]
    assert stored(pruned) == reachable(pruned)
    assert_retained_heights_prove_as_archive(archive, pruned)
    pruned.close()
    pruned = Store(tmp_path / "pruned.sqlite")  # back to archive: counts dropped, history from now on kept
    assert pruned._conn.execute("SELECT COUNT(*) FROM noderefs").fetchone() == (0,)
    rng = random.Random(5)
    for height in range(41, 50):
        pruned.commit(random_block(pruned, rng), height)
    pruned.close()
    pruned = Store(tmp_path / "pruned.sqlite", Pruning(keep_recent=2, interval=1))
    assert pruned.retained_heights() == [48, 49] and stored(pruned) == reachable(pruned)
    pruned.close()


def test_named_settings_match_cosmos():
    assert Pruning.named("nothing").archive
    assert Pruning.named("everything") == Pruning(2, 10)
    assert Pruning.named("default") == Pruning(362_880, 10)
    assert Pruning.named("custom", 100) == Pruning(100, 10)
    assert Pruning.named("custom", 100, 1) == Pruning(100, 1)
    for bad in (("custom",), ("custom", 0), ("everything", 5), ("sometimes",), ("custom", 5, 0)):
        with pytest.raises(ValueError):
            Pruning.named(*bad)


def test_app_query_at_a_pruned_height_answers_an_error_code(tmp_path, keys):
    chain = Chain(tmp_path / "app", {keys[0].address: 1_000})
    chain.app.close()
    chain.app = Application(tmp_path / "app", SnapshotSettings(interval=6), Pruning(keep_recent=3, interval=1))
    for amount in range(1, 15):  # heights 2..15
        chain.block([chain.send_tx(keys[0], keys[1].address, amount)])
        chain.app.snapshots.wait()
    assert chain.app.store.retained_heights() == [6, 12, 13, 14, 15]  # snapshot heights 6 and 12 kept
    pruned = chain.query("/bank/balance", keys[1].address, height=10, prove=True)
    assert pruned.code != 0 and pruned.log == "height 10 is pruned: this node keeps the last 3 heights"
    kept = chain.query("/bank/balance", keys[1].address, height=6, prove=True)
    assert kept.code == 0 and kept.value == b"%d" % sum(range(1, 6))
    chain.app.close()


def test_turning_pruning_on_at_a_restart_keeps_the_snapshot_heights(tmp_path, keys):
    """Store(protect=...) gets the snapshots on disk: an archive restarted with pruning keeps serving their state."""
    settings = SnapshotSettings(interval=4, keep_recent=2, chunk_bytes=256)
    chain = Chain(tmp_path / "a", {k.address: 10_000 for k in keys})
    chain.app.close()
    chain.app = Application(tmp_path / "a", settings)
    for _ in range(15):  # heights 2..16; snapshots at 12 and 16 kept
        chain.block([])
        chain.app.snapshots.wait()
    archive_roots = {h: chain.app.store.root_at(h) for h in (12, 16)}
    chain.app.close()
    app = Application(tmp_path / "a", settings, Pruning(keep_recent=2, interval=1))
    assert sorted(s.height for s in app.snapshots.list()) == [12, 16]
    assert app.store.retained_heights() == [12, 15, 16]
    assert {h: app.store.root_at(h) for h in (12, 16)} == archive_roots
    assert stored(app.store) == reachable(app.store)
    app.close()


def test_reference_recount_reads_the_nodes_a_page_at_a_time(tmp_path, monkeypatch):
    """Turning pruning on counts references page by page (memory flat in the trie's size), with the same counts."""
    from abci_app.state import store as store_module

    archive, _ = twin_stores(tmp_path, Pruning(), blocks=30, seed=6)
    archive.close()
    monkeypatch.setattr(store_module, "RECOUNT_PAGE", 7)
    paged = Store(tmp_path / "archive.sqlite", Pruning(keep_recent=30, interval=1))
    counts = dict(paged._conn.execute("SELECT hash, refs FROM noderefs"))
    monkeypatch.setattr(store_module, "RECOUNT_PAGE", 10**9)
    paged.close()
    Store(tmp_path / "archive.sqlite").close()  # back to archive, then one page
    whole = Store(tmp_path / "archive.sqlite", Pruning(keep_recent=30, interval=1))
    assert dict(whole._conn.execute("SELECT hash, refs FROM noderefs")) == counts
    assert stored(whole) == reachable(whole)
    whole.close()
