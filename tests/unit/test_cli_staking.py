"""Unit tests for `gradchain tx staking`, `gradchain query staking` and `gradchain query tx`.

The node is test_cli's FakeNode HTTP server, answering from the real
Application (tests.unit.conftest.Chain) instead of its toy bank: CheckTx runs
first, each accepted tx gets its own block, and /validators follows the
validator updates FinalizeBlock returns (at once; CometBFT waits two blocks).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from abci_app import crypto, paging
from abci_app.cli.staking import consensus_address, parse_pubkey
from abci_app.pb.tendermint.abci import types_pb2 as abci
from tests.unit.conftest import Chain
from tests.unit.test_cli import FakeNode, add_key, assert_one_error_line, free_port, run
from tests.unit.test_staking import PARAMS, cons_key

MIN_FEE = 2
FUNDS = 10_000
GENESIS_BOND = 1_000


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def tx_hash_of(raw: bytes) -> str:
    """CometBFT's tx hash: sha256 of the tx bytes, upper-case hex."""
    return hashlib.sha256(raw).hexdigest().upper()


def cometbft_home(root: Path, i: int, moniker: str | None = None, pub_key: str | None = None) -> Path:
    """A CometBFT home holding consensus key i as `cometbft init` writes it (priv_key = seed || pubkey)."""
    key = crypto.PrivateKey(bytes([100 + i]) * 32)
    cmthome = root / f"cometbft{i}"
    (cmthome / "config").mkdir(parents=True, exist_ok=True)
    (cmthome / "config" / "priv_validator_key.json").write_text(json.dumps({
        "address": consensus_address(key.pubkey),
        "pub_key": {"type": "tendermint/PubKeyEd25519", "value": _b64(key.pubkey) if pub_key is None else pub_key},
        "priv_key": {"type": "tendermint/PrivKeyEd25519", "value": _b64(key.seed + key.pubkey)},
    }))
    if moniker:
        (cmthome / "config" / "config.toml").write_text(f'proxy_app = "tcp://127.0.0.1:26658"\nmoniker = "{moniker}"\n')
    return cmthome


