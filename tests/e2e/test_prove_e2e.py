"""`--prove` against a real localnet through a lying node (issue 11 defect 5: `--prove` trusted the node it asked).

The liar is an HTTP proxy in front of a real CometBFT node: it passes every call through
and rewrites the answers of one kind. The CLI trusts only the localnet's genesis file.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import rlp
from trie import HexaryTrie

from abci_app import crypto, light
from abci_app.localnet import Network
from abci_app.modules.bank import balance_key
from abci_app.state.proof import lookup
from tests.e2e.helpers import assert_one_error_line, gradchain, json_out
from tests.unit.lightchain import Signers, consensus_key, json_handler

RICH = 10**15


class Liar:
    """What the proxy rewrites (`lie`), for queries about `victim`."""

    def __init__(self, upstream: str, chain_id: str, victim: str, other: str):
        self.upstream, self.victim, self.other = upstream, victim, other
        self.lie: str | None = None
        self.signers = Signers(chain_id)
        self.liars = [(consensus_key(i).pubkey, 1) for i in range(10, 14)]  # keys the liar holds; not the chain's
        self.fake_db: dict[bytes, bytes] = {}
        trie = HexaryTrie(self.fake_db)
        trie.set(balance_key(victim), str(RICH).encode())
        self.fake_root = trie.root_hash  # a state where the victim is rich

    def request(self, method: str, params: dict[str, str]) -> dict:
        if method == "abci_query" and params.get("data") == "0x" + self.victim.encode().hex():
            if self.lie == "other_account":
                params = dict(params, data="0x" + self.other.encode().hex())
            elif self.lie in ("app_hash", "validators"):
                return self._forged_query(params)
        body = httpx.get(f"{self.upstream}/{method}?{urlencode(params)}", timeout=10).json()
        result = body.get("result")
        if result is None or self.lie not in ("app_hash", "validators"):
            return body
        fake = self.fake_root.hex().upper()
        if method == "header":
            result["header"]["app_hash"] = fake
        elif method == "commit":
            result["signed_header"]["header"]["app_hash"] = fake
            if self.lie == "validators":
                validators = self.signers.validators_json(self.liars)
                vals_hash = light.ValidatorSet.from_json(validators).hash().hex().upper()
                result["signed_header"]["header"].update(validators_hash=vals_hash, next_validators_hash=vals_hash)
                self.signers.sign(result, validators)  # a commit of the forged header, every signature valid
            else:
                commit = result["signed_header"]["commit"]  # the header's new hash; the real signatures stay
                commit["block_id"]["hash"] = light.header_hash(light.Header.from_json(result["signed_header"]["header"])).hex().upper()
        elif method == "validators" and self.lie == "validators":
            validators = self.signers.validators_json(self.liars)
            result.update(validators=validators, count=str(len(validators)), total=str(len(validators)))
        return body

    def _forged_query(self, params: dict[str, str]) -> dict:
        key = balance_key(self.victim)
        value, proof = lookup(self.fake_db.__getitem__, self.fake_root, key)
        b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
        ops = [{"type": "gradchain:mpt", "key": b64(key), "data": b64(rlp.encode(proof))}]
        response = {"code": 0, "log": "", "key": b64(key), "value": b64(value or b""), "height": params.get("height", "0"), "proofOps": {"ops": ops}}
        return {"jsonrpc": "2.0", "id": -1, "result": {"response": response}}


@contextmanager
def lying_proxy(liar: Liar) -> Iterator[str]:
    """A loopback HTTP server on a free port answering as `liar` says; always stopped."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), json_handler(liar.request))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("lie, why", [
    ("other_account", "the node's proof is for key bank/balance/"),  # (a) another account's balance and proof
    ("app_hash", "is invalid"),  # (b) a made-up state's root in /header and /commit: the real signatures do not cover it
    ("validators", "trusted power"),  # (c) its own validators, signing the forged headers
])
def test_prove_rejects_a_lying_node(network: Network, tmp_path: Path, lie: str, why: str) -> None:
    """Issue 11 defect 5, against real CometBFT: each lie fails; the same query through the honest node is verified."""
    genesis = network.nodes[0].home / "config" / "genesis.json"
    victim = crypto.PrivateKey.generate().address  # holds nothing
    faucet = network.account("faucet").address
    liar = Liar(network.rpc_url(1), network.chain_id, victim, faucet)
    query = ("query", "bank", "balance", victim, "--prove", "--trust-genesis", str(genesis))
    with lying_proxy(liar) as proxy:
        liar.lie = lie
        lied = gradchain(network, *query, "--node", proxy, home=tmp_path / "lied")
        assert "proof verified" not in lied.stdout + lied.stderr
        assert_one_error_line(lied, why)

        liar.lie = None  # the proxy now passes everything through: verified, from genesis
        honest = json_out(gradchain(network, *query, "--node", proxy, "-o", "json", home=tmp_path / "honest"))
        proof = honest["proof"]
        assert honest["balance"] == 0 and proof["verified"] is True and proof["chain_id"] == network.chain_id
        assert bytes.fromhex(proof["key"]) == balance_key(victim) and proof["trusted"]["set"] == "the genesis validators"
        assert proof["signed"]["power"] * 3 > proof["signed"]["total_power"] * 2
        with network.client(0) as client:  # the header it verified is the chain's
            assert client.header(proof["header"]["height"])["app_hash"] == proof["app_hash"]

        liar.lie = lie  # and from the verified header stored in that home
        again = gradchain(network, *query, "--node", proxy, home=tmp_path / "honest")
        assert again.returncode != 0 and "proof verified" not in again.stdout + again.stderr
