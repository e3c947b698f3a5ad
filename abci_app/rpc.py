"""A small client for CometBFT's JSON-RPC over HTTP (GET with query params).

The transport under abci_app.client.ChainClient, also used directly by the
localnet and the CLI's queries. Every failure is a RpcError with one line
that says what went wrong and what to do.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

import httpx

DEFAULT_NODE = "http://127.0.0.1:26657"


class RpcError(Exception):
    """The node could not be reached, or answered with an error."""


@dataclass(frozen=True)
class BroadcastResult:
    hash: str  # upper-case hex, as CometBFT prints it
    code: int
    log: str
    codespace: str


@dataclass(frozen=True)
class TxResult:
    hash: str
    height: int | None  # None: accepted by the mempool, not waited for (ChainClient.send(wait=False))
    code: int
    log: str
    codespace: str
    events: list[dict]


@dataclass(frozen=True)
class AbciQueryResult:
    code: int
    log: str
    key: bytes
    value: bytes
    height: int
    proof_ops: list[dict]
    codespace: str


class RpcClient:
    def __init__(self, node: str = DEFAULT_NODE, timeout: float = 10.0, *, max_bytes: int | None = None, deadline: float | None = None):
        """`timeout` bounds each socket operation; `deadline` (seconds) and `max_bytes` optionally bound a whole
        answer, for callers that read from a node they do not trust to answer promptly or briefly (the explorer)."""
        self.node = node.rstrip("/")
        if "://" not in self.node:
            self.node = "http://" + self.node
        self._http = httpx.Client(timeout=timeout)
        self.max_bytes, self.deadline = max_bytes, deadline

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, method: str, **params) -> dict:
        """One JSON-RPC call; returns its `result` object."""
        query = {k: _param(v) for k, v in params.items() if v is not None}
        try:
            if self.max_bytes is None and self.deadline is None:
                response = self._http.get(f"{self.node}/{method}", params=query)
                status, raw = response.status_code, response.content
            else:
                status, raw = self._bounded_get(method, query)
        except httpx.TimeoutException:
            raise RpcError(f"node {self.node} timed out on {method}") from None
        except httpx.HTTPError:
            raise RpcError(f"node not running at {self.node} (start one with `make localnet`, or pass --node)") from None
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python parses
            raise RpcError(f"node {self.node} answered {method} with HTTP {status}, not JSON") from None
        if not isinstance(body, dict) or ("error" not in body and "result" not in body):
            raise RpcError(f"node {self.node} answered {method} with JSON that is not a JSON-RPC answer")
        if "error" in body:
            error = body["error"]
            detail = (error.get("data") or error.get("message") if isinstance(error, dict) else None) or str(error)
            raise RpcError(f"{method} failed: {detail}")
        return body["result"]

    def _bounded_get(self, method: str, query: dict) -> tuple[int, bytes]:
        """GET read in pieces, refused past `max_bytes` or `deadline` seconds in all (a per-read timeout alone
        lets a node that sends a byte now and then hold the caller forever)."""
        started, chunks, size = time.monotonic(), [], 0
        with self._http.stream("GET", f"{self.node}/{method}", params=query) as response:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if self.max_bytes is not None and size > self.max_bytes:
                    raise RpcError(f"node {self.node} answered {method} with more than {self.max_bytes} bytes: refusing it")
                if self.deadline is not None and time.monotonic() - started > self.deadline:
                    raise RpcError(f"node {self.node} took more than {self.deadline:.0f}s to answer {method}")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)

    # --- typed helpers ------------------------------------------------------

    def status(self) -> dict:
        return self.call("status")

    def latest_height(self) -> int:
        return int(self.status()["sync_info"]["latest_block_height"])

    def chain_id(self) -> str:
        return self.status()["node_info"]["network"]

    def validators(self, height: int | None = None) -> list[dict]:
        return self.call("validators", height=height, per_page=100)["validators"]

    def header(self, height: int) -> dict:
        return self.call("header", height=height)["header"]

    def commit(self, height: int) -> dict:
        """/commit: the header at `height` and the commit that signed it (raw JSON: the light client checks it)."""
        return self.call("commit", height=height)

    def validator_set(self, height: int, max_pages: int = 100) -> list[dict]:
        """Every validator at `height`, in the set's order (raw JSON), across /validators' pages of 100."""
        validators: list[dict] = []
        for page in range(1, max_pages + 1):
            result = self.call("validators", height=height, page=page, per_page=100)
            page_items = result.get("validators") if isinstance(result, dict) else None
            if not isinstance(page_items, list):
                raise RpcError(f"node {self.node} answered validators at height {height} without a list of validators")
            validators += page_items
            total = str(result.get("total", ""))
            if not page_items or not total.isdigit() or len(validators) >= int(total):
                return validators
        raise RpcError(f"node {self.node} sent more than {max_pages} pages of validators at height {height}")

    def broadcast_tx_sync(self, tx: bytes) -> BroadcastResult:
        r = self.call("broadcast_tx_sync", tx="0x" + tx.hex())
        return BroadcastResult(hash=r["hash"], code=int(r["code"]), log=r.get("log", ""), codespace=r.get("codespace", ""))

    def tx(self, tx_hash: str) -> TxResult | None:
        """The committed result of a tx, or None while it is not in a block."""
        try:
            r = self.call("tx", hash="0x" + tx_hash)
        except RpcError as exc:
            if "not found" in str(exc):
                return None
            raise
        result = r["tx_result"]
        return TxResult(
            hash=r["hash"],
            height=int(r["height"]),
            code=int(result.get("code", 0)),
            log=result.get("log", ""),
            codespace=result.get("codespace", ""),
            events=result.get("events", []),
        )

    def wait_for_tx(self, tx_hash: str, timeout: float = 30.0, poll: float = 0.2) -> TxResult:
        deadline = time.monotonic() + timeout
        while True:
            result = self.tx(tx_hash)
            if result is not None:
                return result
            if time.monotonic() > deadline:
                raise RpcError(f"tx {tx_hash} not committed within {timeout:.0f}s (it may still be in the mempool)")
            time.sleep(poll)

    def wait_for_height(self, height: int, timeout: float = 30.0, poll: float = 0.2) -> int:
        deadline = time.monotonic() + timeout
        while True:
            try:
                current = self.latest_height()
                if current >= height:
                    return current
            except RpcError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise RpcError(f"node {self.node} did not reach height {height} within {timeout:.0f}s")
            time.sleep(poll)

    def abci_query(self, path: str, data: bytes = b"", height: int = 0, prove: bool = False) -> AbciQueryResult:
        r = self.call("abci_query", path=f'"{path}"', data="0x" + data.hex(), height=height or None, prove=prove)["response"]
        return AbciQueryResult(
            code=int(r.get("code", 0)),
            log=r.get("log", ""),
            key=base64.b64decode(r.get("key") or ""),
            value=base64.b64decode(r.get("value") or ""),
            height=int(r.get("height", 0)),
            proof_ops=(r.get("proofOps") or {}).get("ops") or [],
            codespace=r.get("codespace", ""),
        )


def _param(value) -> str:
    """CometBFT's URI params: bools lower-case, everything else as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
