"""An in-process chain: drives abci_app.app.Application the way CometBFT does."""

from __future__ import annotations

import hashlib
import json

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from abci_app import crypto, paging, tx
from abci_app.app import Application
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.modules import gov

CHAIN_ID = "test-chain"


def fixed_key(i: int) -> crypto.PrivateKey:
    return crypto.PrivateKey(bytes([i]) * 32)


class Chain:
    def __init__(self, home, balances: dict[str, int], min_fee: int = 1, staking: dict | None = None, **modules: dict):
        """modules: extra app_state sections, e.g. registry={...}."""
        self.app = Application(home)
        self.height = 0
        self.nonces: dict[str, int] = {}
        app_state = {"bank": {"params": {"min_fee": min_fee}, "balances": [{"address": a, "amount": n} for a, n in balances.items()]}}
        if staking is not None:
            app_state["staking"] = staking
            unbonding = staking.get("params", {}).get("unbonding_blocks", gov.Params.voting_blocks)
            if "gov" not in modules and isinstance(unbonding, int) and 2 <= unbonding < gov.Params.voting_blocks:
                # A vote lasts at most an unbonding (gov.check_voting_within_unbonding): fit gov to a short test unbonding.
                app_state["gov"] = {"params": {"voting_blocks": unbonding, "expedited_voting_blocks": unbonding // 2}}
        app_state.update(modules)
        self.init = self.app.init_chain(
            abci.RequestInitChain(chain_id=CHAIN_ID, app_state_bytes=json.dumps(app_state).encode(), initial_height=1)
        )
        self.genesis_hash = self.init.app_hash
        self.block([])  # queries read committed state: commit genesis as block 1

    def tx(self, key, msg, fee=1, nonce=None, chain_id=CHAIN_ID) -> bytes:
        nonce = self.nonces.get(key.address, 0) if nonce is None else nonce
        self.nonces[key.address] = nonce + 1
        return tx.build(key, chain_id, nonce, fee, msg)

    def send_tx(self, key, recipient, amount, fee=1, nonce=None, chain_id=CHAIN_ID) -> bytes:
        return self.tx(key, tx.MsgSend(recipient=recipient, amount=amount), fee=fee, nonce=nonce, chain_id=chain_id)

    def block(self, txs: list[bytes], proposer: bytes = b"", votes=(), misbehavior=()) -> abci.ResponseFinalizeBlock:
        """votes: (consensus address, signed) pairs; misbehavior: consensus addresses that double-signed
        at the previous height, or (address, height) pairs."""
        self.height += 1
        time = Timestamp(seconds=1_700_000_000 + self.height)
        commit = abci.CommitInfo(votes=[
            abci.VoteInfo(validator=abci.Validator(address=a, power=1), block_id_flag=2 if signed else 1) for a, signed in votes
        ])
        evidence = [abci.Misbehavior(type=abci.DUPLICATE_VOTE, validator=abci.Validator(address=a, power=1), height=h)
                    for a, h in (m if isinstance(m, tuple) else (m, self.height - 1) for m in misbehavior)]
        block_hash = hashlib.sha256(b"block %d" % self.height).digest()
        response = self.app.finalize_block(abci.RequestFinalizeBlock(
            txs=txs, height=self.height, time=time, proposer_address=proposer, decided_last_commit=commit, misbehavior=evidence,
            hash=block_hash,
        ))
        self.app.commit(abci.RequestCommit())
        return response

    def check(self, raw: bytes, recheck: bool = False) -> abci.ResponseCheckTx:
        kind = abci.CheckTxType.RECHECK if recheck else abci.CheckTxType.NEW
        return self.app.check_tx(abci.RequestCheckTx(tx=raw, type=kind))

    def balance(self, address: str) -> int:
        return int(self.query("/bank/balance", address).value or b"0")

    def nonce(self, address: str) -> int:
        return int(self.query("/auth/nonce", address).value or b"0")

    def query(self, path: str, data: str = "", height: int = 0, prove: bool = False) -> abci.ResponseQuery:
        return self.app.query(abci.RequestQuery(path=path, data=data.encode(), height=height, prove=prove))

    def pages(self, path: str, arg: str = "") -> list:
        """Every entry of a paged list view, walked as clients walk it."""
        def fetch(data: str) -> bytes:
            result = self.query(path, data)
            assert result.code == 0, (path, data, result.log)
            return result.value
        return paging.walk(fetch, arg)


@pytest.fixture
def keys():
    return [fixed_key(i) for i in range(1, 5)]


@pytest.fixture
def chain(tmp_path, keys):
    c = Chain(tmp_path / "app", {keys[0].address: 1_000, keys[1].address: 500})
    yield c
    c.app.close()


TEST_PASSPHRASE = "unit-test passphrase"


@pytest.fixture(autouse=True)
def keyring_passphrase(monkeypatch):
    """Keys the tests create live in the encrypted `file` keyring, opened without prompts; cheap scrypt here only."""
    from abci_app import keyring

    monkeypatch.delenv(keyring.BACKEND_ENV, raising=False)
    monkeypatch.setenv(keyring.PASSPHRASE_ENV, TEST_PASSPHRASE)
    monkeypatch.setattr(keyring, "SCRYPT_N", 2**10)


def synthetic_corpus(path):
    """600 lines of pseudo-scripture: learnable structure, enough lines for a held-out split."""
    import random

    words = ("the lord said unto moses and aaron in the land of egypt saying this month shall be unto you "
             "the beginning of months it shall be the first month of the year to you").split()
    rng = random.Random(6)
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + "." for _ in range(600)]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_gpt(tmp_path_factory, seed: int):
    """A test-config tiny GPT built from `seed` and the synthetic corpus, pinned as the workers pin: (family, base, dataset)."""
    from abci_app.ml import determinism, model
    from abci_app.ml.corpus import load_dataset
    from abci_app.ml.family import TinyGPT

    determinism.pin(2)
    family = TinyGPT()
    return family, family.build(model.TEST_CONFIG, seed=seed), load_dataset(synthetic_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt"))


def overlay_levels(start, key) -> int:
    """How many overlays a get of `key` passes through (each a dict lookup; the last may read committed state):
    what the read-counting tests count, as Overlay.get walks the levels in one call."""
    levels, current = 1, start
    while key not in current._writes and current._parent is not None:
        levels, current = levels + 1, current._parent
    return levels
