"""The one client of the chain: typed queries, sign-broadcast-wait, and a pipelined sender.

The CLI, the workers, the e2e tests and the benchmarks all sign and send
through here; CometBFT's RPC (abci_app.rpc.RpcClient) is the transport
underneath. Every failure is a ChainError carrying one clear line; a tx the
chain refused is a TxRejected that also carries its code, log, hash and height.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from abci_app import crypto, paging
from abci_app import tx as txlib
from abci_app.rpc import DEFAULT_NODE, RpcClient, RpcError, TxResult

FALLBACK_MIN_FEE = 1  # when the node does not publish /app/params
SEND_TIMEOUT = 30.0  # seconds a sent tx may take to reach a block


def result_code(codespace: str, code: int) -> str:
    """`(bank code 1)`, or `(code 1)` when the chain named no codespace."""
    return f"({codespace} code {code})" if codespace else f"(code {code})"


def one_line(text: str) -> str:
    """A chain log may hold newlines; an error line may not."""
    return " ".join(text.split())


def fee_for(rpc: RpcClient, min_fee: int, unsigned: Callable[[int], bytes]) -> int:
    """The fee a tx needs: min_fee, or more when its message writes more state than
    min_fee pays for (bank byte_fee). The node simulates the tx, unsigned
    (tx.build_unsigned), with min_fee (/app/simulate) and says; a node that cannot say leaves min_fee."""
    try:
        result = rpc.abci_query("/app/simulate", unsigned(min_fee))
        needed = int(json.loads(result.value)["fee_needed"]) if result.code == 0 else 0
    except (RpcError, ValueError, KeyError, TypeError):
        return min_fee
    return max(min_fee, needed)


class ChainError(Exception):
    """A query or tx the chain refused, or a node that did not answer."""


class TxRejected(ChainError):
    """A tx the mempool refused (CheckTx: nothing charged), or that failed in block `height` (its fee was charged)."""

    def __init__(self, codespace: str, code: int, log: str, tx_hash: str = "", height: int | None = None):
        where = f" (tx {tx_hash} in block {height}; the fee was charged)" if height is not None else ""
        super().__init__(f"tx rejected {result_code(codespace, code)}: {one_line(log) or 'no log'}{where}")
        self.codespace, self.code, self.log, self.hash, self.height = codespace, code, log, tx_hash, height


class ChainClient:
    """One node's view of the chain, over its CometBFT RPC."""

    def __init__(self, node: str = DEFAULT_NODE, timeout: float = 10.0):
        self.rpc = RpcClient(node, timeout=timeout)
        self._chain_id: str | None = None

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> "ChainClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- queries ---------------------------------------------------------------

    @property
    def chain_id(self) -> str:
        if self._chain_id is None:
            try:
                self._chain_id = self.rpc.chain_id()
            except RpcError as exc:
                raise ChainError(str(exc)) from None
        return self._chain_id

    def query(self, path: str, data: str = "", height: int = 0) -> bytes:
        try:
            result = self.rpc.abci_query(path, data.encode(), height=height)
        except RpcError as exc:
            raise ChainError(str(exc)) from None
        if result.code:
            raise ChainError(f"query {path} failed {result_code(result.codespace, result.code)}: {one_line(result.log) or 'no log'}")
        return result.value

    def query_json(self, path: str, data: str = "") -> Any:
        raw = self.query(path, data)
        return json.loads(raw) if raw else None

    def query_pages(self, path: str, arg: str = "") -> list:
        """Every entry of a paged list view (abci_app.paging: /datasets/list, /registry/history, ...), page by page."""
        try:
            return paging.walk(lambda data: self.query(path, data), arg)
        except ValueError as exc:
            raise ChainError(f"query {path}: {exc}") from None

    def query_int(self, path: str, data: str = "") -> int:
        """A query that answers in decimal ASCII (balances, nonces); empty is 0."""
        raw = self.query(path, data)
        try:
            return int(raw.decode() or "0")
        except (UnicodeDecodeError, ValueError):
            raise ChainError(f"query {path} returned {raw[:32]!r}, not a decimal number") from None

    def min_fee(self) -> int:
        """The chain's bank.min_fee from /app/params, or FALLBACK_MIN_FEE if the node does not publish it."""
        try:
            return int(self.query_json("/app/params")["bank"]["min_fee"])
        except (ChainError, ValueError, KeyError, TypeError):
            return FALLBACK_MIN_FEE

    def nonce(self, address: str) -> int:
        """The account's next nonce as committed (txs still in a mempool do not count)."""
        return self.query_int("/auth/nonce", address)

    def fee_needed(self, key: crypto.PrivateKey, msg: Message, nonce: int, memo: str = "") -> int:
        """min_fee, plus bank byte_fee when the message writes much state (the node simulates it, unsigned)."""
        return fee_for(self.rpc, self.min_fee(), lambda fee: txlib.build_unsigned(key.pubkey, self.chain_id, nonce, fee, msg, memo=memo))

    # --- transactions ----------------------------------------------------------

    def send(self, key: crypto.PrivateKey, msg: Message, *, fee: int | None = None, nonce: int | None = None, memo: str = "",
             wait: bool = True, timeout: float = SEND_TIMEOUT) -> TxResult:
        """Sign `msg` with the account's next nonce and the fee the chain needs (unless given), broadcast it,
        and by default wait for its block. The result is committed with code 0, or (wait=False) in the
        mempool with height None; anything else raises TxRejected or ChainError."""
        nonce = self.nonce(key.address) if nonce is None else nonce
        fee = self.fee_needed(key, msg, nonce, memo) if fee is None else fee
        tx_hash = self.broadcast(txlib.build(key, self.chain_id, nonce, fee, msg, memo=memo))
        if not wait:
            return TxResult(hash=tx_hash, height=None, code=0, log="", codespace="", events=[])
        result = self.wait_for_tx(tx_hash, timeout=timeout)
        if result.code:
            raise TxRejected(result.codespace, result.code, result.log, result.hash, result.height)
        return result

    def broadcast(self, raw: bytes) -> str:
        """Hand signed tx bytes to the node's mempool (broadcast_tx_sync: CheckTx, no block); the tx hash."""
        try:
            sent = self.rpc.broadcast_tx_sync(raw)
        except RpcError as exc:
            raise ChainError(str(exc)) from None
        if sent.code:
            raise TxRejected(sent.codespace, sent.code, sent.log, sent.hash)
        return sent.hash

    def wait_for_tx(self, tx_hash: str, timeout: float = SEND_TIMEOUT, poll: float = 0.2) -> TxResult:
        """The tx's result once it is in a block, whatever its code."""
        try:
            return self.rpc.wait_for_tx(tx_hash, timeout=timeout, poll=poll)
        except RpcError as exc:
            raise ChainError(str(exc)) from None

    def pipeline(self, key: crypto.PrivateKey | None = None, *, fee: int | None = None, window: int = 16,
                 timeout: float = SEND_TIMEOUT, poll: float = 0.1) -> "Pipeline":
        """A sender of many txs through this node without a block's wait for each (see Pipeline)."""
        return Pipeline(self, key, fee=fee, window=window, timeout=timeout, poll=poll)


