"""The batched Merkle-Patricia update (state/mpt.py) against py-trie, the reference implementation:
same roots after every block of writes, nodes that decode and re-encode to themselves, proofs that verify."""

from __future__ import annotations

import rlp
from hypothesis import given, settings
from hypothesis import strategies as st
from trie import HexaryTrie

from abci_app.state import mpt
from abci_app.state.overlay import NodeBuffer
from abci_app.state.proof import lookup, verify_proof

# Few distinct bytes, so that keys share prefixes, end inside each other and split extensions.
KEYS = st.binary(min_size=1, max_size=6).map(lambda b: bytes(c % 5 + 0x61 for c in b)) | st.binary(min_size=1, max_size=40)
VALUES = st.none() | st.binary(min_size=1, max_size=48)  # None deletes; short values make embedded nodes
BLOCKS = st.lists(st.dictionaries(KEYS, VALUES, min_size=1, max_size=40), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(BLOCKS)
def test_roots_equal_py_trie_after_every_block(blocks):
    reference = HexaryTrie({})
    nodes: dict[bytes, bytes] = {}
    root = mpt.BLANK_ROOT
    live: dict[bytes, bytes] = {}
    for writes in blocks:
        for key, value in sorted(writes.items()):
            if value is None:
                reference.delete(key)
                live.pop(key, None)
            else:
                reference.set(key, value)
                live[key] = value
        root = mpt.BatchUpdate(nodes.__getitem__, nodes).apply(root, sorted(writes.items()))
        assert root == reference.root_hash
    for encoded in nodes.values():
        assert mpt.decode(encoded) == rlp.decode(encoded)
        assert mpt.encode(mpt.decode(encoded)) == encoded
    for key in list(live)[:10] + [b"absent", b"a"]:
        value, proof = lookup(nodes.__getitem__, root, key)
        assert value == live.get(key)
        assert verify_proof(root, key, value, proof)


def test_empty_batch_keeps_the_root_and_deleting_everything_gives_the_blank_root():
    nodes: dict[bytes, bytes] = {}
    update = mpt.BatchUpdate(nodes.__getitem__, nodes)
    root = update.apply(mpt.BLANK_ROOT, [(b"a", b"1"), (b"ab", b"2"), (b"b", b"3")])
    assert update.apply(root, []) == root
    assert update.apply(root, [(b"a", None), (b"ab", None), (b"b", None)]) == mpt.BLANK_ROOT
    assert mpt.BLANK_ROOT == HexaryTrie.BLANK_NODE_HASH


def test_one_batch_equals_the_same_writes_one_key_at_a_time():
    writes = [(b"bank/balance/%03d" % i, b"%d" % (i * 7)) for i in range(300)]
    batch_nodes: dict[bytes, bytes] = {}
    batch_root = mpt.BatchUpdate(batch_nodes.__getitem__, batch_nodes).apply(mpt.BLANK_ROOT, writes)
    single_nodes: dict[bytes, bytes] = {}
    root = mpt.BLANK_ROOT
    for write in writes:
        root = mpt.BatchUpdate(single_nodes.__getitem__, single_nodes).apply(root, [write])
    assert root == batch_root


def test_a_block_stores_only_nodes_its_root_reaches():
    class Empty:
        def node(self, node_hash):
            raise KeyError(node_hash)

    buffer = NodeBuffer(Empty())
    update = mpt.BatchUpdate(buffer.__getitem__, buffer.new)
    first = update.apply(mpt.BLANK_ROOT, [(b"k%d" % i, b"v" * 40) for i in range(50)])
    second = update.apply(first, [(b"k%d" % i, b"w" * 40) for i in range(50)])  # orphans most of the first
    kept = dict(buffer.reachable_new(second))
    assert len(kept) < len(buffer.new)
    for i in range(50):
        assert lookup(kept.__getitem__, second, b"k%d" % i)[0] == b"w" * 40
