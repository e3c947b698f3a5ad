"""State cost: the app-hash update per written key as state grows, and FinalizeBlock for a 1,000-tx block.

For each state size (accounts in the trie, committed in a real Store): one block
rewrites `--keys` random existing balances and adds as many new ones, and we
time Overlay.app_hash() (state/mpt.py: one sorted batch per block) against
py-trie's HexaryTrie.set one key at a time, the baseline, over the same nodes
in the same run. Then a real Application executes a block of 1,000 signed
transfers, each to a new account, through FinalizeBlock and Commit.

    .venv/bin/python bench/state.py [--sizes 1000,100000,1000000] [--keys 1000]

Also: ed25519 verification by OpenSSL (`cryptography`) against libsodium (PyNaCl), and the app CPU
per transfer of each ABCI call, in-process (CheckTx, PrepareProposal, ProcessProposal, FinalizeBlock,
Commit, RECHECK). Prints per-key microseconds, the ratio py-trie / ours, and the block times.
Asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402
from trie import HexaryTrie  # noqa: E402

from abci_app import crypto  # noqa: E402
from abci_app import tx as txlib  # noqa: E402
from abci_app.app import Application  # noqa: E402
from abci_app.modules import bank  # noqa: E402
from abci_app.pb.tendermint.abci import types_pb2 as abci  # noqa: E402
from abci_app.state import Store  # noqa: E402

GENESIS_CHUNK = 200_000  # accounts per committed block while filling the store


def account(i: int) -> str:
    return crypto.bech32_encode(crypto.ADDRESS_HRP, hashlib.sha256(b"bench account %d" % i).digest()[:20])


def balance_write(i: int, amount: int) -> tuple[bytes, bytes]:
    return bank.balance_key(account(i)), str(amount).encode()


def fill(store: Store, accounts: int) -> float:
    """Commit `accounts` balances in blocks of GENESIS_CHUNK; returns seconds."""
    start = time.perf_counter()
    for first in range(0, accounts, GENESIS_CHUNK):
        block = store.begin_block()
        for i in range(first, min(accounts, first + GENESIS_CHUNK)):
            key, value = balance_write(i, 1_000 + i)
            block.set(key, value)
        store.commit(block, store.height + 1)
    return time.perf_counter() - start


class NodeDict(dict):
    """py-trie's node db: its own new nodes, falling through to the committed ones."""

    def __init__(self, committed_nodes) -> None:
        super().__init__()
        self.committed_nodes = committed_nodes

    def __missing__(self, node_hash: bytes) -> bytes:
        return self.committed_nodes[node_hash]


