"""A Python client of the chain for workers and scripts: typed queries and
sign-broadcast-wait, with every failure a ChainError carrying one clear line."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from abci_app import crypto
from abci_app import tx as txlib
from abci_app.rpc import RpcClient, RpcError, TxResult


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
    def __init__(self, codespace: str, code: int, log: str, where: str):
        super().__init__(f"tx rejected ({codespace or 'runtime'} code {code}) {where}: {log or 'no log'}")
        self.codespace, self.code, self.log = codespace, code, log


class ChainClient:
    def __init__(self, node: str, timeout: float = 10.0):
        self.rpc = RpcClient(node, timeout=timeout)
        self._chain_id: str | None = None

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> "ChainClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def chain_id(self) -> str:
        if self._chain_id is None:
            self._chain_id = self.rpc.chain_id()
        return self._chain_id

    def query(self, path: str, data: str = "", height: int = 0) -> bytes:
        try:
            result = self.rpc.abci_query(path, data.encode(), height=height)
        except RpcError as exc:
            raise ChainError(str(exc)) from None
        if result.code:
            raise ChainError(f"query {path} failed ({result.codespace} code {result.code}): {result.log}")
        return result.value

    def query_json(self, path: str, data: str = "") -> Any:
        raw = self.query(path, data)
        return json.loads(raw) if raw else None

    def query_int(self, path: str, data: str = "") -> int:
        return int(self.query(path, data) or b"0")

    def min_fee(self) -> int:
        return int((self.query_json("/app/params") or {}).get("bank", {}).get("min_fee", 1))

    def send(self, key: crypto.PrivateKey, msg: Message, fee: int | None = None, wait: bool = True, timeout: float = 30.0) -> TxResult | None:
        """Sign with the account's next nonce (and by default the fee the chain needs), broadcast, and (by default) wait for the block."""
        nonce = self.query_int("/auth/nonce", key.address)
        if fee is None:
            fee = fee_for(self.rpc, self.min_fee(), lambda f: txlib.build_unsigned(key.pubkey, self.chain_id, nonce, f, msg))
        raw = txlib.build(key, self.chain_id, nonce, fee, msg)
        try:
            sent = self.rpc.broadcast_tx_sync(raw)
            if sent.code:
                raise TxRejected(sent.codespace, sent.code, sent.log, "by the mempool")
            if not wait:
                return None
            result = self.rpc.wait_for_tx(sent.hash, timeout=timeout)
        except RpcError as exc:
            raise ChainError(str(exc)) from None
        if result.code:
            raise TxRejected(result.codespace, result.code, result.log, f"in block {result.height}")
        return result
