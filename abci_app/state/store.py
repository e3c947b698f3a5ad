"""The persistent store: one SQLite file holding the flat state, the Merkle trie nodes and the committed roots."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from abci_app.state.cache import BoundedCache
from abci_app.state.mpt import SortedBuild, child_hashes, decode
from abci_app.state.overlay import Overlay
from abci_app.state.proof import BLANK_ROOT, lookup
from abci_app.state.pruning import ARCHIVE, Pruning

NODE_CACHE_SIZE = 100_000  # committed trie nodes kept in memory (~50 MB); nodes are immutable, so it never goes stale
VALUE_CACHE_SIZE = 100_000  # committed values kept in memory; Store.commit updates them, so they never go stale
PREFIX_PAGE = 256  # rows per SQL page in prefix iteration: no statement stays open across a commit
RECOUNT_PAGE = 4096  # trie nodes read per page when recounting references: memory stays flat however big the trie

_SCHEMA = (
    # Flat latest state, for reads and ordered prefix iteration (BLOBs compare bytewise).
    "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    # Trie nodes by keccak hash, shared by every height that reaches them; deleted only by pruning,
    # once no retained root reaches them.
    "CREATE TABLE IF NOT EXISTS nodes (hash BLOB PRIMARY KEY, node BLOB NOT NULL) WITHOUT ROWID",
    # Roots of the retained heights (all of them in an archive node).
    "CREATE TABLE IF NOT EXISTS roots (height INTEGER PRIMARY KEY, app_hash BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), height INTEGER NOT NULL, app_hash BLOB NOT NULL)",
    # While pruning: per node, the references to it from stored nodes plus retained roots (repeats count).
    "CREATE TABLE IF NOT EXISTS noderefs (hash BLOB PRIMARY KEY, refs INTEGER NOT NULL) WITHOUT ROWID",
    # Node-local facts: refcounted (1 while noderefs is kept), base_height (the first height this node committed).
    "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)


class HeightUnavailable(KeyError):
    """No committed root at a height: never reached, before this node's first state, or pruned. str() says which."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError would quote it


@dataclass(frozen=True)
class QueryResult:
    key: bytes
    value: bytes | None  # None when absent
    height: int
    proof: list[bytes] | None  # RLP-encoded trie nodes from the root down, when asked for


class _Committed:
    """Reads of committed state, shared by block overlays and queries."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.cache = BoundedCache(NODE_CACHE_SIZE)  # node hash -> node
        # Hot keys (params, the fee collector, busy accounts) are read by every tx; a SQLite
        # point read costs ~10 us. None caches "absent".
        self.values = BoundedCache(VALUE_CACHE_SIZE)

    def get(self, key: bytes) -> bytes | None:
        try:
            return self.values[key]
        except KeyError:
            pass
        row = self.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        value = None if row is None else row[0]
        self.values.put(key, value)
        return value

    def committed(self, writes: list[tuple[bytes, bytes | None]]) -> None:
        """Keep cached values equal to the database after a commit of `writes`."""
        for key, value in writes:
            self.values.put(key, value)

    def iter_prefix(self, prefix: bytes, after: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Keys with `prefix` in byte order, from the first above `after` if given (a page starts where the last ended)."""
        end = _prefix_end(prefix)
        bound, op = (after, ">") if after >= prefix else (prefix, ">=")
        while True:
            sql = f"SELECT key, value FROM kv WHERE key {op} ?" + ("" if end is None else " AND key < ?")
            args = (bound,) if end is None else (bound, end)
            rows = self.conn.execute(sql + " ORDER BY key LIMIT ?", (*args, PREFIX_PAGE)).fetchall()
            yield from rows
            if len(rows) < PREFIX_PAGE:
                return
            bound, op = rows[-1][0], ">"

    def node(self, node_hash: bytes) -> bytes:
        node = self.cache.get(node_hash)
        if node is None:
            row = self.conn.execute("SELECT node FROM nodes WHERE hash = ?", (node_hash,)).fetchone()
            if row is None:
                raise KeyError(node_hash)
            node = row[0]
            self.cache.put(node_hash, node)
        return node


