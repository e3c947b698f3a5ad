"""Persistent state: SQLite store, block/tx overlays, Merkle-Patricia app hash and proofs."""

from abci_app.state.overlay import Overlay
from abci_app.state.proof import BLANK_ROOT, verify_proof
from abci_app.state.store import QueryResult, Store

__all__ = ["BLANK_ROOT", "Overlay", "QueryResult", "Store", "verify_proof"]
