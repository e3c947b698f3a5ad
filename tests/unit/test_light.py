"""The light client behind `--prove` (issue 11 defect 5: `--prove` trusted the node it asked).

Encoders are checked against headers, commits and validator sets captured from a real
4-validator CometBFT v0.39.4 localnet (light_vectors.json): if a byte of the header hash,
validator-set hash or vote sign-bytes were wrong, those real signatures would not verify.
Then every tampering a lying node could try is rejected, in the verifier and through the CLI.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import rlp
from trie import HexaryTrie

from abci_app import light
from abci_app.modules.bank import balance_key
from tests.unit.lightchain import Signers, consensus_key
from tests.unit.test_cli import CHAIN_ID, RICH, FakeNode, add_key, assert_one_error_line, home, run  # noqa: F401 (home: a fixture)

VECTORS = json.loads((Path(__file__).parent / "light_vectors.json").read_text())
REAL_CHAIN = VECTORS["genesis"]["chain_id"]
NOW = 2_000_000_000  # after the captured blocks: the clock-drift check passes


def real(height: int) -> dict:
    return copy.deepcopy(VECTORS["heights"][str(height)])


def parse(captured: dict) -> light.SignedHeader:
    return light.parse_signed_header(captured["commit"], captured["validators"])


def genesis_root(tmp_path: Path, genesis: dict | None = None) -> light.TrustedState:
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(genesis or VECTORS["genesis"]))
    return light.genesis_state(path)


# --- encodings, against the real localnet ---------------------------------------


@pytest.mark.parametrize("height", [2, 3])
def test_header_and_validator_hashes_match_cometbft(height: int) -> None:
    captured = real(height)
    signed = parse(captured)
    assert light.header_hash(signed.header).hex().upper() == captured["commit"]["signed_header"]["commit"]["block_id"]["hash"]
    assert signed.validators.hash() == signed.header.validators_hash
    assert light.check_signed_header(REAL_CHAIN, signed) == signed.commit.block_id.hash


@pytest.mark.parametrize("height", [2, 3])
def test_real_commit_signatures_verify(height: int) -> None:
    """Every real precommit signature verifies over our vote sign-bytes: the CanonicalVote encoding is CometBFT's."""
    signed = parse(real(height))
    tally = light.verify_commit_light(REAL_CHAIN, signed.validators, signed)
    assert tally.signatures == sum(s.flag == light.FLAG_COMMIT for s in signed.commit.signatures) >= 3
    assert (tally.signed_power, tally.total_power) == (tally.signatures, 4)


def test_merkle_root_is_rfc6962() -> None:
    leaf = lambda x: hashlib.sha256(b"\x00" + x).digest()  # noqa: E731
    node = lambda a, b: hashlib.sha256(b"\x01" + a + b).digest()  # noqa: E731
    assert light.merkle_root([]) == hashlib.sha256(b"").digest()
    assert light.merkle_root([b"a"]) == leaf(b"a")
    assert light.merkle_root([b"a", b"b", b"c"]) == node(node(leaf(b"a"), leaf(b"b")), leaf(b"c"))
    five = [bytes([i]) for i in range(5)]
    assert light.merkle_root(five) == node(light.merkle_root(five[:4]), leaf(five[4]))


def test_vote_sign_bytes_layout() -> None:
    """Delimited CanonicalVote: type 2, sfixed64 height, (round 0 omitted), block id, timestamp, chain id."""
    signed = parse(real(2))
    sign_bytes = light.vote_sign_bytes(REAL_CHAIN, signed.commit, 0)
    body = sign_bytes[1:]
    assert sign_bytes[0] == len(body) and body[:2] == b"\x08\x02" and body[2:11] == b"\x11" + (2).to_bytes(8, "little")
    assert body[11] == 0x22 and body.endswith(b"\x32" + bytes([len(REAL_CHAIN)]) + REAL_CHAIN.encode())


def test_time_parsing() -> None:
    assert light.parse_time("1970-01-01T00:00:01.5Z") == light.Timestamp(1, 500_000_000)
    assert light.parse_time("2026-12-02T19:57:17.270590989Z").nanos == 270_590_989
    assert str(light.Timestamp(1, 500_000_000)) == "1970-01-01T00:00:01.5Z"
    for bad in ["2026-12-02", "2026-13-02T00:00:00Z", 5, "2026-12-02T19:57:17.1234567890Z"]:
        with pytest.raises(ValueError):
            light.parse_time(bad)


# --- verification from a trusted root, against the real localnet --------------------


def test_real_header_verifies_from_genesis(tmp_path: Path) -> None:
    root = genesis_root(tmp_path)
    state, verified = light.verify_skipping(root, parse(real(3)), lambda h: parse(real(h)), now=NOW)
    assert verified.path == (3,) and verified.trusted_height == 0 and not verified.adjacent
    assert verified.trusted.total_power == 4 and verified.trusted.signed_power >= 3
    assert (state.height, state.header_hash) == (3, verified.hash)