class Pipeline:
    """Many txs through one node, in order, with at most `window` of them not yet in a block.

    `send(msg)` signs with `key` and a nonce counted here (read from the chain
    once), so a sender need not wait a block per tx: the mempool admits each
    account's nonces in order. `broadcast(raw)` sends pre-built tx bytes, which
    carry their own nonces. When the window is full the oldest tx is awaited
    first. A tx the mempool refuses raises TxRejected and uses no nonce; the
    next `send` then waits for the txs in flight and reads the nonce from the
    chain again (the key may have been used elsewhere). `wait_all()` awaits
    the rest; `results` holds every awaited tx's result by hash, in send
    order, failed ones included (their code says). One thread per Pipeline.
    """

    def __init__(self, client: ChainClient, key: crypto.PrivateKey | None = None, *, fee: int | None = None, window: int = 16,
                 timeout: float = SEND_TIMEOUT, poll: float = 0.1):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.client, self.key, self.fee, self.window, self.timeout, self.poll = client, key, fee, window, timeout, poll
        self.nonce: int | None = None  # the next nonce to sign with; None: read it from the chain first
        self.in_flight: deque[str] = deque()  # hashes broadcast and not yet seen in a block, oldest first
        self.results: dict[str, TxResult] = {}

    def send(self, msg: Message, *, fee: int | None = None, memo: str = "") -> str:
        """Sign `msg` with the next nonce and broadcast it; its hash. fee: else the pipeline's, else what the chain needs."""
        if self.key is None:
            raise ValueError("this pipeline has no key: pass one to sign messages, or broadcast signed bytes")
        self._make_room()
        if self.nonce is None:
            self.wait_all()  # the chain's nonce counts only committed txs
            self.nonce = self.client.nonce(self.key.address)
        fee = fee if fee is not None else self.fee if self.fee is not None else self.client.fee_needed(self.key, msg, self.nonce, memo)
        raw = txlib.build(self.key, self.client.chain_id, self.nonce, fee, msg, memo=memo)
        try:
            tx_hash = self._broadcast(raw)
        except ChainError:  # refused, or no answer: whether this nonce was used is for the chain to say
            self.nonce = None
            raise
        self.nonce += 1
        return tx_hash

    def broadcast(self, raw: bytes) -> str:
        """Broadcast pre-built, signed tx bytes; its hash."""
        self._make_room()
        return self._broadcast(raw)

    def wait_all(self) -> dict[str, TxResult]:
        """Await every tx in flight; every result so far, by hash, in send order."""
        while self.in_flight:
            self._settle_oldest()
        return self.results

    def _broadcast(self, raw: bytes) -> str:
        tx_hash = self.client.broadcast(raw)
        self.in_flight.append(tx_hash)
        return tx_hash

    def _make_room(self) -> None:
        while len(self.in_flight) >= self.window:
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        tx_hash = self.in_flight[0]
        self.results[tx_hash] = self.client.wait_for_tx(tx_hash, timeout=self.timeout, poll=self.poll)
        self.in_flight.popleft()
