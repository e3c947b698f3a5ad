"""Persistent state: SQLite store, block/tx overlays, Merkle-Patricia app hash and proofs."""

from abci_app.state.overlay import Overlay
from abci_app.state.proof import BLANK_ROOT, verify_proof
from abci_app.state.pruning import ARCHIVE, Pruning
from abci_app.state.store import HeightUnavailable, QueryResult, Store

__all__ = ["ARCHIVE", "BLANK_ROOT", "HeightUnavailable", "Overlay", "Pruning", "QueryResult", "Store", "verify_proof"]
