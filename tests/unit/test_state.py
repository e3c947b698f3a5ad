"""Unit tests for abci_app.state: overlays, commit/reopen, app hash, history, proofs, crash safety."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from trie import HexaryTrie

from abci_app.state import BLANK_ROOT, Overlay, Store, verify_proof


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(path: Path):
    s = Store(path)
    yield s
    s.close()


def commit(store: Store, writes: dict[bytes, bytes | None]) -> bytes:
    """Commit one block with these writes (None = delete) at the next height."""
    block = store.begin_block()
    for key, value in writes.items():
        if value is None:
            block.delete(key)
        else:
            block.set(key, value)
    return store.commit(block, store.height + 1)


def reference_root(items: dict[bytes, bytes]) -> bytes:
    """Root of a fresh in-memory trie with exactly these items: what the app hash must equal."""
    t = HexaryTrie({})
    for key, value in items.items():
        t.set(key, value)
    return t.root_hash


# Overlays


def test_set_get_delete_through_overlays(store: Store) -> None:
    commit(store, {b"a": b"1", b"b": b"2"})
    block = store.begin_block()
    assert block.get(b"a") == b"1" and block.get(b"zz") is None
    block.set(b"a", b"10")
    block.delete(b"b")
    tx = block.child()
    assert tx.get(b"a") == b"10" and tx.get(b"b") is None
    tx.set(b"b", b"20")
    tx.set(b"c", b"30")
    tx.delete(b"a")
    assert (tx.get(b"a"), tx.get(b"b"), tx.get(b"c")) == (None, b"20", b"30")
    assert tx.writes() == [(b"a", None), (b"b", b"20"), (b"c", b"30")]
    assert block.writes() == [(b"a", b"10"), (b"b", None)]
    assert store.query(b"a").value == b"1"  # nothing reaches the store before commit


def test_child_discard_leaves_parent_untouched(store: Store) -> None:
    commit(store, {b"a": b"1"})
    block = store.begin_block()
    block.set(b"b", b"2")
    before = (block.writes(), block.app_hash())
    tx = block.child()
    tx.set(b"a", b"changed")
    tx.delete(b"b")
    tx.set(b"c", b"3")
    del tx  # the tx failed: dropped
    assert (block.writes(), block.app_hash()) == before
    assert (block.get(b"a"), block.get(b"b"), block.get(b"c")) == (b"1", b"2", None)


def test_child_write_merges(store: Store) -> None:
    commit(store, {b"a": b"1", b"b": b"2"})
    block = store.begin_block()
    tx = block.child()
    tx.set(b"a", b"10")
    tx.delete(b"b")
    tx.set(b"c", b"3")
    inner = tx.child()  # nested tx levels merge one level at a time
    inner.set(b"d", b"4")
    inner.write()
    assert block.get(b"d") is None
    tx.write()
    assert block.writes() == [(b"a", b"10"), (b"b", None), (b"c", b"3"), (b"d", b"4")]
    assert tx.writes() == []  # the child stays usable, with nothing pending
    store.commit(block, 2)
    assert [store.query(k).value for k in (b"a", b"b", b"c", b"d")] == [b"10", None, b"3", b"4"]


def test_iter_prefix_merges_in_key_order_and_hides_deletes(store: Store) -> None:
    commit(store, {b"p\x00": b"c0", b"p\x05": b"c5", b"p\xff": b"cff", b"p\xff\xff": b"cffff", b"q": b"q", b"o": b"o"})
    block = store.begin_block()
    block.set(b"p\x03", b"b3")
    block.delete(b"p\x05")
    block.set(b"p\xff", b"bff")
    tx = block.child()
    tx.set(b"p", b"t")
    tx.delete(b"p\x00")
    tx.set(b"p\x05", b"t5")  # re-created over the block's delete
    assert list(tx.iter_prefix(b"p")) == [
        (b"p", b"t"), (b"p\x03", b"b3"), (b"p\x05", b"t5"), (b"p\xff", b"bff"), (b"p\xff\xff", b"cffff"),
    ]
    assert list(block.iter_prefix(b"p")) == [
        (b"p\x00", b"c0"), (b"p\x03", b"b3"), (b"p\xff", b"bff"), (b"p\xff\xff", b"cffff"),
    ]
    assert list(block.iter_prefix(b"p\xff")) == [(b"p\xff", b"bff"), (b"p\xff\xff", b"cffff")]
    assert [k for k, _ in tx.iter_prefix(b"")] == [b"o", b"p", b"p\x03", b"p\x05", b"p\xff", b"p\xff\xff", b"q"]


def test_iter_prefix_pages_through_many_committed_rows(store: Store) -> None:
    items = {b"k%04d" % i: b"v%d" % i for i in range(700)}  # more than one SQL page
    commit(store, items | {b"j": b"x", b"l": b"x"})
    assert list(store.begin_block().iter_prefix(b"k")) == sorted(items.items())


def test_iter_prefix_starts_after_a_key_in_the_merged_view(store: Store) -> None:
    """A query page starts reading where the last one ended: in committed rows past an SQL page, and in own writes."""
    items = {b"k%04d" % i: b"v%d" % i for i in range(700)}
    commit(store, items | {b"j": b"x", b"l": b"x"})
    block = store.begin_block()
    block.set(b"k0300x", b"new")
    block.delete(b"k0302")
    tx = block.child()
    tx.set(b"k0301", b"t")
    expected = sorted((items | {b"k0300x": b"new", b"k0301": b"t"}).items())
    expected.remove((b"k0302", b"v302"))
    assert list(tx.iter_prefix(b"k", b"k0299")) == [kv for kv in expected if kv[0] > b"k0299"]
    assert list(tx.iter_prefix(b"k", b"k0300")) == [kv for kv in expected if kv[0] > b"k0300"]
    assert list(tx.iter_prefix(b"k", b"k0699")) == []
    assert list(tx.iter_prefix(b"k", b"k")) == expected  # the prefix itself: every key under it
    assert list(store.begin_block().iter_prefix(b"k", b"k0600")) == sorted(kv for kv in items.items() if kv[0] > b"k0600")


def test_values_must_be_non_empty_bytes(store: Store) -> None:
    block = store.begin_block()
    with pytest.raises(AssertionError):
        block.set(b"k", b"")
    with pytest.raises(AssertionError):
        block.set("k", b"v")  # type: ignore[arg-type]


# Commit, reopen and the app hash


def test_new_store_is_empty(store: Store) -> None:
    assert (store.height, store.app_hash) == (0, BLANK_ROOT)
    assert store.begin_block().app_hash() == BLANK_ROOT
    assert store.query(b"k").value is None


def test_commit_and_reopen_keep_height_hash_and_values(path: Path) -> None:
    s = Store(path)
    commit(s, {b"a": b"1", b"b": b"2"})
    h2 = commit(s, {b"b": None, b"c": b"3"})
    s.close()
    s = Store(path)
    assert (s.height, s.app_hash) == (2, h2)
    assert [s.query(k).value for k in (b"a", b"b", b"c")] == [b"1", None, b"3"]
    assert s.app_hash == reference_root({b"a": b"1", b"c": b"3"})
    assert commit(s, {b"d": b"4"}) == reference_root({b"a": b"1", b"c": b"3", b"d": b"4"})
    s.close()


def test_commit_rejects_bad_height_and_stale_or_nested_overlays(store: Store) -> None:
    commit(store, {b"a": b"1"})
    with pytest.raises(AssertionError):
        store.commit(store.begin_block(), 1)
    stale = store.begin_block()
    commit(store, {b"a": b"2"})
    with pytest.raises(AssertionError):
        store.commit(stale, 3)
    with pytest.raises(AssertionError):
        store.commit(store.begin_block().child(), 3)
    assert store.height == 2


def test_app_hash_unchanged_when_state_unchanged(store: Store) -> None:
    h1 = commit(store, {b"a": b"1", b"b": b"2"})
    nodes = store._conn.execute("SELECT count(*) FROM nodes").fetchone()
    assert commit(store, {}) == h1
    assert commit(store, {b"a": b"1", b"zz": None}) == h1  # same value; delete of an absent key
    block = store.begin_block()
    block.set(b"a", b"changed")
    block.set(b"new", b"x")
    assert block.app_hash() != h1
    block.set(b"a", b"1")  # restored within the block
    block.delete(b"new")
    assert block.app_hash() == h1
    assert store.commit(block, 4) == h1
    assert store._conn.execute("SELECT count(*) FROM nodes").fetchone() == nodes  # no orphan nodes stored
    assert [store.root_at(h) for h in (1, 2, 3, 4)] == [h1] * 4


def test_same_writes_in_any_order_give_the_same_hash(tmp_path: Path) -> None:
    rng = random.Random(7)
    items = {b"k%d" % rng.randrange(10_000): b"v%d" % i for i in range(300)}
    gone = sorted(items)[::5]
    shuffled = list(items.items())
    rng.shuffle(shuffled)
    a, b = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    commit(a, items)
    commit(a, {k: None for k in gone})
    # b: other order, other block split, and an extra key written then deleted
    commit(b, dict(shuffled[:100]) | {b"tmp": b"x"})
    commit(b, dict(shuffled[100:]) | {b"tmp": None})
    commit(b, {k: None for k in reversed(gone)})
    expected = reference_root({k: v for k, v in items.items() if k not in gone})
    assert a.app_hash == b.app_hash == expected
    a.close()
    b.close()


def test_app_hash_before_commit_equals_commit_result(store: Store) -> None:
    commit(store, {b"a": b"1"})
    block = store.begin_block()
    block.set(b"b", b"2")
    first = block.app_hash()
    assert store.app_hash != first and store.height == 1  # app_hash() persists nothing
    block.set(b"c", b"3")  # writes after app_hash() are picked up
    second = block.app_hash()
    assert second != first and block.app_hash() == second
    assert store.commit(block, 2) == second == store.app_hash
    assert second == reference_root({b"a": b"1", b"b": b"2", b"c": b"3"})


def test_kv_and_trie_agree_over_random_blocks(store: Store) -> None:
    rng = random.Random(1)
    model: dict[bytes, bytes] = {}
    for _ in range(8):
        writes: dict[bytes, bytes | None] = {}
        for _ in range(60):
            key = bytes([rng.randrange(4)]) + b"key%d" % rng.randrange(80)
            writes[key] = None if rng.randrange(3) == 0 else b"v%d" % rng.randrange(10**6)
        commit(store, writes)
        model = {k: v for k, v in (model | writes).items() if v is not None}
        assert store.app_hash == reference_root(model)
    assert list(store.begin_block().iter_prefix(b"")) == sorted(model.items())
    for key in sorted(model)[:20] + [b"\x00", b"\x01key", b"\x02key1000", b"\x04"]:
        q = store.query(key, prove=True)
        assert q.value == model.get(key) == store.query(key).value
        assert verify_proof(store.app_hash, key, q.value, q.proof)


def test_two_hundred_writes_hash_and_commit_quickly(store: Store) -> None:
    commit(store, {b"acct/%06d" % i: b"balance %d" % i for i in range(2000)})
    block = store.begin_block()
    for i in range(200):
        block.set(b"acct/%06d" % (i * 37), b"new balance %d" % i)
    start = time.perf_counter()
    root = block.app_hash()
    assert store.commit(block, 2) == root
    assert time.perf_counter() - start < 1.0


# History and proofs


def test_historical_query_returns_old_value(store: Store) -> None:
    commit(store, {b"a": b"1", b"b": b"2"})
    commit(store, {b"a": b"10", b"b": None})
    commit(store, {b"c": b"3"})
    old = store.query(b"a", height=1, prove=True)
    assert (old.value, old.height) == (b"1", 1)
    assert verify_proof(store.root_at(1), b"a", b"1", old.proof)
    assert store.query(b"b", height=1).value == b"2"
    assert store.query(b"b", height=2).value is None
    latest = store.query(b"a")
    assert (latest.value, latest.height, latest.proof) == (b"10", 3, None)
    with pytest.raises(KeyError):
        store.query(b"a", height=4)
    with pytest.raises(KeyError):
        store.root_at(0)


def test_proof_verifies_for_present_and_absent_keys(store: Store) -> None:
    assert verify_proof(BLANK_ROOT, b"a", None, store.query(b"a", prove=True).proof)  # empty state
    commit(store, {b"a": b"1"})  # a single small node: the root is a short leaf
    assert verify_proof(store.app_hash, b"a", b"1", store.query(b"a", prove=True).proof)
    commit(store, {b"acct/%d" % i: b"v%d" % i for i in range(200)})
    root = store.app_hash
    for key, value in [(b"acct/7", b"v7"), (b"a", b"1"), (b"acct/199", b"v199")]:
        q = store.query(key, prove=True)
        assert q.value == value and verify_proof(root, key, value, q.proof)
    for key in [b"acct/200", b"acct/", b"acct", b"zzz", b""]:  # b"acct/" ends inside an extension node
        q = store.query(key, prove=True)
        assert q.value is None and verify_proof(root, key, None, q.proof)


def test_tampered_proofs_are_refused(store: Store) -> None:
    commit(store, {b"acct/%d" % i: b"v%d" % i for i in range(200)})
    root = store.app_hash
    proof = store.query(b"acct/7", prove=True).proof
    absent = store.query(b"acct/x", prove=True).proof
    assert verify_proof(root, b"acct/7", b"v7", proof)
    for i, node in enumerate(proof):  # flip one byte anywhere
        for pos in (0, len(node) // 2, len(node) - 1):
            bad = proof.copy()
            bad[i] = node[:pos] + bytes([node[pos] ^ 1]) + node[pos + 1 :]
            assert not verify_proof(root, b"acct/7", b"v7", bad)
    assert not verify_proof(root, b"acct/7", b"v8", proof)  # wrong value
    assert not verify_proof(root, b"acct/7", None, proof)  # claims absence of a present key
    assert not verify_proof(root, b"acct/x", b"v7", absent)  # claims presence of an absent key
    assert not verify_proof(root, b"acct/8", b"v7", proof)  # proof for another key
    wrong_root = bytes([root[0] ^ 1]) + root[1:]
    assert not verify_proof(wrong_root, b"acct/7", b"v7", proof)
    assert not verify_proof(BLANK_ROOT, b"acct/7", b"v7", proof)
    assert not verify_proof(root, b"acct/7", b"v7", proof[:-1])  # truncated
    assert not verify_proof(root, b"acct/7", b"v7", [])
    for garbage in ([b"\xff" * 40], [b""], ["node"], None, [root]):
        assert not verify_proof(root, b"acct/7", b"v7", garbage)  # type: ignore[arg-type]
    assert not verify_proof(b"short", b"acct/7", b"v7", proof)
    assert not verify_proof(root, b"acct/7", b"", proof)


def test_verify_proof_never_raises_on_undecodable_node_under_its_own_hash() -> None:
    from eth_hash.auto import keccak

    garbage = b"\xc3\x01\x02"  # truncated RLP list, passed with a root that is its hash
    assert not verify_proof(keccak(garbage), b"k", b"v", [garbage])


# Crash safety


def test_uncommitted_block_is_lost_on_reopen(path: Path) -> None:
    s = Store(path)
    h1 = commit(s, {b"a": b"1"})
    block = s.begin_block()
    block.set(b"a", b"2")
    block.set(b"b", b"3")
    block.app_hash()
    # the process "dies" here: never committed, never closed; a fresh open sees only height 1
    s2 = Store(path)
    assert (s2.height, s2.app_hash, s2.query(b"a").value, s2.query(b"b").value) == (1, h1, b"1", None)
    s2.close()
    s.close()


def test_failure_inside_commit_rolls_everything_back(store: Store) -> None:
    h1 = commit(store, {b"a": b"1"})
    store._conn.execute("INSERT INTO roots VALUES (2, x'00')")  # make the roots insert fail mid-transaction
    block = store.begin_block()
    block.set(b"a", b"2")
    with pytest.raises(Exception):
        store.commit(block, 2)
    assert (store.height, store.app_hash, store.query(b"a").value) == (1, h1, b"1")
    nodes = store._conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
    store._conn.execute("DELETE FROM roots WHERE height = 2")
    assert store.commit(block, 2) != h1
    assert store._conn.execute("SELECT count(*) FROM nodes").fetchone()[0] > nodes  # nodes were rolled back before


CRASH_MID_COMMIT = """
import os, sys
from abci_app.state import Store
s = Store(sys.argv[1])
b = s.begin_block(); b.set(b"a", b"1"); s.commit(b, 1)
real = s._conn
class Dies:  # the process dies right after the kv rows are written, inside the transaction
    def __init__(self): self.n = 0
    def execute(self, *a): return real.execute(*a)
    def executemany(self, *a):
        real.executemany(*a); self.n += 1
        if self.n == 2: os._exit(3)
s._conn = Dies()
b = s.begin_block(); b.set(b"a", b"2"); b.set(b"b", b"3"); s.commit(b, 2)
"""


def test_process_killed_inside_commit_keeps_previous_state(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH_MID_COMMIT), str(path)], timeout=60)
    assert proc.returncode == 3
    s = Store(path)
    assert (s.height, s.query(b"a").value, s.query(b"b").value) == (1, b"1", None)
    assert s.app_hash == s.root_at(1) == reference_root({b"a": b"1"})
    s.close()


def test_overlay_is_exported_type(store: Store) -> None:
    assert isinstance(store.begin_block(), Overlay) and isinstance(store.begin_block().child(), Overlay)
