"""Signed CometBFT headers for the unit tests' fake nodes: what /commit, /validators and genesis.json hold.

The encoders are abci_app.light's own, which tests/unit/test_light.py checks against
headers captured from a real CometBFT localnet (light_vectors.json).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from abci_app import crypto, light

GENESIS_TIME = 1_735_689_600  # 2025-01-01T00:00:00Z; block h is stamped h seconds later


def json_handler(answer: Callable[[str, dict], object]) -> type[BaseHTTPRequestHandler]:
    """An HTTP handler for fake and lying RPC nodes: GET /PATH?QUERY is answered with answer(PATH, params) as JSON,
    or as it is when answer gives bytes (a body that need not be JSON at all)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            result = answer(url.path.strip("/"), params)
            body = result if isinstance(result, bytes) else json.dumps(result).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def consensus_key(i: int) -> crypto.PrivateKey:
    """The i-th test consensus key (test_cli_staking.cons_key(i) is its public key)."""
    return crypto.PrivateKey(bytes([100 + i]) * 32)


def _time(seconds: int, nanos: int = 0) -> str:
    return str(light.Timestamp(seconds, nanos))


def _hex(raw: bytes) -> str:
    return raw.hex().upper()


def _address(pubkey: bytes) -> bytes:
    return hashlib.sha256(pubkey).digest()[:20]


@dataclass
class Signers:
    """Signs headers of `chain_id` with whichever of `keys` are in the validator set asked for."""

    chain_id: str
    keys: dict[bytes, crypto.PrivateKey] = field(default_factory=lambda: {k.pubkey: k for k in map(consensus_key, range(16))})

    def validators_json(self, powers: list[tuple[bytes, int]]) -> list[dict]:
        """/validators' list for {pubkey: power}, in CometBFT's order (power descending, then address)."""
        ordered = sorted(powers, key=lambda kp: (-kp[1], _address(kp[0])))
        return [{"address": _hex(_address(k)), "pub_key": {"type": light.ED25519_TYPE, "value": base64.b64encode(k).decode()},
                 "voting_power": str(p), "proposer_priority": "0"} for k, p in ordered]

    def genesis_json(self, powers: list[tuple[bytes, int]]) -> dict:
        validators = [{"address": v["address"], "pub_key": v["pub_key"], "power": v["voting_power"], "name": ""}
                      for v in self.validators_json(powers)]
        return {"genesis_time": _time(GENESIS_TIME), "chain_id": self.chain_id, "initial_height": "1", "validators": validators, "app_hash": ""}

    def commit_json(self, height: int, app_hash: bytes, powers: list[tuple[bytes, int]], chain_id: str | None = None,
                    signers: set[bytes] | None = None) -> dict:
        """/commit's result for block `height` carrying `app_hash`, signed by every validator whose key we hold
        (or only those in `signers`, by pubkey)."""
        validators = self.validators_json(powers)
        vals_hash = light.ValidatorSet.from_json(validators).hash()
        empty = hashlib.sha256(b"").digest()
        header = {
            "version": {"block": str(light.BLOCK_PROTOCOL), "app": "1"},
            "chain_id": chain_id or self.chain_id, "height": str(height), "time": _time(GENESIS_TIME + height),
            "last_block_id": {"hash": _hex(hashlib.sha256(b"block %d" % (height - 1)).digest()) if height > 1 else "",
                              "parts": {"total": 1 if height > 1 else 0, "hash": _hex(empty) if height > 1 else ""}},
            "last_commit_hash": _hex(empty), "data_hash": _hex(empty), "validators_hash": _hex(vals_hash),
            "next_validators_hash": _hex(vals_hash), "consensus_hash": _hex(empty), "app_hash": _hex(app_hash),
            "last_results_hash": _hex(empty), "evidence_hash": _hex(empty), "proposer_address": validators[0]["address"],
        }
        return self.sign({"signed_header": {"header": header, "commit": {}}, "canonical": True}, validators, signers)

    def sign(self, result: dict, validators: list[dict], signers: set[bytes] | None = None) -> dict:
        """(Re)write result's commit: for the header as it now stands, signed by the keys we hold for `validators`."""
        header = result["signed_header"]["header"]
        height = int(header["height"])
        block_id = {"hash": _hex(light.header_hash(light.Header.from_json(header))), "parts": {"total": 1, "hash": _hex(hashlib.sha256(b"parts").digest())}}
        sigs, stamped = [], light.Timestamp(GENESIS_TIME + height, 500_000_000)
        commit = light.Commit(height, 0, light.BlockID.from_json(block_id), (light.CommitSig(light.FLAG_COMMIT, b"", stamped, b""),))
        for v in validators:
            pubkey = base64.b64decode(v["pub_key"]["value"])
            key = self.keys.get(pubkey)
            if key is None or (signers is not None and pubkey not in signers):
                sigs.append({"block_id_flag": light.FLAG_ABSENT, "validator_address": "", "timestamp": "0001-01-01T00:00:00Z", "signature": None})
                continue
            signature = key.sign(light.vote_sign_bytes(header["chain_id"], commit, 0))
            sigs.append({"block_id_flag": light.FLAG_COMMIT, "validator_address": v["address"], "timestamp": str(stamped),
                         "signature": base64.b64encode(signature).decode()})
        result["signed_header"]["commit"] = {"height": str(height), "round": 0, "block_id": block_id, "signatures": sigs}
        return result
