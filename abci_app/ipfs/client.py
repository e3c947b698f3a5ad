"""A thin client for Kubo's HTTP RPC (`POST /api/v0/...`), with httpx.

    client = IpfsClient("http://127.0.0.1:5001")
    cid = client.add(Path("model.safetensors"))      # streams the file, pins it
    for chunk in client.cat_stream(cid, timeout=10):  # streams; checks nothing
        ...

Every failure is an `IpfsError` whose message is one line a user can act on:
Kubo not running at the URL, a CID no reachable node has within the bounded
wait, an invalid CID, or Kubo's own error message passed through.

Adds always pin the import format we compute CIDs for locally (abci_app.ipfs.cid):
CIDv1, raw leaves, sha2-256, size-262144 chunks, balanced DAG of 174 links.

The empty file is special: Kubo's bitswap never sends a zero-length block to a
peer (it answers HAVE instead), so another node can never fetch it. Its content
is fixed by its CID, so `stat`/`cat` answer it locally and `pin_add` adds it.

Bounded waits: Kubo's `timeout` argument is a deadline for the whole command,
so it would also cut a long, healthy download short. `stat` uses it (one block);
`cat`/`cat_stream` first resolve the root with such a bounded `stat`, then
stream with an httpx read timeout, which only fires when no byte arrives for
`timeout` seconds (a stall), never on a slow but moving transfer.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from abci_app.ipfs.cid import CHUNK_SIZE, EMPTY_FILE_CID, MAX_LINKS, parse_cid

DEFAULT_API = "http://127.0.0.1:5001"
DEFAULT_TIMEOUT = 10.0  # seconds to find a CID / for a control call to answer
ADD_OPTIONS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": f"size-{CHUNK_SIZE}",
    "hash": "sha2-256",
    "max-file-links": str(MAX_LINKS),
    "trickle": "false",
    "inline": "false",
    "wrap-with-directory": "false",
    "progress": "false",
}


class IpfsError(Exception):
    """Kubo could not be reached, did not find the content in time, or refused the request."""


class IpfsUnreachable(IpfsError):
    """No Kubo answers at the API URL: no call can succeed until it runs (nothing is wrong with any CID)."""


def _check_cid(cid: str) -> None:
    """Reject a malformed CID here: Kubo's files/stat answers "file does not exist" for one."""
    try:
        parse_cid(cid)
    except ValueError as e:
        raise IpfsError(str(e)) from None