def on_app_thread(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run on the node's one app thread: the server answers each request in a new thread,
    and the app's SQLite connection may only be used by the thread that opened it."""

    @functools.wraps(method)
    def wrapper(self: "AppNode", *args: Any, **kwargs: Any) -> Any:
        return self.app_thread.submit(method, self, *args, **kwargs).result()

    return wrapper


class AppNode(FakeNode):
    """FakeNode's RPC server in front of the real Application."""

    def __init__(self, app_home: Path, balances: dict[str, int], staking: dict):
        super().__init__({})
        self.app_thread = ThreadPoolExecutor(max_workers=1)
        self.committed: dict[str, dict] = {}
        self._start(app_home, balances, staking)

    @on_app_thread
    def _start(self, app_home: Path, balances: dict[str, int], staking: dict) -> None:
        self.chain = Chain(app_home, balances, min_fee=MIN_FEE, staking=staking)
        self.app_hashes = {1: self.chain.app.store.app_hash}
        self.power = {u.pub_key.ed25519: u.power for u in self.chain.init.validators}
        self._block([])  # so the state after block 1 has a successor header to prove against

    @property
    def height(self) -> int:
        return self.chain.height

    @on_app_thread
    def block(self, txs: list[bytes], **kwargs: Any) -> abci.ResponseFinalizeBlock:
        """Commit a block, e.g. with votes=[(consensus address, signed)] (see conftest.Chain.block)."""
        return self._block(txs, **kwargs)

    def _block(self, txs: list[bytes], **kwargs: Any) -> abci.ResponseFinalizeBlock:
        response = self.chain.block(txs, **kwargs)
        self.app_hashes[self.height] = response.app_hash
        for update in response.validator_updates:
            self.power[update.pub_key.ed25519] = update.power
        self.power = {k: p for k, p in self.power.items() if p}
        return response

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.app_thread.submit(self.chain.app.close).result()
        self.app_thread.shutdown()

    # --- RPC methods ------------------------------------------------------------

    @on_app_thread
    def rpc_status(self, params: dict) -> dict:
        return {"result": {
            "node_info": {"network": "test-chain", "moniker": "app0", "id": "cd" * 20},
            "sync_info": {"latest_block_height": str(self.height), "latest_app_hash": self.app_hashes[self.height].hex().upper(),
                          "latest_block_time": "2025-01-01T00:00:00Z", "catching_up": False},
        }}

    def consensus_powers(self) -> list[tuple[bytes, int]]:
        return list(self.power.items())

    def app_hash_after(self, height: int) -> bytes:
        return self.app_hashes.get(height, b"")

    @on_app_thread
    def rpc_commit(self, params: dict) -> dict:
        return super().rpc_commit(params)

    @on_app_thread
    def rpc_validators(self, params: dict) -> dict:
        validators = sorted(
            ({"address": consensus_address(k), "pub_key": {"type": "tendermint/PubKeyEd25519", "value": _b64(k)},
              "voting_power": str(p), "proposer_priority": "0"} for k, p in self.power.items()),
            key=lambda v: (-int(v["voting_power"]), v["address"]),
        )
        return {"result": {"block_height": str(self.height), "validators": validators, "count": str(len(validators)), "total": str(len(validators))}}

    @on_app_thread
    def rpc_header(self, params: dict) -> dict:
        height = int(params["height"])
        if not 2 <= height <= self.height:
            return {"error": {"code": -32603, "message": "Internal error", "data": f"height {height} is not available"}}
        return {"result": {"header": {"chain_id": "test-chain", "height": str(height), "app_hash": self.app_hashes[height - 1].hex().upper()}}}

    @on_app_thread
    def rpc_abci_query(self, params: dict) -> dict:
        request = abci.RequestQuery(
            path=json.loads(params["path"]), data=bytes.fromhex(params.get("data", "0x")[2:]),
            height=int(params.get("height") or 0), prove=params.get("prove") == "true",
        )
        r = self.chain.app.query(request)
        response = {"code": r.code, "codespace": r.codespace, "log": r.log, "key": _b64(r.key), "value": _b64(r.value), "height": str(r.height)}
        if r.proof_ops.ops:
            response["proofOps"] = {"ops": [{"type": op.type, "key": _b64(op.key), "data": _b64(op.data)} for op in r.proof_ops.ops]}
        return {"result": {"response": response}}

    @on_app_thread
    def rpc_broadcast_tx_sync(self, params: dict) -> dict:
        raw = bytes.fromhex(params["tx"][2:])
        tx_hash = tx_hash_of(raw)
        checked = self.chain.check(raw)
        if checked.code == 0:
            self._commit_block([raw])
        return {"result": {"code": checked.code, "codespace": checked.codespace, "log": checked.log, "hash": tx_hash, "data": ""}}

    def _commit_block(self, raws: list[bytes]) -> None:
        """One block of `raws`, each result kept for /tx."""
        response = self._block(raws)
        for index, (raw, result) in enumerate(zip(raws, response.tx_results)):
            events = [{"type": e.type, "attributes": [{"key": a.key, "value": a.value, "index": a.index} for a in e.attributes]} for e in result.events]
            self.committed[tx_hash_of(raw)] = {"hash": tx_hash_of(raw), "height": str(self.height), "index": index, "tx": _b64(raw),
                                               "tx_result": {"code": result.code, "codespace": result.codespace, "log": result.log, "events": events}}

    @on_app_thread
    def rpc_tx(self, params: dict) -> dict:
        tx_hash = params["hash"][2:].upper()
        if tx_hash not in self.committed:
            return {"error": {"code": -32603, "message": "Internal error", "data": f"tx ({tx_hash}) not found"}}
        return {"result": self.committed[tx_hash]}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def node(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppNode]:
    """Keys alice, bob, carol (plain funded accounts) and val0 (operator of genesis validator cons_key(0));
    a second genesis validator cons_key(1) is operated by a key outside the keyring."""
    names = ["alice", "bob", "carol", "val0"]
    addresses = {name: add_key(home, name) for name in names}
    outsider = crypto.PrivateKey(bytes([9]) * 32).address
    genesis = [
        {"operator": addresses["val0"], "pubkey": cons_key(0).hex(), "moniker": "val0", "self_bond": GENESIS_BOND},
        {"operator": outsider, "pubkey": _b64(cons_key(1)), "moniker": "val1", "self_bond": GENESIS_BOND},
    ]
    app_node = AppNode(tmp_path / "app", {a: FUNDS for a in addresses.values()}, {"params": PARAMS, "validators": genesis})
    app_node.addresses = addresses
    app_node.write_genesis(home)
    monkeypatch.setenv("GRADCHAIN_NODE", app_node.url)
    yield app_node
    app_node.close()


def ok(home: Path, *args: str) -> str:
    result = run(home, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def ok_json(home: Path, *args: str) -> dict:
    return json.loads(ok(home, *args, "-o", "json"))


def balance(home: Path, who: str) -> int:
    return ok_json(home, "query", "bank", "balance", who)["balance"]


# --- pubkeys ---------------------------------------------------------------------


def test_pubkey_forms_agree() -> None:
    key = cons_key(7)
    show_validator = json.dumps({"type": "tendermint/PubKeyEd25519", "value": _b64(key)})
    assert parse_pubkey(_b64(key)) == parse_pubkey(key.hex()) == parse_pubkey(key.hex().upper()) == parse_pubkey(show_validator) == key
    assert consensus_address(key) == hashlib.sha256(key).digest()[:20].hex().upper()


@pytest.mark.parametrize(
    "pubkey, why",
    [
        (_b64(bytes(31)), "31 bytes, expected a 32-byte ed25519 key"),
        (_b64(bytes(33)), "33 bytes, expected a 32-byte ed25519 key"),
        ("ab" * 31, "not base64, hex or CometBFT's JSON form"),
        ("not a key!", "not base64, hex or CometBFT's JSON form"),
        ("", "0 bytes"),
        ('{"type": "tendermint/PubKeySecp256k1", "value": "AAAA"}', "holds a tendermint/PubKeySecp256k1 key"),
        ("{nope", "not valid JSON"),
    ],
)
def test_bad_pubkey(home: Path, node: AppNode, tmp_path: Path, pubkey: str, why: str) -> None:
    cmthome = cometbft_home(tmp_path, 5, pub_key=pubkey)
    result = run(home, "tx", "staking", "create-validator", "alice", "--pubkey-from-home", str(cmthome), "--amount", "500", "-y")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "bad consensus key in", why)
    assert balance(home, "alice") == FUNDS  # nothing was sent


def test_consensus_key_comes_from_the_node_home(home: Path, node: AppNode, tmp_path: Path) -> None:
    neither = run(home, "tx", "staking", "create-validator", "alice", "--amount", "500", "-y")
    assert neither.exit_code == 2
    assert_one_error_line(neither.stderr, "Missing option '--pubkey-from-home'")
    foreign = cometbft_home(tmp_path, 5, pub_key=_b64(cons_key(6)))
    mismatch = run(home, "tx", "staking", "create-validator", "alice", "--pubkey-from-home", str(foreign), "--amount", "500", "-y")
    assert mismatch.exit_code == 1
    assert_one_error_line(mismatch.stderr, "bad consensus key in", "priv_key does not belong to pub_key")
    missing = run(home, "tx", "staking", "create-validator", "alice", "--pubkey-from-home", str(tmp_path / "nowhere"), "--amount", "500", "-y")
    assert missing.exit_code == 1
    assert_one_error_line(missing.stderr, "no CometBFT key at", "priv_validator_key.json")
    (tmp_path / "bad" / "config").mkdir(parents=True)
    (tmp_path / "bad" / "config" / "priv_validator_key.json").write_text(json.dumps({"pub_key": {"type": "tendermint/PubKeyEd25519", "value": _b64(bytes(5))}}))
    corrupt = run(home, "tx", "staking", "create-validator", "alice", "--pubkey-from-home", str(tmp_path / "bad"), "--amount", "500", "-y")
    assert_one_error_line(corrupt.stderr, "bad consensus key in", "5 bytes")


# --- validators ------------------------------------------------------------------


@pytest.mark.parametrize("page", [1, 100])  # one validator a page: the CLI walks the pages into one list
def test_validators_match_cometbft(home: Path, node: AppNode, monkeypatch: pytest.MonkeyPatch, page: int) -> None:
    monkeypatch.setattr(paging, "MAX_ENTRIES", page)
    listed = ok_json(home, "query", "staking", "validators")
    assert listed["height"] == node.height
    assert sorted((v["moniker"], v["tokens"], v["power"], v["jailed_until"]) for v in listed["validators"]) == [
        ("val0", GENESIS_BOND, 10, 0), ("val1", GENESIS_BOND, 10, 0),
    ]
    cometbft = ok_json(home, "status")["validators"]
    assert sorted((v["consensus_address"], v["power"]) for v in listed["validators"]) == sorted((v["address"], v["voting_power"]) for v in cometbft)

    table = ok(home, "query", "staking", "validators").splitlines()
    assert table[0].split() == ["OPERATOR", "MONIKER", "TOKENS", "POWER", "JAILED", "UNTIL", "CONSENSUS", "ADDRESS"]
    assert len(table) == 3
    row = next(line for line in table if " val0 " in line)
    assert row.split() == [node.addresses["val0"], "val0", "1000", "10", "-", consensus_address(cons_key(0))]


def test_create_validator_joins_the_set(home: Path, node: AppNode, tmp_path: Path) -> None:
    out = ok_json(home, "tx", "staking", "create-validator", "alice", "--pubkey-from-home", str(cometbft_home(tmp_path, 2)), "--amount", "500", "--moniker", "node4", "-y")
    assert out["code"] == 0 and out["height"] == node.height
    assert node.power[cons_key(2)] == 5
    assert balance(home, "alice") == FUNDS - 500 - MIN_FEE

    shown = ok_json(home, "query", "staking", "validator", "alice")
    assert (shown["operator"], shown["moniker"], shown["tokens"], shown["power"]) == (node.addresses["alice"], "node4", 500, 5)
    assert shown["consensus_address"] == consensus_address(cons_key(2)) and shown["pubkey"] == cons_key(2).hex()
    text = ok(home, "query", "staking", "validator", node.addresses["alice"])
    assert "moniker:           node4" in text and f"consensus_address: {consensus_address(cons_key(2))}" in text
    cometbft = {v["address"]: v["voting_power"] for v in ok_json(home, "status")["validators"]}
    assert cometbft[consensus_address(cons_key(2))] == 5

    again = run(home, "tx", "staking", "create-validator", "alice", "--pubkey-from-home", str(cometbft_home(tmp_path, 3)), "--amount", "500", "-y")
    assert again.exit_code == 1
    assert_one_error_line(again.stderr, "error: tx rejected (staking code 2):", "already operates a validator")
    taken = run(home, "tx", "staking", "create-validator", "bob", "--pubkey-from-home", str(cometbft_home(tmp_path, 0)), "--amount", "500", "-y")
    assert_one_error_line(taken.stderr, "error: tx rejected (staking code 3): that consensus pubkey is already used")
    small = run(home, "tx", "staking", "create-validator", "bob", "--pubkey-from-home", str(cometbft_home(tmp_path, 3)), "--amount", "99", "-y")
    assert_one_error_line(small.stderr, "error: tx rejected (staking code 5): self-bond 99ugrad is below the minimum 100ugrad")
    assert balance(home, "bob") == FUNDS  # CheckTx refused them: no fee charged


def test_create_validator_from_cometbft_home(home: Path, node: AppNode, tmp_path: Path) -> None:
    cmthome = cometbft_home(tmp_path, 4, moniker="fifth-node")
    key = cons_key(4)
    declined = run(home, "tx", "staking", "create-validator", "carol", "--pubkey-from-home", str(cmthome), "--amount", "300", input="n\n")
    assert declined.exit_code == 1 and f"consensus address {consensus_address(key)}" in declined.stderr
    assert "'fifth-node'" in declined.stderr and cons_key(4) not in node.power

    ok(home, "tx", "staking", "create-validator", "carol", "--pubkey-from-home", str(cmthome), "--amount", "300", "-y")
    shown = ok_json(home, "query", "staking", "validator", "carol")
    assert (shown["moniker"], shown["power"], shown["consensus_address"]) == ("fifth-node", 3, consensus_address(key))
    assert node.power[key] == 3


def test_query_validator_errors_and_proof(home: Path, node: AppNode) -> None:
    nobody = run(home, "query", "staking", "validator", "bob")
    assert nobody.exit_code == 1
    assert_one_error_line(nobody.stderr, f"{node.addresses['bob']} operates no validator")
    proven = ok_json(home, "query", "staking", "validator", "val0", "--prove")
    assert proven["proof"]["verified"] is True and proven["power"] == 10 and proven["height"] == node.height - 1
    assert "proof verified against app hash" in ok(home, "query", "staking", "validator", "val0", "--prove")


def test_edit_validator(home: Path, node: AppNode) -> None:
    ok(home, "tx", "staking", "edit-validator", "val0", "--moniker", "renamed", "-y")
    assert ok_json(home, "query", "staking", "validator", "val0")["moniker"] == "renamed"
    stranger = run(home, "tx", "staking", "edit-validator", "bob", "--moniker", "x", "-y")
    assert stranger.exit_code == 1
    assert_one_error_line(stranger.stderr, "error: tx rejected (staking code 1): unknown validator")
    too_long = run(home, "tx", "staking", "edit-validator", "val0", "--moniker", "x" * 65, "-y")
    assert_one_error_line(too_long.stderr, "(staking code 10): invalid moniker")


def test_jail_shows_and_unjail_restores(home: Path, node: AppNode) -> None:
    not_jailed = run(home, "tx", "staking", "unjail", "val0", "-y")
    assert not_jailed.exit_code == 1
    assert_one_error_line(not_jailed.stderr, "error: tx rejected (staking code 7): validator", "is not jailed")

    missed = [(crypto.address_bytes(cons_key(0)), False)]
    for _ in range(PARAMS["downtime_max_missed"]):
        node.block([], votes=missed)
    jailed_at = node.height
    shown = ok_json(home, "query", "staking", "validator", "val0")
    assert (shown["power"], shown["jailed_until"]) == (0, jailed_at + PARAMS["jail_blocks"])
    row = next(line for line in ok(home, "query", "staking", "validators").splitlines() if " val0 " in line)
    assert row.split()[3:5] == ["0", str(jailed_at + PARAMS["jail_blocks"])]
    cometbft = [v["address"] for v in ok_json(home, "status")["validators"]]
    assert consensus_address(cons_key(0)) not in cometbft

    early = run(home, "tx", "staking", "unjail", "val0", "-y")
    assert_one_error_line(early.stderr, "error: tx rejected (staking code 8):", f"jailed until height {jailed_at + PARAMS['jail_blocks']}")
    while node.height + 1 < jailed_at + PARAMS["jail_blocks"]:
        node.block([])
    ok(home, "tx", "staking", "unjail", "val0", "-y")
    assert ok_json(home, "query", "staking", "validator", "val0")["jailed_until"] == 0
    assert cons_key(0) in node.power


# --- delegations and unbondings --------------------------------------------------


def test_delegate_undelegate_and_unbondings(home: Path, node: AppNode) -> None:
    val0 = node.addresses["val0"]
    empty = run(home, "query", "staking", "delegations", "bob")
    assert empty.exit_code == 0 and empty.stdout == "" and "has no delegations" in empty.stderr
    assert ok_json(home, "query", "staking", "delegations", "bob")["delegations"] == []

    ok(home, "tx", "staking", "delegate", "bob", "val0", "300", "-y")  # validator by key name
    assert node.power[cons_key(0)] == 13
    listed = ok_json(home, "query", "staking", "delegations", "bob")
    assert listed["delegator"] == node.addresses["bob"] and listed["delegations"] == [{"validator": val0, "amount": 300, "shares": 300, "rewards": 0}]
    assert ok(home, "query", "staking", "delegations", node.addresses["bob"]).splitlines()[-1] == "total 300 ugrad"

    ok(home, "tx", "staking", "undelegate", "bob", val0, "100ugrad", "-y")  # validator by address
    completes = node.height + PARAMS["unbonding_blocks"]
    entries = ok_json(home, "query", "staking", "unbondings", "bob")["unbondings"]
    assert entries == [{"owner": node.addresses["bob"], "amount": 100, "kind": "delegation", "validator": val0, "completion_height": completes}]
    table = ok(home, "query", "staking", "unbondings").splitlines()
    assert table[0].split() == ["OWNER", "KIND", "VALIDATOR", "AMOUNT", "COMPLETES", "AT"]
    assert table[1].split() == [node.addresses["bob"], "delegation", val0, "100", "ugrad", str(completes)]
    assert "no pending unbondings of" in run(home, "query", "staking", "unbondings", "carol").stderr

    before = balance(home, "bob")
    too_much = run(home, "tx", "staking", "undelegate", "bob", "val0", "201", "-y")
    assert too_much.exit_code == 1 and too_much.stdout == ""
    assert_one_error_line(too_much.stderr, "error: tx rejected (staking code 6): cannot undelegate 201ugrad:", "has 200ugrad delegated")
    assert balance(home, "bob") == before


def test_withdraw_rewards(home: Path, node: AppNode) -> None:
    ok(home, "tx", "staking", "delegate", "bob", "val0", "1000", "-y")
    node.block([], proposer=crypto.address_bytes(cons_key(0)))  # the fees collected so far go to val0's delegators
    (entry,) = ok_json(home, "query", "staking", "delegations", "bob")["delegations"]
    assert entry["rewards"] > 0 and entry["shares"] == 1000
    assert ok(home, "query", "staking", "delegations", "bob").splitlines()[0].split() == ["VALIDATOR", "AMOUNT", "REWARDS"]
    before = balance(home, "bob")
    ok(home, "tx", "staking", "withdraw-rewards", "bob", "val0", "-y")
    assert balance(home, "bob") == before + entry["rewards"] - MIN_FEE
    assert ok_json(home, "query", "staking", "delegations", "bob")["delegations"][0]["rewards"] == 0
    nothing = run(home, "tx", "staking", "withdraw-rewards", "carol", "val0", "-y")
    assert nothing.exit_code == 1
    assert_one_error_line(nothing.stderr, "error: tx rejected (staking code 15):", "has no delegation to")


def test_unknown_keys_and_validators(home: Path, node: AppNode) -> None:
    mallory = run(home, "tx", "staking", "delegate", "mallory", "val0", "5", "-y")
    assert mallory.exit_code == 1
    assert_one_error_line(mallory.stderr, "unknown key 'mallory'")
    nobody = run(home, "tx", "staking", "delegate", "bob", "nobody", "5", "-y")
    assert_one_error_line(nobody.stderr, "'nobody' is neither an address nor a key")
    stranger = crypto.PrivateKey.generate().address
    unknown = run(home, "tx", "staking", "delegate", "bob", stranger, "5", "-y")
    assert_one_error_line(unknown.stderr, "error: tx rejected (staking code 1): unknown validator", stranger)
    bad = run(home, "query", "staking", "delegations", stranger[:-1] + ("q" if stranger[-1] != "q" else "p"))
    assert_one_error_line(bad.stderr, "bad checksum")
    no_signer = run(home, "tx", "staking", "unjail", stranger, "-y")
    assert_one_error_line(no_signer.stderr, f"no key for address {stranger}")


# --- trainer bonds, params ---------------------------------------------------------


def test_trainer_bond(home: Path, node: AppNode) -> None:
    """Trainer bonds live in the training module (issue 11 defect 6); the staking CLI reads /training/trainer_bond."""
    assert ok(home, "query", "staking", "trainer-bond", "carol").splitlines()[0] == "0 ugrad bonded"
    ok(home, "tx", "staking", "bond-trainer", "carol", "500", "-y")
    assert ok(home, "query", "staking", "trainer-bond", "carol").splitlines() == [
        "500 ugrad bonded", "0 ugrad locked by an undecided submission", "0 ugrad unbonding"]
    node.block([])  # --prove reads the latest height that has a successor header
    proven = ok_json(home, "query", "staking", "trainer-bond", "carol", "--prove")
    assert (proven["trainer_bond"], proven["locked"], proven["proof"]["verified"]) == (500, 0, True)

    ok(home, "tx", "staking", "unbond-trainer", "carol", "200", "-y")
    found = ok_json(home, "query", "staking", "trainer-bond", node.addresses["carol"])
    assert (found["trainer_bond"], found["locked"], found["unbonding"]) == (300, 0, 200)
    assert ok_json(home, "query", "staking", "unbondings", "carol")["unbondings"] == []  # not a staking unbonding any more
    too_much = run(home, "tx", "staking", "unbond-trainer", "carol", "301", "-y")
    assert too_much.exit_code == 1
    assert_one_error_line(too_much.stderr, "error: tx rejected (training code 12): cannot unbond 301ugrad:", "has 300ugrad unlocked trainer bond")
    broke = run(home, "tx", "staking", "bond-trainer", "carol", str(FUNDS), "-y")
    assert_one_error_line(broke.stderr, "error: tx rejected (bank code")


def test_params(home: Path, node: AppNode) -> None:
    params = ok_json(home, "query", "staking", "params")
    assert {k: params[k] for k in PARAMS} == PARAMS and "block_reward" in params
    assert "power_unit:              100" in ok(home, "query", "staking", "params").splitlines()
    proven = ok_json(home, "query", "staking", "params", "--prove")
    assert proven["proof"]["verified"] is True and proven["power_unit"] == 100


# --- query tx ----------------------------------------------------------------------


def test_query_tx(home: Path, node: AppNode) -> None:
    sent = ok_json(home, "tx", "staking", "delegate", "bob", "val0", "42", "-y", "--memo", "hello")
    found = ok_json(home, "query", "tx", sent["hash"].lower())
    assert (found["hash"], found["height"], found["code"], found["signer"]) == (sent["hash"], sent["height"], 0, node.addresses["bob"])
    assert found["message"] == {"type": "delegate", "validator": node.addresses["val0"], "amount": 42}
    assert (found["fee"], found["nonce"], found["memo"]) == (MIN_FEE, 0, "hello")
    delegated = next(e for e in found["events"] if e["type"] == "delegated")
    assert delegated["attributes"] == {"delegator": node.addresses["bob"], "validator": node.addresses["val0"], "amount": "42"}
    text = ok(home, "query", "tx", "0x" + sent["hash"])
    assert "code:    0 (ok)" in text and "message: delegate" in text and "  delegated  delegator=" in text

    missing = run(home, "query", "tx", "AB" * 32)
    assert missing.exit_code == 1
    assert_one_error_line(missing.stderr, f"tx {'AB' * 32} not found")
    bad = run(home, "query", "tx", "xyz")
    assert bad.exit_code == 2
    assert_one_error_line(bad.stderr, "'xyz' is not a tx hash")


# --- argument and node errors ------------------------------------------------------


@pytest.mark.parametrize("amount", ["0", "-5", "1.5", "1e3", "ten", "10atom"])
@pytest.mark.parametrize("command", [
    ("delegate", "alice", "alice"), ("undelegate", "alice", "alice"), ("bond-trainer", "alice"), ("unbond-trainer", "alice"),
    ("create-validator", "alice", "--pubkey-from-home", "cometbft-home", "--amount"),
])
def test_bad_amount(home: Path, command: tuple[str, ...], amount: str) -> None:
    add_key(home, "alice")
    result = run(home, "tx", "staking", *command, amount, "-y", "--node", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "Invalid value for", "AMOUNT" if command[-1] != "--amount" else "'--amount'")


def test_node_unreachable_is_one_line(home: Path, tmp_path: Path) -> None:
    add_key(home, "alice")
    url = f"http://127.0.0.1:{free_port()}"
    commands = [
        ["tx", "staking", "create-validator", "alice", "--pubkey-from-home", str(cometbft_home(tmp_path, 6)), "--amount", "500", "-y"],
        ["tx", "staking", "delegate", "alice", "alice", "5", "-y"],
        ["tx", "staking", "undelegate", "alice", "alice", "5", "-y"],
        ["tx", "staking", "edit-validator", "alice", "--moniker", "m", "-y"],
        ["tx", "staking", "unjail", "alice", "-y"],
        ["tx", "staking", "bond-trainer", "alice", "5", "-y"],
        ["tx", "staking", "unbond-trainer", "alice", "5", "-y"],
        ["query", "staking", "validators"],
        ["query", "staking", "validator", "alice"],
        ["query", "staking", "delegations", "alice"],
        ["query", "staking", "unbondings"],
        ["query", "staking", "trainer-bond", "alice"],
        ["query", "staking", "params"],
        ["query", "tx", "AB" * 32],
    ]
    for args in commands:
        result = run(home, *args, "--node", url)
        assert result.exit_code == 1, args
        assert_one_error_line(result.stderr, f"node not running at {url}")
        assert result.stdout == ""


def test_query_on_a_node_without_staking(home: Path, node: AppNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "rpc_abci_query", lambda params: {"result": {"response": {
        "code": 9, "codespace": "runtime", "log": "unknown query path '/staking/validators'"}}})
    result = run(home, "query", "staking", "validators")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "query /staking/validators failed (runtime code 9): unknown query path")