def test_adjacent_header_needs_the_named_validators(tmp_path: Path) -> None:
    state, _ = light.verify_skipping(genesis_root(tmp_path), parse(real(2)), lambda h: parse(real(h)), now=NOW)
    state, verified = light.verify_skipping(state, parse(real(3)), lambda h: parse(real(h)), now=NOW)
    assert verified.adjacent and verified.trusted_height == 2
    renamed = light.TrustedState(state.chain_id, 2, b"", None, b"\x01" * 32, state.validators, state.root)
    with pytest.raises(light.LightError, match="are not the ones"):
        light.verify(renamed, parse(real(3)), now=NOW)


def _tamper_header(captured: dict, **fields: str) -> dict:
    captured["commit"]["signed_header"]["header"].update(fields)
    return captured


def _rehash(captured: dict) -> dict:
    """What a smarter liar does after editing the header: point the commit at the new hash (the signatures stay)."""
    signed = captured["commit"]["signed_header"]
    signed["commit"]["block_id"]["hash"] = light.header_hash(light.Header.from_json(signed["header"])).hex().upper()
    return captured


def _verify_real(tmp_path: Path, captured: dict, genesis: dict | None = None) -> None:
    light.verify(genesis_root(tmp_path, genesis), parse(captured), now=NOW)


def test_changed_app_hash_is_rejected(tmp_path: Path) -> None:
    """Issue 11 defect 5: a node rewriting the app hash of a real header."""
    forged = "AB" * 32
    with pytest.raises(light.LightError, match="but the commit signs block"):
        _verify_real(tmp_path, _tamper_header(real(3), app_hash=forged))
    with pytest.raises(light.LightError, match=r"signature \d by validator \w+ is invalid"):
        _verify_real(tmp_path, _rehash(_tamper_header(real(3), app_hash=forged)))


def test_changed_validator_power_is_rejected(tmp_path: Path) -> None:
    captured = real(3)
    captured["validators"][0]["voting_power"] = "100"
    with pytest.raises(light.LightError, match="validator set sent hashes to"):
        _verify_real(tmp_path, captured)
    # ...and with the header's validators_hash rewritten to match, the header hash no longer matches what was signed
    vals_hash = light.ValidatorSet.from_json(captured["validators"]).hash().hex().upper()
    with pytest.raises(light.LightError, match="commit signs block|is invalid"):
        _verify_real(tmp_path, _tamper_header(captured, validators_hash=vals_hash))
    with pytest.raises(light.LightError, match="is invalid"):
        _verify_real(tmp_path, _rehash(_tamper_header(real(3), validators_hash=vals_hash)) | {"validators": captured["validators"]})


