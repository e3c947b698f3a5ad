"""A deterministic chain of transfer blocks for bench/statesync.py and bench/pruning.py: the same
genesis and FinalizeBlock requests for every node in a run, built once, fed to as many nodes as needed."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from abci_app import crypto  # noqa: E402
from abci_app import tx as txlib  # noqa: E402
from abci_app.app import Application  # noqa: E402
from abci_app.pb.tendermint.abci import types_pb2 as abci  # noqa: E402

CHAIN_ID = "bench-chain"


class TransferChain:
    """`senders` funded accounts; each block carries `per_block` transfers, round robin over the
    senders, to recipients drawn from `recipients` addresses (new accounts until each is used)."""

    def __init__(self, senders: int = 200, recipients: int = 20_000, per_block: int = 10, seed: int = 1) -> None:
        self.keys = [crypto.PrivateKey(hashlib.sha256(b"bench sender %d" % i).digest()) for i in range(senders)]
        self.recipients = [crypto.bech32_encode(crypto.ADDRESS_HRP, hashlib.sha256(b"bench recipient %d" % i).digest()[:20])
                           for i in range(recipients)]
        self.per_block = per_block
        self.rng = random.Random(seed)
        self.nonces = [0] * senders
        self.next_sender = 0
        balances = [{"address": k.address, "amount": 10**12} for k in self.keys]
        self.genesis = abci.RequestInitChain(
            chain_id=CHAIN_ID, initial_height=1,
            app_state_bytes=json.dumps({"bank": {"params": {"min_fee": 1}, "balances": balances}}).encode(),
        )

    def blocks(self, count: int) -> Iterator[abci.RequestFinalizeBlock]:
        """FinalizeBlock requests for heights 1..count."""
        for height in range(1, count + 1):
            txs = []
            for _ in range(self.per_block):
                i = self.next_sender
                self.next_sender = (i + 1) % len(self.keys)
                msg = txlib.MsgSend(recipient=self.rng.choice(self.recipients), amount=self.rng.randrange(1, 1000))
                txs.append(txlib.build(self.keys[i], CHAIN_ID, self.nonces[i], 1, msg))
                self.nonces[i] += 1
            yield abci.RequestFinalizeBlock(
                txs=txs, height=height, time=Timestamp(seconds=1_700_000_000 + height), hash=hashlib.sha256(b"block %d" % height).digest()
            )


def run_block(app: Application, request: abci.RequestFinalizeBlock) -> bytes:
    """FinalizeBlock and Commit, as CometBFT drives them; the block's app hash."""
    response = app.finalize_block(request)
    failed = sum(1 for result in response.tx_results if result.code)
    assert not failed, f"{failed} transfers failed at height {request.height}: the workload is broken"
    app.commit(abci.RequestCommit())
    return response.app_hash
