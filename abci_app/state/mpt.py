"""The app hash: a hexary Merkle-Patricia trie (Ethereum's node format) updated once per block.

A block's dirty keys are applied in one sorted pass: each trie node on the way
to any of them is read, rebuilt and hashed once per block, however many keys
below it changed, instead of once per key as py-trie's `set` does (~350 us per
key at 10^5 accounts; bench/state.py). The nodes are the ones py-trie makes for
the same keys, so roots, stored nodes and proofs (proof.lookup,
proof.verify_proof) are unchanged; tests/unit/test_mpt.py checks the roots
against py-trie on random batches. Cost per key grows with the trie's depth,
O(log16 n).

Nibble paths are `bytes` holding one nibble (0..15) per byte, so slicing and
prefix tests run in C. The update recurses once per node on a key's path, at
most twice the key's length in bytes: state keys are module prefixes plus
fixed-size ids (no user text), far inside Python's recursion limit. Keys from
elsewhere (a peer's snapshot) go through SortedBuild instead, which does not
recurse, and are capped at snapshots.MAX_STATE_KEY bytes before that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping

from eth_hash.auto import keccak

BLANK_ROOT = keccak(b"\x80")  # the root of the empty trie: keccak(rlp(b""))

# A decoded node: b"" (blank), [compact path, value or child ref] (leaf, extension),
# or 16 child refs plus a value (branch). A child ref is b"", a 32-byte hash, or an
# embedded node (a child whose encoding is under 32 bytes is stored inline).
Node = bytes | list

_TO_NIBBLES = bytes.maketrans(b"0123456789abcdef", bytes(range(16)))
_FROM_NIBBLES = bytes.maketrans(bytes(range(16)), b"0123456789abcdef")


def nibbles(key: bytes) -> bytes:
    return key.hex().encode("ascii").translate(_TO_NIBBLES)


def _pack(path: bytes) -> bytes:
    """An even number of nibbles back into bytes."""
    return bytes.fromhex(path.translate(_FROM_NIBBLES).decode("ascii"))


def compact(path: bytes, leaf: bool) -> bytes:
    """Hex-prefix encoding of a nibble path, with the leaf flag."""
    flag = 2 if leaf else 0
    if len(path) % 2:
        return _pack(bytes([flag + 1]) + path)
    return _pack(bytes([flag, 0]) + path)


def uncompact(encoded: bytes) -> tuple[bytes, bool]:
    """(nibble path, is_leaf) of a hex-prefix encoded path; ValueError on a malformed one (proofs come from elsewhere)."""
    path = nibbles(encoded)
    if not path or path[0] > 3 or (path[0] in (0, 2) and path[1] != 0):
        raise ValueError("malformed trie path")
    return path[2 - (path[0] & 1) :], path[0] >= 2


# --- RLP for trie nodes: byte strings and nested lists of them -----------------


def encode(item: Node) -> bytes:
    if type(item) is bytes:
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _length_prefix(len(item), 0x80) + item
    payload = b"".join([encode(child) for child in item])
    return _length_prefix(len(payload), 0xC0) + payload


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(size)]) + size


def decode(data: bytes) -> Node:
    """Decode a node this trie stored (trusted bytes; proofs from elsewhere go through pyrlp's strict decoder)."""
    item, end = _decode_at(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes after a trie node")
    return item


def _decode_at(data: bytes, pos: int) -> tuple[Node, int]:
    first = data[pos]
    if first < 0x80:
        return data[pos : pos + 1], pos + 1
    if first < 0xB8:
        end = pos + 1 + first - 0x80
        return data[pos + 1 : end], end
    if first < 0xC0:
        size_len = first - 0xB7
        length = int.from_bytes(data[pos + 1 : pos + 1 + size_len], "big")
        start = pos + 1 + size_len
        return data[start : start + length], start + length
    if first < 0xF8:
        start, end = pos + 1, pos + 1 + first - 0xC0
    else:
        size_len = first - 0xF7
        start = pos + 1 + size_len
        end = start + int.from_bytes(data[pos + 1 : start], "big")
    items = []
    while start < end:
        item, start = _decode_at(data, start)
        items.append(item)
    return items, end


def child_hashes(node: list) -> list[bytes]:
    """Children of a decoded node stored by hash, with repeats; children under 32 bytes are embedded in
    the parent (and, being that short, hold no hash themselves), so they need no lookup and no reference."""
    if len(node) == 17:
        refs = node[:16]
    elif uncompact(node[0])[1]:
        refs = []  # a leaf holds a value, not a child
    else:
        refs = [node[1]]
    return [ref for ref in refs if type(ref) is bytes and len(ref) == 32]


# --- the batch update ----------------------------------------------------------


class BatchUpdate:
    """Apply a block's writes to the trie at `root`, reading nodes with `node_at`
    (hash -> encoded node) and putting every node it makes into `out`."""

    def __init__(self, node_at: Callable[[bytes], bytes], out: MutableMapping[bytes, bytes]) -> None:
        self._node_at = node_at
        self._out = out

    def apply(self, root: bytes, writes: list[tuple[bytes, bytes | None]]) -> bytes:
        """The new root after `writes` (key-sorted, distinct keys; None deletes)."""
        if not writes:
            return root
        ops = [(nibbles(key), value) for key, value in writes]
        node = self._update(b"" if root == BLANK_ROOT else decode(self._node_at(root)), ops)
        if node == b"":
            return BLANK_ROOT
        encoded = encode(node)
        root = keccak(encoded)
        self._out[root] = encoded  # the root is stored by hash even when short, so lookups can start from it
        return root

    def _resolve(self, ref: Node) -> Node:
        if type(ref) is list or ref == b"":
            return ref
        return decode(self._out[ref] if ref in self._out else self._node_at(ref))

    def _ref(self, node: Node) -> Node:
        """How a parent points at `node`: inline when its encoding is under 32 bytes, else by hash."""
        if node == b"":
            return b""
        encoded = encode(node)
        if len(encoded) < 32:
            return node
        node_hash = keccak(encoded)
        self._out[node_hash] = encoded
        return node_hash

    def _update(self, node: Node, ops: list[tuple[bytes, bytes | None]]) -> Node:
        """`node` with `ops` (paths relative to it, sorted, distinct) applied."""
        if node == b"":
            return self._build([(path, value) for path, value in ops if value is not None])
        if len(node) == 2:
            path, is_leaf = uncompact(node[0])
            if is_leaf:
                return self._build(_merge_leaf(path, node[1], ops))
            if all(op_path.startswith(path) for op_path, _ in ops):
                cut = len(path)
                return self._prefixed(path, self._update(self._resolve(node[1]), [(p[cut:], v) for p, v in ops]))
            return self._update(self._as_branch(path, node[1]), ops)
        branch = list(node)
        if ops[0][0] == b"":  # sorted: a key ending at this node comes first
            branch[16] = ops[0][1] if ops[0][1] is not None else b""
            ops = ops[1:]
        for nibble, below in _by_first_nibble(ops):
            branch[nibble] = self._ref(self._update(self._resolve(branch[nibble]), below))
        return self._collapse(branch)

    def _build(self, items: list[tuple[bytes, bytes]]) -> Node:
        """The subtrie holding exactly `items` (sorted, distinct paths, values non-empty)."""
        if not items:
            return b""
        if len(items) == 1:
            return [compact(items[0][0], leaf=True), items[0][1]]
        first, last = items[0][0], items[-1][0]  # sorted: their common prefix is everyone's
        shared = 0
        while shared < len(first) and shared < len(last) and first[shared] == last[shared]:
            shared += 1
        if shared:
            below = self._build([(path[shared:], value) for path, value in items])
            return [compact(first[:shared], leaf=False), self._ref(below)]
        branch: list = [b""] * 17
        if items[0][0] == b"":
            branch[16] = items[0][1]
            items = items[1:]
        for nibble, below in _by_first_nibble(items):
            branch[nibble] = self._ref(self._build(below))
        return branch

    def _prefixed(self, path: bytes, child: Node) -> Node:
        """An extension by `path` over `child`, merged into it where the trie's shape requires."""
        if child == b"":
            return b""
        if len(child) == 2:  # leaf or extension: one node with the longer path
            child_path, is_leaf = uncompact(child[0])
            return [compact(path + child_path, leaf=is_leaf), child[1]]
        return [compact(path, leaf=False), self._ref(child)]

    def _as_branch(self, path: bytes, child_ref: Node) -> list:
        """The extension (path -> child) spelled as a branch, so ops that leave its path can be applied."""
        branch: list = [b""] * 17
        branch[path[0]] = child_ref if len(path) == 1 else self._ref([compact(path[1:], leaf=False), child_ref])
        return branch

    def _collapse(self, branch: list) -> Node:
        """A branch left with fewer than two entries becomes the smaller node it now is."""
        children = [nibble for nibble in range(16) if branch[nibble] != b""]
        if len(children) + (branch[16] != b"") >= 2:
            return branch
        if not children:
            return b"" if branch[16] == b"" else [compact(b"", leaf=True), branch[16]]
        nibble = children[0]
        return self._prefixed(bytes([nibble]), self._resolve(branch[nibble]))


def _by_first_nibble(entries: list[tuple[bytes, object]]) -> Iterator[tuple[int, list]]:
    """(nibble, the entries under it with that nibble dropped) for key-sorted entries with non-empty paths."""
    i = 0
    while i < len(entries):
        nibble = entries[i][0][0]
        j = i
        while j < len(entries) and entries[j][0][0] == nibble:
            j += 1
        yield nibble, [(path[1:], value) for path, value in entries[i:j]]
        i = j


def _merge_leaf(path: bytes, value: bytes, ops: list[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes]]:
    """The items under a leaf once `ops` apply: its own entry unless an op rewrites it, plus the ops' sets."""
    items = [(p, v) for p, v in ops if v is not None]
    if all(p != path for p, _ in ops):
        items.append((path, value))
        items.sort()
    return items


# --- building a trie from sorted keys, without recursion ----------------------


class SortedBuild:
    """The trie of key-ascending entries fed one at a time (a restored snapshot), with memory and
    stack depth bounded by the key length, not the number of keys: only the rightmost open path is
    held. Each finished node goes to `out` (hash -> encoded) as `_build` would make it, so the root
    and the stored nodes equal a BatchUpdate from the blank trie."""

    def __init__(self, out: MutableMapping[bytes, bytes]) -> None:
        self._ref = BatchUpdate(lambda node_hash: b"", out)._ref  # inline or by hash, storing hashed nodes in out
        self._out = out
        # Open branches, shallowest first: [depth of the nibble it branches on, the 17 slots, a key below it].
        self._open: list[list] = []
        self._last: tuple[bytes, bytes] | None = None  # the previous entry, whose leaf is not placed yet
        self._pending: tuple | None = None  # the finished subtree holding the previous key, not yet placed

    def add(self, key: bytes, value: bytes) -> None:
        """The next entry: its key above every key added so far, its value non-empty."""
        path = nibbles(key)
        if self._last is None:
            self._last, self._pending = (path, value), ("leaf", path, value)
            return
        prev = self._last[0]
        if not path > prev:
            raise ValueError("keys must ascend")
        shared = 0
        limit = min(len(prev), len(path))
        while shared < limit and prev[shared] == path[shared]:
            shared += 1
        self._close_below(shared)  # branches deeper than the shared prefix get no more children
        top = self._open[-1] if self._open else None
        if top is None or top[0] < shared:  # a new branch where the two keys part
            top = [shared, [b""] * 17, path]
            self._open.append(top)
            if len(prev) == shared:  # the previous key ends at the branch (it is a prefix of this one)
                top[1][16] = self._pending[2]
                self._pending = None
        if self._pending is not None:
            top[1][prev[shared]] = self._ref(self._anchored(self._pending, shared + 1))
        self._last, self._pending = (path, value), ("leaf", path, value)

    def root(self) -> bytes:
        """The root of everything added (the blank root when nothing was)."""
        if self._last is None:
            return BLANK_ROOT
        self._close_below(-1)
        encoded = encode(self._anchored(self._pending, 0))
        root = keccak(encoded)
        self._out[root] = encoded  # the root is stored by hash even when short, as BatchUpdate does
        return root

    def _close_below(self, depth: int) -> None:
        """Finish the open branches deeper than `depth`, innermost first, placing each in its parent."""
        prev = self._last[0]
        while self._open and self._open[-1][0] > depth:
            branch = self._open.pop()
            branch[1][prev[branch[0]]] = self._ref(self._anchored(self._pending, branch[0] + 1))
            self._pending = ("branch", branch[0], branch[1], branch[2])

    def _anchored(self, subtree: tuple, depth: int) -> Node:
        """A finished subtree as the node that sits at nibble `depth`: a leaf with the rest of its
        key, or a branch under an extension by the nibbles between `depth` and the branch."""
        if subtree[0] == "leaf":
            return [compact(subtree[1][depth:], leaf=True), subtree[2]]
        _, branch_depth, slots, key = subtree
        if branch_depth == depth:
            return slots
        return [compact(key[depth:branch_depth], leaf=False), self._ref(slots)]