class IpfsClient:
    def __init__(self, api: str = DEFAULT_API, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.api = api.rstrip("/")
        self.timeout = timeout
        # trust_env=False: a user's HTTP(S)_PROXY must not capture calls to a local node.
        self._http = httpx.Client(base_url=f"{self.api}/api/v0", timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> IpfsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport -----------------------------------------------------------

    def _not_running(self) -> IpfsError:
        return IpfsUnreachable(
            f"IPFS (Kubo) is not running at {self.api}: start the localnet with `make localnet`, "
            f"or a node with `IPFS_PATH=<repo> bin/ipfs daemon`, or pass the right API URL"
        )

    @staticmethod
    def _not_found(cid: str, wait: float | None) -> IpfsError:
        within = f" within {wait:g}s" if wait is not None else ""
        return IpfsError(f"CID {cid} not found{within}: no reachable IPFS node has it (is a node that added it running and connected?)")

    def _error(self, response: httpx.Response, what: str, cid: str | None = None, wait: float | None = None) -> IpfsError:
        """Turn Kubo's JSON error ({"Message", "Code", "Type"}) into one line."""
        response.read()
        try:
            message = str(json.loads(response.content)["Message"])
        except (ValueError, KeyError, TypeError):
            message = response.text.strip() or f"HTTP {response.status_code}"
        message = " ".join(message.split())
        if cid is not None and "context deadline exceeded" in message:
            return self._not_found(cid, wait)
        return IpfsError(f"IPFS {what} failed: {message}")

    def _post(
        self, endpoint: str, params: dict[str, str] | None = None, timeout: float | httpx.Timeout | None = None, cid: str | None = None, wait: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """POST one RPC call; `timeout` None means the client's default. A timeout while looking for `cid` means not found."""
        try:
            response = self._http.post(f"/{endpoint}", params=params, timeout=self.timeout if timeout is None else timeout, **kwargs)
        except httpx.ConnectError:
            raise self._not_running() from None
        except httpx.TimeoutException:
            if cid is not None:
                raise self._not_found(cid, wait) from None
            raise IpfsError(f"IPFS {endpoint} at {self.api} did not answer in time") from None
        except httpx.HTTPError as e:
            raise IpfsError(f"IPFS {endpoint} at {self.api} failed: {e}") from None
        if response.status_code != 200:
            raise self._error(response, endpoint, cid, wait)
        return response

    def _json(self, endpoint: str, **kwargs: Any) -> Any:
        return self._post(endpoint, **kwargs).json()

    # --- node ----------------------------------------------------------------

    def version(self) -> str:
        """Kubo's version number, e.g. '0.43.0'."""
        return str(self._json("version")["Version"])

    def id(self) -> dict[str, Any]:
        """This node's identity: {'ID', 'PublicKey', 'Addresses', 'AgentVersion', 'Protocols'}."""
        return dict(self._json("id"))

    def swarm_peers(self) -> list[dict[str, Any]]:
        """Connected peers: [{'Addr', 'Peer', ...}]."""
        return list(self._json("swarm/peers").get("Peers") or [])

    def swarm_connect(self, multiaddr: str) -> None:
        """Dial a peer now (`/ip4/.../tcp/PORT/p2p/PEERID`); Peering.Peers would only retry after ~5-12 s."""
        self._post("swarm/connect", {"arg": multiaddr})

    # --- content -------------------------------------------------------------

    def add(self, data: str | Path | bytes | BinaryIO, *, pin: bool = True, only_hash: bool = False, timeout: float | None = None) -> str:
        """Add a file (path), bytes or a binary file object; return its CID. A file is streamed, not read whole.

        `timeout` bounds each network read/write (None: no limit, as adding a big file takes a while).
        """
        params = {**ADD_OPTIONS, "pin": str(pin).lower(), "only-hash": str(only_hash).lower()}
        if isinstance(data, (str, Path)):
            with open(data, "rb") as f:
                return self._add(f, params, timeout)
        if isinstance(data, (bytes, bytearray, memoryview)):
            return self._add(io.BytesIO(bytes(data)), params, timeout)
        return self._add(data, params, timeout)

    def _add(self, f: BinaryIO, params: dict[str, str], timeout: float | None) -> str:
        # httpx streams a file object from a multipart upload in 64 KiB reads. The part's name is
        # irrelevant to the CID of a single file; a fixed ASCII one avoids Kubo's filename escaping rules.
        limit = httpx.Timeout(self.timeout, read=timeout, write=timeout)  # connect bounded; a big upload is not
        response = self._post("add", params, timeout=limit, files={"file": ("file", f, "application/octet-stream")})
        lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        if not lines or "Hash" not in lines[-1]:
            raise IpfsError(f"IPFS add returned no CID: {response.text[:200]!r}")
        return str(lines[-1]["Hash"])

    def stat(self, cid: str, *, timeout: float | None = None) -> dict[str, Any]:
        """`files/stat /ipfs/CID`: {'Hash', 'Size' (file bytes), 'CumulativeSize' (block bytes), 'Blocks', 'Type'}.

        Fetches the root block from the swarm if needed, within `timeout` seconds (Kubo's own deadline).
        """
        _check_cid(cid)
        if cid == EMPTY_FILE_CID:
            return {"Hash": cid, "Size": 0, "CumulativeSize": 0, "Blocks": 0, "Type": "file"}
        wait = self.timeout if timeout is None else timeout
        params = {"arg": f"/ipfs/{cid}", "timeout": f"{wait:g}s"}
        return dict(self._json("files/stat", params=params, timeout=wait + 5, cid=cid, wait=wait))

    def cat(self, cid: str, *, timeout: float | None = None) -> bytes:
        """The whole content of `cid` in memory (small files; see cat_stream for big ones)."""
        return b"".join(self.cat_stream(cid, timeout=timeout))

    def cat_stream(self, cid: str, chunk_size: int | None = 1 << 20, timeout: float | None = None) -> Iterator[bytes]:
        """Yield the content of `cid` in pieces of up to `chunk_size` bytes, as it arrives (None: each piece as
        the network delivers it, so a caller can stop at its own deadline however slowly bytes trickle in).

        Fails with IpfsError when no node has the CID within `timeout` seconds, or when
        the transfer stalls for that long. The bytes are not checked: use cid.CidVerifier.
        """
        wait = self.timeout if timeout is None else timeout
        self.stat(cid, timeout=wait)  # bounded search for the root; cat itself gets no deadline
        return iter(()) if cid == EMPTY_FILE_CID else self._cat(cid, chunk_size, wait)

    def _cat(self, cid: str, chunk_size: int | None, wait: float) -> Iterator[bytes]:
        try:
            with self._http.stream("POST", "/cat", params={"arg": cid}, timeout=httpx.Timeout(wait, read=wait)) as response:
                if response.status_code != 200:
                    raise self._error(response, "cat", cid, wait)
                received = 0
                for chunk in response.iter_bytes(chunk_size):
                    received += len(chunk)
                    yield chunk
                # Kubo reports an error after the 200 header only in a trailer httpx drops; the
                # caller's CID check catches a short body, this catches the common case early.
                if response.headers.get("x-content-length", str(received)) != str(received):
                    raise IpfsError(f"IPFS cat {cid} ended early after {received} bytes")
        except httpx.ConnectError:
            raise self._not_running() from None
        except httpx.TimeoutException:
            raise IpfsError(f"IPFS cat {cid} stalled: no data for {wait:g}s (are the nodes that have it still running?)") from None
        except httpx.HTTPError as e:
            raise IpfsError(f"IPFS cat {cid} failed: {e}") from None

    def pin_add(self, cid: str, *, timeout: float | None = None) -> None:
        """Pin `cid` (recursively), fetching all of it first; `timeout` bounds the whole fetch (None: no limit)."""
        _check_cid(cid)
        if cid == EMPTY_FILE_CID:
            self.add(b"")
            return
        params = {"arg": cid, "recursive": "true"}
        if timeout is not None:
            params["timeout"] = f"{timeout:g}s"
        limit = httpx.Timeout(self.timeout, read=None if timeout is None else timeout + 5)
        self._post("pin/add", params, timeout=limit, cid=cid, wait=timeout)

    def pinned(self, cid: str) -> bool:
        """Whether `cid` is pinned recursively on this node (what `pin_add` makes)."""
        _check_cid(cid)
        try:
            self._post("pin/ls", {"arg": cid, "type": "recursive"})
        except IpfsError as exc:
            if "is not pinned" in str(exc):
                return False
            raise
        return True

    def recursive_pins(self, *, timeout: float = 60.0) -> set[str]:
        """Every CID pinned recursively on this node (`pin/ls?type=recursive`; `timeout` bounds the listing)."""
        keys = self._json("pin/ls", params={"type": "recursive"}, timeout=timeout).get("Keys") or {}
        return set(keys)
