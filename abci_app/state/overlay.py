"""Block and transaction write-sets over committed state, and the trie work that hashes them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from abci_app.state import mpt

_UNSET = object()


class Committed(Protocol):
    """The read side of committed state that a block overlay falls through to."""

    def get(self, key: bytes) -> bytes | None: ...
    def iter_prefix(self, prefix: bytes, after: bytes = b"") -> Iterator[tuple[bytes, bytes]]: ...
    def node(self, node_hash: bytes) -> bytes: ...  # raises KeyError when absent


class NodeBuffer:
    """Trie node db of a block: nodes made in this block stay in memory, reads fall through to committed nodes."""

    def __init__(self, committed: Committed) -> None:
        self.committed = committed
        self.new: dict[bytes, bytes] = {}

    def __getitem__(self, node_hash: bytes) -> bytes:
        node = self.new.get(node_hash)
        return node if node is not None else self.committed.node(node_hash)

    def reachable_new(self, root: bytes) -> list[tuple[bytes, bytes]]:
        """New nodes reachable from root: hashing twice in a block (InitChain, then block 1) orphans some, not worth storing."""
        found: dict[bytes, bytes] = {}
        todo = [root]
        while todo:
            node_hash = todo.pop()
            node = self.new.get(node_hash)
            if node is None or node_hash in found:
                continue  # committed already, and so is everything below it
            found[node_hash] = node
            todo.extend(mpt.child_hashes(mpt.decode(node)))
        return sorted(found.items())


class Overlay:
    """The write-set of a block (over committed state), or of one tx nested in a block."""

    # Three of these are made per tx (CheckTx, proposals, blocks): slots, and no trie buffer for tx overlays.
    __slots__ = ("_committed", "_parent", "_base_root", "_base_height", "_writes", "_nodes", "_root", "_hashed")

    def __init__(self, committed: Committed, root: bytes, height: int, parent: Overlay | None = None) -> None:
        self._committed = committed
        self._parent = parent
        self._base_root = root  # committed app hash this block builds on
        self._base_height = height  # committed height this block builds on; commit checks it is still current
        self._writes: dict[bytes, bytes | None] = {}  # None = delete
        if parent is None:
            # Block overlays only: the root of what was hashed so far, so that each app_hash() applies only what changed since.
            self._nodes = NodeBuffer(committed)
            self._root = root
            self._hashed: dict[bytes, bytes | None] = {}  # writes already applied to self._root

    def get(self, key: bytes) -> bytes | None:
        overlay = self
        while True:  # a loop, not recursion: tx reads pass through up to four overlays
            writes = overlay._writes
            if key in writes:
                return writes[key]
            if overlay._parent is None:
                return overlay._committed.get(key)
            overlay = overlay._parent

    def set(self, key: bytes, value: bytes) -> None:
        assert type(key) is bytes and type(value) is bytes, "state keys and values are bytes"
        assert value, "empty value would mean delete in the trie"
        self._writes[key] = value

    def delete(self, key: bytes) -> None:
        assert type(key) is bytes, "state keys are bytes"
        self._writes[key] = None

    def iter_prefix(self, prefix: bytes, after: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Merged view sorted by key bytes, of the keys above `after` (a whole key: a page's last) if given; own
        writes are snapshotted now, so writing while iterating is safe."""
        own = sorted((k, v) for k, v in self._writes.items() if k.startswith(prefix) and k > after)
        below = self._parent.iter_prefix(prefix, after) if self._parent is not None else self._committed.iter_prefix(prefix, after)
        return _merge(below, own)

    def child(self) -> Overlay:
        return Overlay(self._committed, self._base_root, self._base_height, parent=self)

    def fork(self) -> Overlay:
        """An independent block overlay holding this block's writes so far (and the trie work done on them):
        InitChain's writes, which each execution of block 1 builds on without changing them for the others."""
        assert self._parent is None, "fork() is for block overlays"
        fork = Overlay(self._committed, self._base_root, self._base_height)
        fork._writes = dict(self._writes)
        fork._nodes.new = dict(self._nodes.new)
        fork._root, fork._hashed = self._root, dict(self._hashed)
        return fork

    def write(self) -> None:
        """Merge this child's writes into its parent; the child stays usable and starts empty."""
        assert self._parent is not None, "write() merges a tx overlay into its block; commit a block with Store.commit"
        self._parent._writes.update(self._writes)
        self._writes = {}

    def app_hash(self) -> bytes:
        """Root the state would have if this block were committed; persists nothing. The trie is
        updated in one sorted batch of the keys written since the last call (mpt.BatchUpdate)."""
        assert self._parent is None, "app_hash() is for block overlays; write() the tx first"
        changed = [(key, value) for key, value in sorted(self._writes.items()) if self._hashed.get(key, _UNSET) != value]
        if changed:
            self._root = mpt.BatchUpdate(self._nodes.__getitem__, self._nodes.new).apply(self._root, changed)
            self._hashed.update(changed)
        return self._root

    def writes(self) -> list[tuple[bytes, bytes | None]]:
        return sorted(self._writes.items())

    def _staged(self) -> tuple[bytes, list[tuple[bytes, bytes | None]], list[tuple[bytes, bytes]]]:
        """For Store.commit: (root, sorted writes, new trie nodes to store)."""
        root = self.app_hash()
        return root, self.writes(), self._nodes.reachable_new(root)


def _merge(
    below: Iterable[tuple[bytes, bytes]], own: list[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes]]:
    """Merge two key-sorted streams; own entries win, and own deletes (None) hide the key."""
    i = 0
    for key, value in below:
        while i < len(own) and own[i][0] < key:
            if own[i][1] is not None:
                yield own[i]  # type: ignore[misc]
            i += 1
        if i < len(own) and own[i][0] == key:
            if own[i][1] is not None:
                yield own[i]  # type: ignore[misc]
            i += 1
        else:
            yield key, value
    for key, value in own[i:]:
        if value is not None:
            yield key, value
