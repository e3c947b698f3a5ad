"""The persistent store: one SQLite file holding the flat state, the Merkle trie nodes and the committed roots."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from abci_app.state.cache import BoundedCache
from abci_app.state.overlay import Overlay
from abci_app.state.proof import BLANK_ROOT, lookup

NODE_CACHE_SIZE = 100_000  # committed trie nodes kept in memory (~50 MB); nodes are immutable, so it never goes stale
VALUE_CACHE_SIZE = 100_000  # committed values kept in memory; Store.commit updates them, so they never go stale
PREFIX_PAGE = 256  # rows per SQL page in prefix iteration: no statement stays open across a commit

_SCHEMA = (
    # Flat latest state, for reads and ordered prefix iteration (BLOBs compare bytewise).
    "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    # Trie nodes by keccak hash; never deleted, so every committed root stays readable.
    "CREATE TABLE IF NOT EXISTS nodes (hash BLOB PRIMARY KEY, node BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS roots (height INTEGER PRIMARY KEY, app_hash BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), height INTEGER NOT NULL, app_hash BLOB NOT NULL)",
)


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


def _prefix_end(prefix: bytes) -> bytes | None:
    """Smallest key above every key starting with prefix; None when there is none (empty or all-0xff prefix)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


class Store:
    """Committed state in one SQLite file; a block is staged in an Overlay and lands in one transaction."""

    def __init__(self, path: str | os.PathLike) -> None:
        # Autocommit mode, so that BEGIN/COMMIT below are the only transaction boundaries.
        self._conn = sqlite3.connect(os.fspath(path), isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # a returned commit survives power loss
        self._conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._conn.execute("INSERT OR IGNORE INTO meta VALUES (0, 0, ?)", (BLANK_ROOT,))
        self._conn.execute("COMMIT")
        self._height, self._app_hash = self._conn.execute("SELECT height, app_hash FROM meta").fetchone()
        self._committed = _Committed(self._conn)

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

    def commit(self, block: Overlay, height: int) -> bytes:
        """Persist the block's writes, new trie nodes, root and meta in ONE transaction; returns the app hash."""
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
            conn.executemany("INSERT OR IGNORE INTO nodes VALUES (?, ?)", nodes)
            conn.execute("INSERT INTO roots VALUES (?, ?)", (height, root))
            conn.execute("UPDATE meta SET height = ?, app_hash = ? WHERE id = 0", (height, root))
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
        """Committed root at height; KeyError if none was committed there."""
        row = self._conn.execute("SELECT app_hash FROM roots WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise KeyError(f"no committed root at height {height}")
        return row[0]

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