def _recount_refs(conn: sqlite3.Connection) -> None:
    """noderefs from scratch: the references from every stored node and retained root. Reads the
    nodes a page at a time, so memory stays flat however big the trie."""
    conn.execute("DELETE FROM noderefs")
    add = "INSERT INTO noderefs VALUES (?, ?) ON CONFLICT (hash) DO UPDATE SET refs = refs + excluded.refs"
    after = b""
    while True:
        page = conn.execute("SELECT hash, node FROM nodes WHERE hash > ? ORDER BY hash LIMIT ?", (after, RECOUNT_PAGE)).fetchall()
        if not page:
            break
        adds: dict[bytes, int] = {}
        for node_hash, node in page:
            adds.setdefault(node_hash, 0)
            for child in child_hashes(decode(node)):
                adds[child] = adds.get(child, 0) + 1
        conn.executemany(add, adds.items())
        after = page[-1][0]
    conn.executemany(add, ((root, 1) for (root,) in conn.execute("SELECT app_hash FROM roots").fetchall() if root != BLANK_ROOT))


def _prefix_end(prefix: bytes) -> bytes | None:
    """Smallest key above every key starting with prefix; None when there is none (empty or all-0xff prefix)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


class Store:
    """Committed state in one SQLite file; a block is staged in an Overlay and lands in one transaction.

    Pruning (when `pruning` is not the archive setting) keeps a reference count per trie node: the
    stored nodes and retained roots that point at it. A commit adds the counts of its new nodes'
    children; pruning a height drops its root's count, and a node left with none is deleted and
    drops its own children's counts, all in the commit's transaction. Nodes shared across heights
    so live exactly as long as some retained height reaches them."""

    def __init__(self, path: str | os.PathLike, pruning: Pruning = ARCHIVE, protect: Collection[int] = ()) -> None:
        """protect: heights that turning pruning on must keep (the snapshots on disk)."""
        self.path = os.fspath(path)
        self.pruning = pruning
        # Autocommit mode, so that BEGIN/COMMIT below are the only transaction boundaries.
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # a returned commit survives power loss
        self._conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._conn.execute("INSERT OR IGNORE INTO meta VALUES (0, 0, ?)", (BLANK_ROOT,))
        self._conn.execute("COMMIT")
        self._height, self._app_hash = self._conn.execute("SELECT height, app_hash FROM meta").fetchone()
        self._committed = _Committed(self._conn)
        self._refcounted = bool(self._setting("refcounted"))
        if pruning.archive and self._refcounted:
            self._in_transaction(self._stop_refcounts)  # an archive needs no counts; pruning again rebuilds them
        elif not pruning.archive and not self._refcounted:
            self._in_transaction(lambda: self._rebuild_refcounts(protect))  # an archive (or older store) starts pruning

    def _setting(self, name: str) -> int | None:
        row = self._conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _set(self, name: str, value: int) -> None:
        self._conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, value))

    def _in_transaction(self, work) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            work()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _stop_refcounts(self) -> None:
        self._conn.execute("DELETE FROM noderefs")
        self._set("refcounted", 0)
        self._refcounted = False

    def _rebuild_refcounts(self, protect: Collection[int]) -> None:
        """Count every reference from scratch, delete the nodes nothing reaches, and prune what the
        settings say, except the protected heights. Runs once, when pruning is turned on."""
        _recount_refs(self._conn)
        self._set("refcounted", 1)
        self._refcounted = True
        # Nodes no root reaches (an archive stored orphans before reachable_new filtered them) go now.
        orphans = self._conn.execute("SELECT hash FROM noderefs WHERE refs = 0").fetchall()
        self._drop_refs({node_hash: 0 for (node_hash,) in orphans})
        self._prune(self._height, protect)

    def _add_refs(self, root: bytes, nodes: list[tuple[bytes, bytes]]) -> None:
        """Count the references a commit adds: its root's, and those of each node it stores for the first time."""
        conn = self._conn
        adds: dict[bytes, int] = {}
        known = self._by_hash("SELECT hash, refs FROM noderefs", [node_hash for node_hash, _ in nodes])
        for node_hash, node in nodes:
            if node_hash in known:
                continue  # stored already, and its children counted then
            adds.setdefault(node_hash, 0)
            for child in child_hashes(decode(node)):
                adds[child] = adds.get(child, 0) + 1
        if root != BLANK_ROOT:
            adds[root] = adds.get(root, 0) + 1
        conn.executemany(
            "INSERT INTO noderefs VALUES (?, ?) ON CONFLICT (hash) DO UPDATE SET refs = refs + excluded.refs", adds.items()
        )

    def _drop_refs(self, drops: dict[bytes, int]) -> None:
        """Subtract references; delete each node left with none, which drops its children's.

        Works in waves: a node deleted in one wave passes its children's drops to the next, so every
        node's drops of a wave are summed before its count is read."""
        conn = self._conn
        while drops:
            freed, kept = [], []
            refs = self._by_hash("SELECT hash, refs FROM noderefs", list(drops))
            for node_hash, count in drops.items():
                held = refs.get(node_hash, -1)
                assert held >= count, f"trie node {node_hash.hex()} has fewer references than dropped"
                (freed if held == count else kept).append((held - count, node_hash))
            conn.executemany("UPDATE noderefs SET refs = ? WHERE hash = ?", kept)
            drops = {}
            for node in self._by_hash("SELECT hash, node FROM nodes", [h for _, h in freed]).values():
                for child in child_hashes(decode(node)):
                    drops[child] = drops.get(child, 0) + 1
            conn.executemany("DELETE FROM nodes WHERE hash = ?", [(h,) for _, h in freed])
            conn.executemany("DELETE FROM noderefs WHERE hash = ?", [(h,) for _, h in freed])

    def _by_hash(self, select: str, hashes: list[bytes]) -> dict:
        """{hash: column} for the rows of `select` (two columns, keyed by hash) among hashes; one statement per 500."""
        found = {}
        for i in range(0, len(hashes), 500):
            batch = hashes[i : i + 500]
            found.update(self._conn.execute(f"{select} WHERE hash IN ({','.join('?' * len(batch))})", batch).fetchall())
        return found

    def _prune(self, height: int, protect) -> None:
        """Drop the roots of heights at or below height - keep_recent, except protected ones, and the nodes only they reached."""
        cutoff = height - self.pruning.keep_recent
        rows = self._conn.execute("SELECT height, app_hash FROM roots WHERE height <= ?", (cutoff,)).fetchall()
        pruned = [(h, root) for h, root in rows if h not in protect]
        if not pruned:
            return
        drops: dict[bytes, int] = {}
        for _, root in pruned:
            if root != BLANK_ROOT:
                drops[root] = drops.get(root, 0) + 1
        self._conn.executemany("DELETE FROM roots WHERE height = ?", [(h,) for h, _ in pruned])
        self._drop_refs(drops)

    @property
    def height(self) -> int:
        """Last committed height, 0 when new."""
        return self._height

    @property
    def app_hash(self) -> bytes:
        """Last committed root; the blank trie root when new."""
        return self._app_hash

    def begin_block(self) -> Overlay:
        return Overlay(self._committed, self._app_hash, self._height)

    def commit(self, block: Overlay, height: int, protect: Collection[int] = ()) -> bytes:
        """Persist the block's writes, new trie nodes, root and meta in ONE transaction; returns the app hash.
        When pruning is due, the same transaction prunes old heights, except those in `protect`."""
        assert height > self._height, f"commit height {height} not above committed height {self._height}"
        assert block._parent is None, "commit a block overlay, not a tx overlay"
        assert block._committed is self._committed, "block overlay from another store"
        assert block._base_height == self._height, "stale block overlay: state was committed since it began"
        root, writes, nodes = block._staged()  # all trie work happens before the transaction opens
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", [(k, v) for k, v in writes if v is not None])
            conn.executemany("DELETE FROM kv WHERE key = ?", [(k,) for k, v in writes if v is None])
            if self._refcounted:
                self._add_refs(root, nodes)  # before the nodes land: "stored already" means before this commit
            conn.executemany("INSERT OR IGNORE INTO nodes VALUES (?, ?)", nodes)
            conn.execute("INSERT INTO roots VALUES (?, ?)", (height, root))
            conn.execute("UPDATE meta SET height = ?, app_hash = ? WHERE id = 0", (height, root))
            if self._height == 0:
                self._set("base_height", height)
            if self._refcounted and height % self.pruning.interval == 0:
                self._prune(height, protect)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._height, self._app_hash = height, root
        self._committed.committed(writes)
        for node_hash, node in nodes:  # the next block starts from these paths
            self._committed.cache.put(node_hash, node)
        return root

    def root_at(self, height: int) -> bytes:
        """Committed root at a retained height; HeightUnavailable, saying why, otherwise."""
        row = self._conn.execute("SELECT app_hash FROM roots WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise HeightUnavailable(self._why_unavailable(height))
        return row[0]

    def retained_heights(self) -> list[int]:
        """Heights whose state can still be read and proved, ascending."""
        return [h for (h,) in self._conn.execute("SELECT height FROM roots ORDER BY height")]

    def _why_unavailable(self, height: int) -> str:
        if not 1 <= height <= self._height:
            return f"no committed state at height {height} (latest is {self._height})"
        base = self._setting("base_height") or 1
        if height < base:
            return f"no state at height {height}: this node's state starts at height {base} (restored from a snapshot)"
        if self.pruning.archive:
            return f"height {height} is pruned (by an earlier pruning setting of this node)"
        return f"height {height} is pruned: this node keeps the last {self.pruning.keep_recent} heights"

    def is_empty(self) -> bool:
        """Nothing committed yet."""
        return self._height == 0 and self._conn.execute("SELECT 1 FROM kv LIMIT 1").fetchone() is None

    def holds_only_restore(self) -> bool:
        """The state is a restored snapshot no block has built on. If CometBFT state-syncs again (it died
        before saving its own state after our restore), that state may be replaced by a new restore."""
        return self._height > 0 and self._setting("restored") == self._height

    def begin_restore(self) -> Restoring:
        """Stage a snapshot's entries on disk; the store changes only when the staged root is committed."""
        if not (self.is_empty() or self.holds_only_restore()):
            raise RuntimeError(f"cannot restore into a store with state at height {self._height}")
        return Restoring(self)

    def _restored(self, height: int, root: bytes) -> None:
        """A Restoring committed: drop what this connection remembers of the state before it."""
        self._height, self._app_hash = height, root
        self._committed.values = BoundedCache(VALUE_CACHE_SIZE)  # may hold reads of the replaced state

    def query(self, key: bytes, height: int = 0, prove: bool = False) -> QueryResult:
        """Value at a committed height (0 = latest), read from the trie at that height's root when proving or historical."""
        if height == 0 or height == self._height:
            height, root = self._height, self._app_hash
            if not prove:
                return QueryResult(key, self._committed.get(key), height, None)
        else:
            root = self.root_at(height)
        value, proof = lookup(self._committed.node, root, key)
        return QueryResult(key, value, height, proof if prove else None)

    def close(self) -> None:
        self._conn.close()


class Restoring:
    """A snapshot being restored, staged in one open transaction on a connection of its own: its entries
    go to the kv table and its trie nodes to the nodes table as they arrive, so memory holds only the
    trie's open path (mpt.SortedBuild), never the state. The store's own connection does not see any
    of it; `commit` makes it the store's state in one step, `abort` leaves the store as it was."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._conn = sqlite3.connect(store.path, isolation_level=None)
        self._closed = False
        try:
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._conn.close()
            raise
        if not store.is_empty():  # an earlier restore no block built on: this one replaces it
            for table in ("kv", "nodes", "roots", "noderefs"):
                self._conn.execute(f"DELETE FROM {table}")
            self._conn.execute("DELETE FROM settings WHERE name IN ('base_height', 'restored')")
            self._conn.execute("UPDATE meta SET height = 0, app_hash = ? WHERE id = 0", (BLANK_ROOT,))
        self._new_nodes: dict[bytes, bytes] = {}
        self._trie = SortedBuild(self._new_nodes)

    def add(self, entries: list[tuple[bytes, bytes]]) -> None:
        """The next entries, keys above all before (ValueError otherwise), values non-empty."""
        for key, value in entries:
            self._trie.add(key, value)
        self._conn.executemany("INSERT INTO kv VALUES (?, ?)", entries)
        self._flush_nodes()

    def root(self) -> bytes:
        """The root of the entries added; call once, after the last."""
        root = self._trie.root()
        self._flush_nodes()
        return root

    def commit(self, height: int, root: bytes) -> None:
        """Make the staged state the store's, at `height` with `root` (from root())."""
        conn = self._conn
        conn.execute("INSERT INTO roots VALUES (?, ?)", (height, root))
        conn.execute("UPDATE meta SET height = ?, app_hash = ? WHERE id = 0", (height, root))
        conn.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)", [("base_height", height), ("restored", height)])
        if self._store._refcounted:
            _recount_refs(conn)
        conn.execute("COMMIT")
        self.abort()  # closes the connection: nothing is left to roll back
        self._store._restored(height, root)

    def abort(self) -> None:
        """Drop everything staged; the store is unchanged. Safe to call more than once, or after commit."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        finally:
            self._conn.close()

    def _flush_nodes(self) -> None:
        # A build from the blank trie makes no orphans; identical subtries under two keys are one row.
        self._conn.executemany("INSERT OR IGNORE INTO nodes VALUES (?, ?)", self._new_nodes.items())
        self._new_nodes.clear()