def test_forged_signature_is_rejected(tmp_path: Path) -> None:
    captured = real(3)
    sigs = captured["commit"]["signed_header"]["commit"]["signatures"]
    index = next(i for i, s in enumerate(sigs) if s["block_id_flag"] == light.FLAG_COMMIT)
    raw = bytearray(base64.b64decode(sigs[index]["signature"]))
    raw[0] ^= 1
    sigs[index]["signature"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(light.LightError, match=f"signature {index} by validator .* is invalid"):
        _verify_real(tmp_path, captured)


def test_too_little_power_is_rejected(tmp_path: Path) -> None:
    captured = real(3)
    sigs = captured["commit"]["signed_header"]["commit"]["signatures"]
    signing = [i for i, s in enumerate(sigs) if s["block_id_flag"] == light.FLAG_COMMIT]
    for i in signing[2:]:  # two of four validators left: 2/4 is not > 2/3 (nor is it too little of the trusted set: 2/4 > 1/3)
        sigs[i] = {"block_id_flag": light.FLAG_ABSENT, "validator_address": "", "timestamp": "0001-01-01T00:00:00Z", "signature": None}
    with pytest.raises(light.LightError, match="only 2 of 4 voting power signed"):
        _verify_real(tmp_path, captured)


def test_wrong_chain_id_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(light.LightError, match="belongs to chain 'gradchain-e2e', not the trusted chain 'other'"):
        _verify_real(tmp_path, real(3), dict(VECTORS["genesis"], chain_id="other"))


def test_untrusted_validators_are_rejected(tmp_path: Path) -> None:
    """A genesis whose validators did not sign: nothing between genesis and height 3 can make them trusted."""
    strangers = Signers("x").genesis_json([(consensus_key(i).pubkey, 1) for i in range(4)])["validators"]
    with pytest.raises(light.NotEnoughTrustedPower, match="only 0 of 4 trusted power"):
        _verify_real(tmp_path, real(3), dict(VECTORS["genesis"], validators=strangers))
    with pytest.raises(light.LightError, match="no header between trusted 0 and 1"):
        light.verify_skipping(genesis_root(tmp_path, dict(VECTORS["genesis"], validators=strangers)), parse(real(3)), lambda h: parse(real(h)), now=NOW)


def test_malformed_node_answers_are_one_line_errors() -> None:
    captured = real(3)
    captured["commit"]["signed_header"]["header"]["height"] = "3x"
    with pytest.raises(light.LightError, match="malformed header"):
        parse(captured)
    with pytest.raises(light.LightError, match="malformed"):
        light.parse_signed_header({"signed_header": []}, [])


# --- bisection through a changing validator set --------------------------------------


def _changing_chain(heights: int) -> tuple[Signers, dict[int, list[tuple[bytes, int]]]]:
    """Each 4 blocks one validator leaves and a new one joins: by the end none of the genesis set remains."""
    signers = Signers("bisect")
    sets = {h: [(consensus_key(i).pubkey, 10) for i in range((h - 1) // 4, (h - 1) // 4 + 4)] for h in range(1, heights + 1)}
    return signers, sets


def test_bisection_through_validator_changes(tmp_path: Path) -> None:
    signers, sets = _changing_chain(24)

    def fetch(h: int) -> light.SignedHeader:
        fetched.append(h)
        return parse({"commit": signers.commit_json(h, bytes([h]) * 32, sets[h]), "validators": signers.validators_json(sets[h])})

    fetched: list[int] = []
    root = genesis_root(tmp_path, signers.genesis_json(sets[1]))
    state, verified = light.verify_skipping(root, fetch(24), fetch, now=NOW)
    assert verified.path[-1] == 24 and len(verified.path) > 1 and state.height == 24
    assert all(b > a for a, b in zip(verified.path, verified.path[1:]))
    # the stored state starts the next call, which verifies from height 24
    light.save_state(tmp_path, state)
    assert light.load_state(tmp_path, root) == state
    assert light.load_state(tmp_path, genesis_root(tmp_path / "light", Signers("bisect").genesis_json(sets[24]))).height == 0  # another root


# --- through the CLI: a lying node (issue 11 defect 5) ---------------------------------


class LyingNode(FakeNode):
    """FakeNode with signed headers, lying in one way (`lie`):

    other_account: answers a balance query for X with Y's key, value and proof (a valid proof, of the wrong key);
    forged_state: proves a made-up balance under a made-up root, and puts that root in /header and /commit;
    forged_validators: the same, with a validator set of its own keys that signs the forged headers.
    """

    def __init__(self, balances: dict[str, int], home: Path):
        super().__init__(balances)
        self.lie: str | None = None
        self.victim, self.other = "", ""
        self.signers = Signers(CHAIN_ID)
        self.honest = [(consensus_key(i).pubkey, 10) for i in range(4)]
        self.liars = [(consensus_key(i).pubkey, 10) for i in range(10, 14)]
        self.fake_db: dict[bytes, bytes] = {}
        (home / "config").mkdir(parents=True, exist_ok=True)
        (home / "config" / "genesis.json").write_text(json.dumps(self.signers.genesis_json(self.honest)))

    def _fake_root(self) -> bytes:
        trie = HexaryTrie(self.fake_db)
        trie.set(balance_key(self.victim), str(10**12).encode())
        return trie.root_hash

    def _app_hash(self, height: int) -> bytes:
        return self._fake_root() if self.lie in ("forged_state", "forged_validators") else self.roots.get(height - 1, b"")

    def rpc_header(self, params: dict) -> dict:
        answer = super().rpc_header(params)
        if "result" in answer:
            answer["result"]["header"]["app_hash"] = self._app_hash(int(params["height"])).hex().upper()
        return answer

    def rpc_validators(self, params: dict) -> dict:
        validators = self.signers.validators_json(self.liars if self.lie == "forged_validators" else self.honest)
        return {"result": {"block_height": str(self.height), "validators": validators, "count": "4", "total": "4"}}

    def rpc_commit(self, params: dict) -> dict:
        height = int(params["height"])
        honest = self.signers.commit_json(height, self.roots.get(height - 1, b""), self.honest)
        if self.lie == "forged_validators":
            return {"result": self.signers.commit_json(height, self._app_hash(height), self.liars)}
        if self.lie == "forged_state":  # the new app hash, the commit pointed at the new header hash; the honest signatures stay
            honest["signed_header"]["header"]["app_hash"] = self._app_hash(height).hex().upper()
            _rehash({"commit": honest})
        return {"result": honest}

    def rpc_abci_query(self, params: dict) -> dict:
        data = bytes.fromhex(params.get("data", "0x")[2:]).decode()
        if self.lie == "other_account" and data == self.victim:
            params = dict(params, data="0x" + self.other.encode().hex())
        if self.lie in ("forged_state", "forged_validators") and data == self.victim:
            value, proof = _lookup(self.fake_db, self._fake_root(), balance_key(self.victim))
            key = balance_key(self.victim)
            ops = [{"type": "gradchain:mpt", "key": base64.b64encode(key).decode(), "data": base64.b64encode(rlp.encode(proof)).decode()}]
            return self._query_answer(value or b"", key=key, height=int(params.get("height") or self.height), ops=ops)
        return super().rpc_abci_query(params)


def _lookup(db: dict, root: bytes, key: bytes) -> tuple[bytes | None, list[bytes]]:
    from abci_app.state.proof import lookup

    return lookup(db.__getitem__, root, key)


@pytest.fixture
def liar(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LyingNode]:
    alice, bob = add_key(home, "alice"), add_key(home, "bob")
    node = LyingNode({alice: RICH}, home)
    node.victim, node.other = bob, alice  # bob holds nothing; the liar says he is rich
    monkeypatch.setenv("GRADCHAIN_NODE", node.url)
    yield node
    node.server.shutdown()
    node.server.server_close()


@pytest.mark.parametrize("lie, why", [
    ("other_account", "the node's proof is for key bank/balance/"),
    ("forged_state", "is invalid"),  # the honest validators' signatures do not cover the forged header
    ("forged_validators", "trusted power"),  # the liar's own validators are not the genesis validators
])
def test_prove_rejects_a_lying_node(home: Path, liar: LyingNode, lie: str, why: str) -> None:
    """Issue 11 defect 5: each lie made the old CLI print "proof verified" (for alice's balance, or a made-up one)."""
    liar.lie = lie
    result = run(home, "query", "bank", "balance", "bob", "--prove")
    assert result.exit_code == 1 and result.stdout == "", result.stdout
    assert_one_error_line(result.stderr, why)
    assert "proof verified" not in result.stderr
    liar.lie = None
    honest = run(home, "query", "bank", "balance", "bob", "--prove")
    assert honest.exit_code == 0 and honest.stdout.startswith("0 ugrad\nproof verified"), honest.output
    liar.lie = lie  # and again from the stored, verified header: at its height a forged header has another hash
    again = run(home, "query", "bank", "balance", "bob", "--prove")
    assert again.exit_code == 1 and "proof verified" not in again.stdout + again.stderr


def test_prove_output_says_what_was_verified(home: Path, liar: LyingNode) -> None:
    data = json.loads(run(home, "query", "bank", "balance", "alice", "--prove", "-o", "json").stdout)
    proof = data["proof"]
    assert data["balance"] == RICH and proof["verified"] is True
    assert bytes.fromhex(proof["key"]) == balance_key(liar.other) and proof["key_from"] == {"path": "/bank/balance", "data": liar.other}
    assert proof["height"] == liar.height - 1 and proof["header"]["height"] == liar.height
    assert proof["app_hash"] == liar.roots[liar.height - 1].hex().upper()
    assert proof["signed"] == {"power": 40, "total_power": 40, "signatures": 4, "validators": 4}
    assert proof["trusted"]["set"] == "the genesis validators" and proof["trusted"]["power"] == 40
    assert proof["trust_root"]["file"] == str(home / "config" / "genesis.json")
    text = run(home, "query", "bank", "balance", "alice", "--prove").stdout
    assert "4 of 4 validators holding 40 of 40 power signed it" in text and "root of trust: genesis file" in text


def test_prove_needs_a_root_of_trust(home: Path, liar: LyingNode, tmp_path: Path) -> None:
    (home / "config" / "genesis.json").unlink()
    result = run(home, "query", "bank", "balance", "bob", "--prove")
    assert_one_error_line(result.stderr, "--prove needs a root of trust")
    signed = liar.signers.commit_json(2, liar.roots[1], liar.honest)["signed_header"]
    good_hash = light.header_hash(light.Header.from_json(signed["header"])).hex()
    ok = run(home, "query", "bank", "balance", "bob", "--prove", "--trust-height", "2", "--trust-hash", good_hash, "-o", "json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["proof"]["trust_root"] == {"height": 2, "hash": good_hash.upper()}
    wrong = run(home, "query", "bank", "balance", "bob", "--prove", "--trust-height", "2", "--trust-hash", "00" * 32)
    assert_one_error_line(wrong.stderr, "not the trusted hash")
    genesis = tmp_path / "g.json"
    genesis.write_text(json.dumps(liar.signers.genesis_json(liar.liars)))
    untrusted = run(home, "query", "bank", "balance", "bob", "--prove", "--trust-genesis", str(genesis))
    assert_one_error_line(untrusted.stderr, "header verification failed")
    assert run(home, "query", "bank", "balance", "bob", "--trust-height", "2").exit_code == 2  # --trust-* without --prove
