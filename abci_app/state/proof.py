"""Walking the Merkle-Patricia trie along one key, and checking a query's proof against an app hash."""

from __future__ import annotations

from collections.abc import Callable

import rlp
from eth_hash.auto import keccak

from abci_app.state.mpt import BLANK_ROOT, nibbles, uncompact


def lookup(node_at: Callable[[bytes], bytes], root: bytes, key: bytes) -> tuple[bytes | None, list[bytes]]:
    """(value or None, the hashed nodes passed on the way: the proof); raises on a missing or malformed node.

    Our own walk rather than HexaryTrie.get, which (trie 4.0) raises instead of answering "absent" for a key
    that ends inside an extension node, e.g. b"acct/" when every key is b"acct/<digits>".
    """
    if root == BLANK_ROOT:
        return None, []
    proof = [node_at(root)]
    node = rlp.decode(proof[-1])
    path = nibbles(key)
    while True:
        if isinstance(node, list) and len(node) == 17:  # branch: 16 children, then the value of a key ending here
            if not path:
                return _value(node[16]), proof
            ref, path = node[path[0]], path[1:]
        elif isinstance(node, list) and len(node) == 2 and isinstance(node[0], bytes):  # leaf or extension
            node_path, is_leaf = uncompact(node[0])
            if is_leaf:
                return (_value(node[1]) if path == node_path else None), proof
            if path[: len(node_path)] != node_path:
                return None, proof
            ref, path = node[1], path[len(node_path) :]
        else:
            raise ValueError("malformed trie node")
        if ref == b"":
            return None, proof
        if isinstance(ref, list):
            node = ref  # a child under 32 bytes is embedded in its parent
        elif isinstance(ref, bytes) and len(ref) == 32:
            proof.append(node_at(ref))
            node = rlp.decode(proof[-1])
        else:
            raise ValueError("malformed trie reference")


def _value(value: object) -> bytes | None:
    if not isinstance(value, bytes):
        raise ValueError("malformed trie value")
    return value or None  # b"" is how the trie says "no value"


def verify_proof(app_hash: bytes, key: bytes, value: bytes | None, proof: list[bytes]) -> bool:
    """True iff proof shows key -> value (absence when value is None) under app_hash; False, never an exception, on garbage."""
    if type(app_hash) is not bytes or len(app_hash) != 32 or type(key) is not bytes:
        return False
    if value is not None and (type(value) is not bytes or not value):
        return False  # state values are non-empty bytes
    if not isinstance(proof, list) or not all(type(node) is bytes for node in proof):
        return False
    # Nodes are looked up by their hash, so a tampered node is simply missing from the walk down from app_hash.
    nodes = {keccak(node): node for node in proof}
    try:
        found, _ = lookup(nodes.__getitem__, app_hash, key)
    except Exception:  # missing node, or undecodable bytes under a hash: not a proof
        return False
    return found == value
