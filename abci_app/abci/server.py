"""asyncio ABCI socket server.

CometBFT opens four connections (consensus, mempool, query/info, snapshot) and
expects responses on each in request order; Flush asks us to write out what
is buffered. All connections share one Application, and requests are handled
one at a time on the event loop, so the application needs no locks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Protocol

from google.protobuf.message import DecodeError

from abci_app.abci.framing import FrameDecoder, FrameError, encode_frame
from abci_app.pb.tendermint.abci import types_pb2 as abci

log = logging.getLogger("abci")

READ_CHUNK = 64 * 1024
YIELD_EVERY = 16  # requests handled before other connections get a turn (~3 ms of CheckTx)
UNFLUSHED_WRITE_S = 0.02  # answers no Flush asked for are written after this (a backstop: CometBFT flushes within 1 ms, cometbft/patches)


class Application(Protocol):
    """What the server calls; each method takes the Request* and returns the Response*."""

    def info(self, req: abci.RequestInfo) -> abci.ResponseInfo: ...
    def init_chain(self, req: abci.RequestInitChain) -> abci.ResponseInitChain: ...
    def check_tx(self, req: abci.RequestCheckTx) -> abci.ResponseCheckTx: ...
    def prepare_proposal(self, req: abci.RequestPrepareProposal) -> abci.ResponsePrepareProposal: ...
    def process_proposal(self, req: abci.RequestProcessProposal) -> abci.ResponseProcessProposal: ...
    def finalize_block(self, req: abci.RequestFinalizeBlock) -> abci.ResponseFinalizeBlock: ...
    def commit(self, req: abci.RequestCommit) -> abci.ResponseCommit: ...
    def query(self, req: abci.RequestQuery) -> abci.ResponseQuery: ...
    def list_snapshots(self, req: abci.RequestListSnapshots) -> abci.ResponseListSnapshots: ...
    def offer_snapshot(self, req: abci.RequestOfferSnapshot) -> abci.ResponseOfferSnapshot: ...
    def load_snapshot_chunk(self, req: abci.RequestLoadSnapshotChunk) -> abci.ResponseLoadSnapshotChunk: ...
    def apply_snapshot_chunk(self, req: abci.RequestApplySnapshotChunk) -> abci.ResponseApplySnapshotChunk: ...


# Request oneof field -> (Application method, Response oneof field). Requests
# we have no use for get their default (empty) responses, which is what
# CometBFT expects from an app without vote extensions.
_DISPATCH = {
    "info": "info",
    "init_chain": "init_chain",
    "check_tx": "check_tx",
    "prepare_proposal": "prepare_proposal",
    "process_proposal": "process_proposal",
    "finalize_block": "finalize_block",
    "commit": "commit",
    "query": "query",
    "list_snapshots": "list_snapshots",
    "offer_snapshot": "offer_snapshot",
    "load_snapshot_chunk": "load_snapshot_chunk",
    "apply_snapshot_chunk": "apply_snapshot_chunk",
}


def handle(app: Application, request: abci.Request) -> abci.Response:
    """Answer one request. Exceptions propagate: they are bugs, and the caller halts."""
    kind = request.WhichOneof("value")
    response = abci.Response()
    if kind == "echo":
        response.echo.message = request.echo.message
    elif kind == "flush":
        response.flush.SetInParent()
    elif kind in _DISPATCH:
        result = getattr(app, _DISPATCH[kind])(getattr(request, kind))
        getattr(response, kind).CopyFrom(result)
    elif kind == "extend_vote":
        response.extend_vote.SetInParent()
    elif kind == "verify_vote_extension":
        response.verify_vote_extension.status = abci.ResponseVerifyVoteExtension.ACCEPT
    elif kind in ("insert_tx", "reap_txs"):
        getattr(response, kind).SetInParent()
    else:
        response.exception.error = f"unknown request {kind!r}"
    return response


class Server:
    def __init__(self, app: Application, address: str):
        self.app = app
        self.address = address
        self._server: asyncio.AbstractServer | None = None
        self._stopped = asyncio.Event()
        self._connections: set[asyncio.Task] = set()
        self.failure: BaseException | None = None

    async def start(self) -> None:
        if self.address.startswith("unix://"):
            path = self.address[len("unix://") :]
            if os.path.exists(path):
                os.unlink(path)
            self._server = await asyncio.start_unix_server(self._serve_connection, path=path)
        elif self.address.startswith("tcp://"):
            host, _, port = self.address[len("tcp://") :].rpartition(":")
            self._server = await asyncio.start_server(self._serve_connection, host=host, port=int(port))
        else:
            raise ValueError(f"address must be tcp://HOST:PORT or unix:///PATH, got {self.address!r}")
        log.info("ABCI server listening on %s", self.address)

    async def serve_forever(self) -> None:
        """Serve until SIGTERM/SIGINT or stop(); raise what a handler failed with."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        await self._stopped.wait()
        await self.close()
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        log.info("ABCI server stopped")

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        peer = writer.get_extra_info("peername") or "unix socket"
        log.info("CometBFT connected from %s", peer)
        decoder = FrameDecoder()
        responses: list[bytes] = []  # answered, not yet written
        loop = asyncio.get_running_loop()
        unflushed: asyncio.TimerHandle | None = None

        def write_out() -> None:
            nonlocal unflushed
            if unflushed is not None:
                unflushed.cancel()
                unflushed = None
            if responses:
                writer.write(b"".join(responses))
                responses.clear()

        try:
            while not self._stopped.is_set():
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                # One write per Flush, not per response or per read: CometBFT follows every
                # request with a Flush (at once for its synchronous calls, within its flush
                # timer for mempool batches) and waits for nothing before it; it sends in 4 KiB
                # pieces, and a socket send per piece cost ~9% of a loaded node's CPU (py-spy).
                # Its timer's Flush is dropped when its request queue is full, so answers left
                # waiting are written anyway after UNFLUSHED_WRITE_S.
                flushed = False
                for count, frame in enumerate(decoder.feed(data), 1):
                    request = abci.Request.FromString(frame)
                    responses.append(encode_frame(handle(self.app, request).SerializeToString()))
                    flushed = flushed or request.WhichOneof("value") == "flush"
                    if count % YIELD_EVERY == 0:
                        # One read may hold hundreds of CheckTx; let a ProcessProposal that arrived on
                        # the consensus connection meanwhile run now, not after all of them.
                        await asyncio.sleep(0)
                if flushed:
                    write_out()
                    await writer.drain()
                elif responses and unflushed is None:
                    unflushed = loop.call_later(UNFLUSHED_WRITE_S, write_out)
        except (FrameError, DecodeError) as exc:
            log.error("closing connection from %s: malformed frame: %s", peer, exc)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a bug in consensus code: halt rather than diverge
            log.exception("application failed; stopping")
            self.failure = exc
            self._stopped.set()
        finally:
            if unflushed is not None:
                unflushed.cancel()
            log.info("CometBFT disconnected (%s)", peer)
            writer.close()
            self._connections.discard(task)
