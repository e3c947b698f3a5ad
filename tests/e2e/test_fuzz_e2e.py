"""Fuzzing a real localnet (issue 11, "Defences"): what an RPC user or a stranger on the app's socket can send.

Random and bit-flipped txs through broadcast_tx_sync, random abci_query
paths, data and heights through the RPC, and garbage frames written straight
to one node's ABCI socket (random bytes, over-long varint lengths, absurd
lengths, undecodable payloads, truncated frames). Nothing may stop a node: a
garbage connection is dropped, and afterwards every node still makes blocks
and all report one app hash.
"""

from __future__ import annotations

import random
import socket
import time

import pytest

from abci_app import tx as txlib
from abci_app.abci.framing import encode_frame, encode_varint
from abci_app.client import ChainClient
from abci_app.keyring import Keyring
from abci_app.localnet import Network
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.rpc import RpcError
from tests.e2e.helpers import FEE, Transfer, assert_same_app_hash, latest_heights, send_transfers, wait_until
from tests.fuzz_harness import JUNK_PATHS, query_data, query_paths

pytestmark = pytest.mark.e2e


def _alive(net: Network) -> None:
    dead = [(i, kind) for i in range(len(net.nodes)) for kind in ("app", "cometbft") if not net.pid(i, kind)]
    assert not dead, f"processes died: {dead}"


def _still_one_chain(net: Network) -> None:
    """Every process runs, a normal transfer commits, every node passes its height, and all agree on the app hash."""
    _alive(net)
    before = max(latest_heights(net).values())
    result = send_transfers(net, [Transfer("dev0", net.account("dev1").address, 1)], nodes=[1], timeout=60)[0]
    assert result.code == 0, result.log
    wait_until(lambda: min(latest_heights(net).values()) > max(before, result.height), 60, "every node to pass the transfer's block")
    assert_same_app_hash(net)
    _alive(net)


def test_random_and_bit_flipped_txs_through_rpc(network: Network) -> None:
    r = random.Random(21)
    key = Keyring(network.keyring_home).get("dev2")
    recipient = network.account("dev3").address
    with ChainClient(network.rpc_url(0)) as chain:
        start = chain.nonce(key.address)
    valid = [txlib.build(key, network.chain_id, start + i, FEE, txlib.MsgSend(recipient=recipient, amount=1 + i)) for i in range(4)]
    junk = [r.randbytes(r.choice([0, 1, 3, 40, 200, 2_000])) for _ in range(40)]
    for raw in valid:
        for _ in range(20):
            flipped = bytearray(raw)
            flipped[r.randrange(len(raw))] ^= 1 << r.randrange(8)
            junk.append(bytes(flipped))
        junk += [raw + raw, raw[: len(raw) // 2], raw + b"\x00", b"\x0a" + b"\xff" * 9 + b"\x7f" + raw]
    junk += [txlib.build(key, network.chain_id, start + 50, FEE, txlib.MsgSend(recipient=recipient, amount=1)),  # a nonce gap
             txlib.build(key, "another-chain", start, FEE, txlib.MsgSend(recipient=recipient, amount=1)),
             txlib.build(key, network.chain_id, start, 2**64 - 1, txlib.MsgSend(recipient=recipient, amount=1)),
             b"\x00" * 20_000]  # (over MAX_TX_BYTES does not fit in the RPC client's GET URL; the unit fuzzers cover it)
    r.shuffle(junk)
    answered = refused = 0
    for i, raw in enumerate(junk):
        with network.client(i % len(network.nodes)) as client:
            try:
                client.broadcast_tx_sync(raw)
                answered += 1
            except RpcError:
                refused += 1  # CometBFT itself refuses some (too large, already in its cache): fine
    assert answered > len(junk) // 2
    _alive(network)
    with ChainClient(network.rpc_url(0)) as chain:  # the valid txs, in order: they still go through
        pipeline = chain.pipeline(timeout=60)
        for raw in valid:
            pipeline.broadcast(raw)
        results = pipeline.wait_all()
        assert [r.code for r in results.values()] == [0] * len(valid), [r.log for r in results.values()]
    _still_one_chain(network)


def test_random_queries_through_rpc(network: Network) -> None:
    r = random.Random(22)
    paths = query_paths() + JUNK_PATHS + ["/bank/balance\"", "/\u00e9", "/bank/balance?x=1", "/" + "\\" * 10]
    with network.client(0) as client:
        latest = client.latest_height()
    for i in range(200):
        path = paths[i] if i < len(paths) else r.choice(paths)
        height = r.choice([0, 0, 1, latest, latest + 1000, -1, 2**63 - 1])
        with network.client(i % len(network.nodes)) as client:
            try:
                client.abci_query(path, query_data(r)[:4_000], height=height, prove=r.random() < 0.5)
            except RpcError:
                pass  # CometBFT refuses some requests before they reach the app (e.g. a negative height)
    _alive(network)
    _still_one_chain(network)


def _garbage_frames(r: random.Random) -> list[bytes]:
    """Byte strings that are not a well-formed ABCI request: each must make the app drop the connection,
    never act on it. (A *well-formed* FinalizeBlock or Commit from a stranger would be acted on: the
    app's socket trusts whoever connects, as CometBFT's does, so the localnet binds it to 127.0.0.1.)"""
    undecodable = encode_frame(b"\x07" + r.randbytes(30))  # field 0 / wire type 7: never a valid protobuf
    return [
        b"\xff" * 11,  # a length varint longer than 10 bytes
        b"\xff\xff\xff\xff\x0f",  # a length of 4 GiB
        encode_varint(2**40) + b"abc",  # an absurd length, then a few bytes
        undecodable,
        undecodable + r.randbytes(500),  # random bytes, after a frame that ends the connection
        encode_frame(b"\xff\xff\xff\xff"),  # a truncated varint inside the payload
        encode_varint(100) + b"x" * 10,  # a truncated frame, then the connection closes
        encode_frame(abci.Request(echo=abci.RequestEcho(message="hi")).SerializeToString()) + undecodable,  # one good request, then junk
        encode_frame(abci.Request(flush=abci.RequestFlush()).SerializeToString())[:-1] + b"\x07\x07",
    ]


def test_garbage_on_the_abci_socket_is_dropped(network: Network) -> None:
    port = network.nodes[0].app_port
    r = random.Random(23)
    for garbage in _garbage_frames(r):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(garbage)
            conn.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the app answers what it can, then closes (or sees our EOF)
                try:
                    if not conn.recv(65_536):
                        break
                except (ConnectionResetError, TimeoutError, socket.timeout):
                    break
        assert network.pid(0, "app"), f"the app died after garbage {garbage[:20]!r}"
    _still_one_chain(network)