def update_cost(store: Store, accounts: int, keys: int) -> tuple[float, float]:
    """(ours, py-trie) microseconds per written key for one block of `keys` rewrites plus `keys` new accounts."""
    step = max(1, accounts // keys)
    writes = [balance_write(i, 7 + i) for i in range(0, accounts, step)][:keys]
    writes += [balance_write(accounts + i, 5) for i in range(keys)]
    block = store.begin_block()
    for key, value in writes:
        block.set(key, value)
    store._committed.cache.clear()  # both start from a cold node cache: every node read is a SQLite read
    start = time.perf_counter()
    ours_root = block.app_hash()
    ours = time.perf_counter() - start

    reference = HexaryTrie(NodeDict(store.begin_block()._nodes), store.app_hash)  # same committed nodes, fresh buffer
    store._committed.cache.clear()
    start = time.perf_counter()
    for key, value in sorted(writes):
        reference.set(key, value)
    theirs = time.perf_counter() - start
    assert reference.root_hash == ours_root, "the batched trie and py-trie disagree"
    return ours / len(writes) * 1e6, theirs / len(writes) * 1e6


def finalize_cost(txs: int) -> tuple[float, float]:
    """Seconds of FinalizeBlock and of Commit for `txs` transfers from `txs` senders to `txs` new accounts."""
    with tempfile.TemporaryDirectory(prefix="bench-state-app-") as home:
        app = Application(home)
        senders = [crypto.PrivateKey(hashlib.sha256(b"sender %d" % i).digest()) for i in range(txs)]
        app_state = {"bank": {"params": {"min_fee": 1}, "balances": [{"address": k.address, "amount": 10**6} for k in senders]}}
        app.init_chain(abci.RequestInitChain(chain_id="bench", app_state_bytes=json.dumps(app_state).encode(), initial_height=1))

        def run(height: int, raws: list[bytes]) -> tuple[float, float, abci.ResponseFinalizeBlock]:
            request = abci.RequestFinalizeBlock(txs=raws, height=height, time=Timestamp(seconds=1_700_000_000 + height), hash=b"%032d" % height)
            start = time.perf_counter()
            response = app.finalize_block(request)
            middle = time.perf_counter()
            app.commit(abci.RequestCommit())
            return middle - start, time.perf_counter() - middle, response

        run(1, [])
        raws = [txlib.build(k, "bench", 0, 1, txlib.MsgSend(recipient=account(10**9 + i), amount=1)) for i, k in enumerate(senders)]
        finalize, commit, response = run(2, raws)
        failed = sum(1 for r in response.tx_results if r.code)
        assert not failed, f"{failed} of {txs} transfers failed"
        app.close()
        return finalize, commit


def call_costs(txs: int) -> dict[str, float]:
    """Microseconds per tx that each ABCI call costs one node for `txs` transfers (8 senders, one
    recipient, as bench/tps.py sends): CheckTx, then the block as its proposer sees it, then
    RECHECK of as many later txs. In-process: the app's own work, without sockets or CometBFT."""
    with tempfile.TemporaryDirectory(prefix="bench-state-calls-") as home:
        app = Application(home)
        senders = [crypto.PrivateKey(hashlib.sha256(b"caller %d" % i).digest()) for i in range(8)]
        app_state = {"bank": {"params": {"min_fee": 1}, "balances": [{"address": k.address, "amount": 10**9} for k in senders]}}
        app.init_chain(abci.RequestInitChain(chain_id="bench", app_state_bytes=json.dumps(app_state).encode(), initial_height=1))
        app.finalize_block(abci.RequestFinalizeBlock(height=1, time=Timestamp(seconds=1_700_000_001), hash=b"%032d" % 1))
        app.commit(abci.RequestCommit())
        sink = account(10**9)
        build = [txlib.build(senders[i % 8], "bench", i // 8, 1, txlib.MsgSend(recipient=sink, amount=1)) for i in range(2 * txs)]
        block, later = build[:txs], build[txs:]
        at = Timestamp(seconds=1_700_000_002)
        costs: dict[str, float] = {}

        def timed(name: str, work) -> object:
            start = time.process_time()
            result = work()
            costs[name] = (time.process_time() - start) / txs * 1e6
            return result

        timed("CheckTx", lambda: [app.check_tx(abci.RequestCheckTx(tx=raw)) for raw in build])
        costs["CheckTx"] /= 2  # 2 x txs were checked
        proposal = timed("PrepareProposal", lambda: app.prepare_proposal(abci.RequestPrepareProposal(txs=block, height=2, time=at, max_tx_bytes=10**8)))
        app._prepared = None  # as a validator that did not propose it: the proposer's own is not executed again
        block_hash = b"%032d" % 2
        timed("ProcessProposal", lambda: app.process_proposal(abci.RequestProcessProposal(txs=proposal.txs, height=2, time=at, hash=block_hash)))
        # The same block, decided: FinalizeBlock finishes what ProcessProposal executed.
        response = timed("FinalizeBlock", lambda: app.finalize_block(abci.RequestFinalizeBlock(txs=proposal.txs, height=2, time=at, hash=block_hash)))
        assert all(r.code == 0 for r in response.tx_results), "a transfer failed"
        timed("Commit", lambda: app.commit(abci.RequestCommit()))
        timed("RECHECK", lambda: [app.check_tx(abci.RequestCheckTx(tx=raw, type=abci.CheckTxType.RECHECK)) for raw in later])
        app.close()
        return costs


def signature_costs(rounds: int = 2000) -> tuple[float, float]:
    """Microseconds per ed25519 verification: OpenSSL through `cryptography` (key object made once
    and reused, its fastest use) against libsodium through PyNaCl (crypto.verify, what the chain uses)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = crypto.PrivateKey(hashlib.sha256(b"signer").digest())
    message = crypto.sign_bytes("bench", b"\x01" * 150)
    signature = key.sign(message)
    public = Ed25519PublicKey.from_public_bytes(key.pubkey)
    start = time.process_time()
    for _ in range(rounds):
        public.verify(signature, message)
    openssl = (time.process_time() - start) / rounds * 1e6
    start = time.process_time()
    for _ in range(rounds):
        assert crypto.verify(key.pubkey, message, signature)
    sodium = (time.process_time() - start) / rounds * 1e6
    return openssl, sodium


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000", help="accounts in state, comma-separated")
    parser.add_argument("--keys", type=int, default=1000, help="balances rewritten per block (as many new ones are added)")
    parser.add_argument("--txs", type=int, default=1000, help="transfers in the FinalizeBlock block")
    args = parser.parse_args()

    print(f"{'accounts':>9} {'fill s':>7} {'ours us/key':>11} {'py-trie us/key':>14} {'ratio':>6}", flush=True)
    for accounts in (int(size) for size in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
            store = Store(Path(tmp) / "state.sqlite")
            filled = fill(store, accounts)
            ours, theirs = update_cost(store, accounts, args.keys)
            store.close()
        print(f"{accounts:>9} {filled:>7.1f} {ours:>11.1f} {theirs:>14.1f} {theirs / ours:>5.1f}x", flush=True)
    openssl, sodium = signature_costs()
    print(f"ed25519 verify: cryptography (OpenSSL, cached key object) {openssl:.0f} us, PyNaCl (libsodium) {sodium:.0f} us: {openssl / sodium:.1f}x")
    costs = call_costs(args.txs)
    print(f"app CPU per transfer by ABCI call (us, in-process, {args.txs} txs): "
          + ", ".join(f"{name} {us:.0f}" for name, us in costs.items()) + f"; the proposer's total {sum(costs.values()):.0f}")
    finalize, commit = finalize_cost(args.txs)
    print(f"FinalizeBlock of {args.txs} transfers to new accounts: {finalize * 1000:.0f} ms ({finalize / args.txs * 1e6:.0f} us/tx), Commit {commit * 1000:.0f} ms")


if __name__ == "__main__":
    main()
