"""Unit tests for the `gradchain` CLI: keys, tx bank send, queries, status and error lines.

Chain-facing commands run against FakeNode, a loopback HTTP server that answers
the CometBFT RPC calls the CLI makes from a tiny in-memory bank whose state sits
in a real Merkle-Patricia trie, so `--prove` checks real proofs. A few tests run
the installed `gradchain` script as a subprocess to see exactly what a user sees.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import click
import pytest
import rlp
from click.testing import CliRunner, Result
from trie import HexaryTrie

from abci_app import crypto
from abci_app import tx as txlib
from abci_app.cli.main import cli
from abci_app.modules.bank import balance_key
from abci_app.state.proof import lookup
from tests.unit.lightchain import Signers, consensus_key, json_handler

GRADCHAIN = shutil.which("gradchain", path=str(Path(sys.executable).parent)) or "gradchain"
CHAIN_ID = "test-chain"
RICH = 1_000_000


# --- helpers -----------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(home: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Invoke the CLI in-process the way a shell would (click's runner calls our main())."""
    return CliRunner().invoke(cli, list(args), input=input, env={"GRADCHAIN_HOME": str(home), **(env or {})})


def run_process(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRADCHAIN_HOME": str(home)}
    env.pop("GRADCHAIN_DEBUG", None)
    return subprocess.run([GRADCHAIN, *args], input=input, capture_output=True, text=True, env=env, timeout=60)


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    """The error contract: exactly one line, `error: ` first, no traceback, naming what was wrong."""
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_key(home: Path, name: str) -> str:
    result = run(home, "keys", "add", name, "-o", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["address"]


# --- a fake CometBFT node ----------------------------------------------------


class FakeNode:
    """Answers status, validators, header, abci_query, broadcast_tx_sync and tx like CometBFT would.

    Every accepted tx is put in its own block at once; `check_reject` makes CheckTx
    answer (code, codespace, log); `tamper` makes queries lie about the value.
    """

    def __init__(self, balances: dict[str, int], min_fee: int = 2):
        self.db: dict[bytes, bytes] = {}
        self.trie = HexaryTrie(self.db)
        self.balances: dict[str, int] = {}
        self.nonces: dict[str, int] = {}
        self.min_fee = min_fee
        self.roots: dict[int, bytes] = {}
        self.results: dict[str, dict] = {}
        self.sent: list[txlib.SignedTx] = []
        self.check_reject: tuple[int, str, str] | None = None
        self.query_reject: tuple[int, str, str] | None = None
        self.tamper = False
        self.params_published = True
        self.signers = Signers(CHAIN_ID)  # signs the headers /commit serves, so --prove can verify them
        for address, amount in balances.items():
            self._set_balance(address, amount)
        self._commit()
        self._commit()  # two blocks, so the first state has a successor header to prove against
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), json_handler(lambda path, params: {"jsonrpc": "2.0", "id": -1, **getattr(self, "rpc_" + path)(params)}))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def height(self) -> int:
        return max(self.roots)

    def _set_balance(self, address: str, amount: int) -> None:
        self.balances[address] = amount
        self.trie.set(balance_key(address), str(amount).encode())

    def _commit(self) -> None:
        self.roots[len(self.roots) + 1] = self.trie.root_hash

    # --- RPC methods: each returns {"result": ...} or {"error": ...} ----------

    def rpc_status(self, params: dict) -> dict:
        return {"result": {
            "node_info": {"network": CHAIN_ID, "moniker": "fake0", "id": "ab" * 20},
            "sync_info": {"latest_block_height": str(self.height), "latest_app_hash": self.roots[self.height - 1].hex().upper(),
                          "latest_block_time": "2025-01-01T00:00:00Z", "catching_up": False},
        }}

    def consensus_powers(self) -> list[tuple[bytes, int]]:
        """The CometBFT validator set: (ed25519 pubkey, power)."""
        return [(consensus_key(i).pubkey, 10) for i in range(4)]

    def app_hash_after(self, height: int) -> bytes:
        return self.roots.get(height, b"")

    def write_genesis(self, home: Path) -> None:
        """The genesis file `--prove` trusts by default (HOME/config/genesis.json)."""
        (home / "config").mkdir(parents=True, exist_ok=True)
        (home / "config" / "genesis.json").write_text(json.dumps(self.signers.genesis_json(self.consensus_powers())))

    def rpc_validators(self, params: dict) -> dict:
        validators = self.signers.validators_json(self.consensus_powers())
        return {"result": {"block_height": str(self.height), "validators": validators, "count": str(len(validators)), "total": str(len(validators))}}

    def rpc_commit(self, params: dict) -> dict:
        height = int(params["height"])
        if not 1 <= height <= self.height:
            return {"error": {"code": -32603, "message": "Internal error", "data": f"height {height} must be less than or equal to the current blockchain height {self.height}"}}
        return {"result": self.signers.commit_json(height, self.app_hash_after(height - 1), self.consensus_powers())}

    def rpc_header(self, params: dict) -> dict:
        height = int(params["height"])
        if height not in self.roots:
            return {"error": {"code": -32603, "message": "Internal error", "data": f"height {height} must be less than or equal to the current blockchain height {self.height}"}}
        return {"result": {"header": {"chain_id": CHAIN_ID, "height": str(height), "app_hash": self.roots[height - 1].hex().upper()}}}

    def rpc_abci_query(self, params: dict) -> dict:
        path = json.loads(params["path"])
        if path == "/app/simulate":  # like a node without the byte fee: the CLI keeps min_fee
            return {"result": {"response": {"code": 9, "codespace": "runtime", "log": f"unknown query path '{path}'"}}}
        data = bytes.fromhex(params.get("data", "0x")[2:]).decode()
        if self.query_reject:
            code, codespace, log = self.query_reject
            return {"result": {"response": {"code": code, "codespace": codespace, "log": log}}}
        if path == "/app/params" and self.params_published:
            return self._query_answer(json.dumps({"bank": {"min_fee": self.min_fee}}).encode())
        if path == "/auth/nonce":
            return self._query_answer(str(self.nonces.get(data, 0)).encode())
        assert path == "/bank/balance", path
        height = int(params.get("height") or self.height)
        key = balance_key(data)
        value, proof = lookup(self.db.__getitem__, self.roots[height], key)
        if self.tamper:
            value = str(int(value or b"0") + 1).encode()
        ops = [{"type": "gradchain:mpt", "key": _b64(key), "data": _b64(rlp.encode(proof))}] if params.get("prove") == "true" else []
        return self._query_answer(value or b"", key=key, height=height, ops=ops)

    def _query_answer(self, value: bytes, key: bytes = b"", height: int | None = None, ops: list | None = None) -> dict:
        response = {"code": 0, "log": "", "key": _b64(key), "value": _b64(value), "height": str(height or self.height)}
        if ops:
            response["proofOps"] = {"ops": ops}
        return {"result": {"response": response}}

    def rpc_broadcast_tx_sync(self, params: dict) -> dict:
        raw = bytes.fromhex(params["tx"][2:])
        tx_hash = hashlib.sha256(raw).hexdigest().upper()
        if self.check_reject:
            code, codespace, log = self.check_reject
            return {"result": {"code": code, "codespace": codespace, "log": log, "hash": tx_hash, "data": ""}}
        tx = txlib.decode(raw)
        assert tx.signature_valid() and tx.body.chain_id == CHAIN_ID
        assert tx.body.nonce == self.nonces.get(tx.signer, 0), "the CLI must use the account's next nonce"
        self.sent.append(tx)
        self.nonces[tx.signer] = tx.body.nonce + 1
        self._set_balance(tx.signer, self.balances.get(tx.signer, 0) - tx.body.fee)
        msg, available = tx.body.send, self.balances.get(tx.signer, 0)
        if msg.amount > available:
            result = {"code": 1, "codespace": "bank", "log": f"insufficient balance: {tx.signer} has {available}ugrad, needs {msg.amount}ugrad"}
        else:
            self._set_balance(tx.signer, available - msg.amount)
            self._set_balance(msg.recipient, self.balances.get(msg.recipient, 0) + msg.amount)
            result = {"code": 0, "codespace": "", "log": ""}
        self._commit()
        self.results[tx_hash] = {"hash": tx_hash, "height": str(self.height), "tx_result": result}
        return {"result": {"code": 0, "log": "", "codespace": "", "hash": tx_hash, "data": ""}}

    def rpc_tx(self, params: dict) -> dict:
        tx_hash = params["hash"][2:].upper()
        if tx_hash not in self.results:
            return {"error": {"code": -32603, "message": "Internal error", "data": f"tx ({tx_hash}) not found"}}
        return {"result": self.results[tx_hash]}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def chain(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeNode, str, str]]:
    """A fake node where key `alice` holds RICH ugrad and key `bob` nothing; yields (node, alice, bob)."""
    alice, bob = add_key(home, "alice"), add_key(home, "bob")
    node = FakeNode({alice: RICH})
    node.write_genesis(home)
    monkeypatch.setenv("GRADCHAIN_NODE", node.url)  # in os.environ, so subprocesses see it too
    yield node, alice, bob
    node.server.shutdown()
    node.server.server_close()


# --- keys ----------------------------------------------------------------------


def test_keys_round_trip(home: Path, tmp_path: Path) -> None:
    alice = add_key(home, "alice")
    key_file = home / "keyring" / "alice.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    listed = run(home, "keys", "list", "-o", "json")
    assert json.loads(listed.stdout) == [{"name": "alice", "address": alice, "pubkey": json.loads(key_file.read_text())["pubkey"]}]
    assert run(home, "keys", "show", "alice", "--address").stdout.strip() == alice
    assert alice in run(home, "keys", "show", "alice").stdout

    exported = run(home, "keys", "export", "alice")
    assert exported.exit_code == 0 and "private key" in exported.stderr
    assert json.loads(exported.stdout)["address"] == alice
    backup = tmp_path / "alice.json"
    backup.write_text(exported.stdout)

    other = tmp_path / "other"
    imported = run(other, "keys", "import", "alice2", str(backup))
    assert imported.exit_code == 0, imported.output
    assert run(other, "keys", "show", "alice2", "-a").stdout.strip() == alice
    assert stat.S_IMODE((other / "keyring" / "alice2.json").stat().st_mode) == 0o600
    from_stdin = run(other, "keys", "import", "alice3", "-", input=exported.stdout)
    assert from_stdin.exit_code == 0 and alice in from_stdin.stdout


def test_keys_errors(home: Path, tmp_path: Path) -> None:
    add_key(home, "alice")
    duplicate = run(home, "keys", "add", "alice")
    assert duplicate.exit_code == 1
    assert_one_error_line(duplicate.stderr, "key 'alice' already exists")

    unknown = run(home, "keys", "show", "nobody")
    assert unknown.exit_code == 1
    assert_one_error_line(unknown.stderr, "unknown key 'nobody'")

    bad = tmp_path / "bad.json"
    bad.write_text('{"seed": "zz"}')
    bad_import = run(home, "keys", "import", "eve", str(bad))
    assert bad_import.exit_code == 1
    assert_one_error_line(bad_import.stderr, "not an exported gradchain key")

    missing = run(home, "keys", "import", "eve", str(tmp_path / "missing.json"))
    assert missing.exit_code == 2
    assert_one_error_line(missing.stderr, "missing.json")

    bad_name = run(home, "keys", "add", "../evil")
    assert_one_error_line(bad_name.stderr, "invalid key name")


def test_keys_list_empty(home: Path) -> None:
    result = run(home, "keys", "list")
    assert result.exit_code == 0 and result.stdout == "" and "no keys" in result.stderr
    assert json.loads(run(home, "keys", "list", "-o", "json").stdout) == []


def test_keys_as_subprocess(home: Path) -> None:
    added = run_process(home, "keys", "add", "carol", "--output", "json")
    assert added.returncode == 0, added.stderr
    address = json.loads(added.stdout)["address"]
    assert run_process(home, "keys", "show", "carol", "-a").stdout.strip() == address
    unknown = run_process(home, "keys", "export", "dave")
    assert unknown.returncode == 1
    assert_one_error_line(unknown.stderr, "unknown key 'dave'")


def test_keys_add_encrypts_and_prints_the_mnemonic_once(home: Path, tmp_path: Path) -> None:
    """issue 11 defect 13: `keys add` stored the seed in clear and gave no mnemonic; `--recover` rebuilds the key."""
    added = run(home, "keys", "add", "alice", "-o", "json")
    assert added.exit_code == 0, added.output
    data = json.loads(added.stdout)
    words = data["mnemonic"]
    assert len(words.split()) == 24 and "write" in added.stderr and words not in added.stderr  # json: only in the JSON
    seed = json.loads(run(home, "keys", "export", "alice").stdout)["seed"]
    stored = (home / "keyring" / "alice.json").read_text()
    assert seed not in stored and words.split()[0] not in json.loads(stored).values()

    text = run(home, "keys", "add", "bob")
    assert text.exit_code == 0 and "mnemonic" not in text.stdout
    bob_words = text.stderr.strip().splitlines()[-1]
    assert len(bob_words.split()) == 24 and "write this mnemonic phrase down" in text.stderr

    for args in (["keys", "show", "alice", "-o", "json"], ["keys", "list", "-o", "json"]):
        assert "mnemonic" not in run(home, *args).stdout  # shown once, at creation

    other = tmp_path / "other"
    recovered = run(other, "keys", "add", "alice", "--recover", "-o", "json", input=words + "\n")
    assert recovered.exit_code == 0, recovered.output
    assert json.loads(recovered.stdout) == {k: data[k] for k in ("name", "address", "pubkey")}
    assert run(other, "keys", "add", "bob", "--recover", input=bob_words + "\n").exit_code == 0
    assert run(other, "keys", "show", "bob", "-a").stdout == run(home, "keys", "show", "bob", "-a").stdout

    bad = run(other, "keys", "add", "carol", "--recover", input="abandon " * 24 + "\n")
    assert bad.exit_code == 1
    assert_one_error_line(bad.stderr, "invalid mnemonic")
    assert not (other / "keyring" / "carol.json").exists()


def test_keys_passphrase_errors_are_one_line(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 11 defect 13: a wrong passphrase or none at all (no terminal) is one error line and writes nothing."""
    add_key(home, "alice")
    wrong = run(home, "keys", "export", "alice", env={"GRADCHAIN_KEYRING_PASSPHRASE": "not the passphrase"})
    assert wrong.exit_code == 1 and wrong.stdout == ""
    assert_one_error_line(wrong.stderr, "wrong passphrase for key 'alice'")
    sign = run(home, "tx", "bank", "send", "alice", "alice", "5", "--yes", env={"GRADCHAIN_KEYRING_PASSPHRASE": "not the passphrase"})
    assert_one_error_line(sign.stderr, "wrong passphrase for key 'alice'")

    monkeypatch.delenv("GRADCHAIN_KEYRING_PASSPHRASE")
    for args in (["keys", "add", "bob"], ["keys", "export", "alice"]):
        result = run(home, *args)
        assert result.exit_code == 1 and result.stdout == ""
        assert_one_error_line(result.stderr, "no passphrase was given: set GRADCHAIN_KEYRING_PASSPHRASE, pass --passphrase-file FILE")
    assert sorted(os.listdir(home / "keyring")) == ["alice.json"]
    assert run(home, "keys", "show", "alice", "-a").exit_code == 0  # public parts need no passphrase


def test_keys_passphrase_file_and_terminal_prompt(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripts use --passphrase-file; at a terminal the passphrase is asked (twice at creation), hidden, on stderr."""
    monkeypatch.delenv("GRADCHAIN_KEYRING_PASSPHRASE")
    secret = tmp_path / "pass"
    secret.write_text("from a file, 1st line\n")
    added = run(home, "keys", "add", "alice", "--passphrase-file", str(secret), "-o", "json")
    assert added.exit_code == 0, added.output
    exported = run(home, "keys", "export", "alice", "--passphrase-file", str(secret))
    assert json.loads(exported.stdout)["address"] == json.loads(added.stdout)["address"]

    monkeypatch.setattr("abci_app.cli.common.is_terminal", lambda: True)
    typed = run(home, "keys", "add", "bob", "-o", "json", input="typed passphrase\ntyped passphrase\n")
    assert typed.exit_code == 0, typed.output
    assert "typed passphrase" not in typed.output and "Repeat for confirmation" in typed.stderr
    address = json.loads(typed.stdout)["address"]  # the prompts went to stderr: stdout is still one JSON document
    shown = run(home, "keys", "export", "bob", input="typed passphrase\n")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["address"] == address


def test_keys_test_backend_and_localnet_keyring(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 11 defect 13: the plain backend is opt-in (flag, env or a localnet's marker), never prompts, and warns."""
    from abci_app.keyring import TEST_BACKEND_WARNING
    from abci_app.localnet import dev_keyring

    monkeypatch.delenv("GRADCHAIN_KEYRING_PASSPHRASE")
    flagged = run(home, "keys", "add", "dev", "--keyring-backend", "test", "-o", "json")
    assert flagged.exit_code == 0, flagged.output
    assert flagged.stderr.startswith(TEST_BACKEND_WARNING + "\n")
    assert "seed" in json.loads((home / "keyring" / "dev.json").read_text())

    localnet = tmp_path / "localnet"
    dev_keyring(localnet).add("dev0")
    added = run(localnet, "keys", "add", "e2e-broke")  # what the e2e tests do on the localnet's keyring
    assert added.exit_code == 0, added.output
    assert added.stderr.startswith(TEST_BACKEND_WARNING + "\n")
    listed = run(localnet, "keys", "list")
    assert listed.stderr == TEST_BACKEND_WARNING + "\n" and "dev0" in listed.stdout and "e2e-broke" in listed.stdout
    env_chosen = run(tmp_path / "env", "keys", "add", "x", env={"GRADCHAIN_KEYRING_BACKEND": "test"})
    assert env_chosen.exit_code == 0 and TEST_BACKEND_WARNING in env_chosen.stderr


def test_keys_import_of_an_encrypted_key_file(home: Path, tmp_path: Path) -> None:
    """A keyring's own (encrypted) key file imports too, not only `keys export` output."""
    alice = add_key(home, "alice")
    imported = run(tmp_path / "other", "keys", "import", "alice", str(home / "keyring" / "alice.json"))
    assert imported.exit_code == 0, imported.output
    assert run(tmp_path / "other", "keys", "show", "alice", "-a").stdout.strip() == alice


# --- argument errors ---------------------------------------------------------


def test_bad_address_says_why(home: Path) -> None:
    add_key(home, "alice")
    good = crypto.PrivateKey.generate().address
    bad_checksum = good[:-1] + ("q" if good[-1] != "q" else "p")
    other_chain = crypto.bech32_encode("cosmos", bytes(20))
    for to, why in [(bad_checksum, "bad checksum"), (other_chain, "expected prefix 'gc1', got 'cosmos1'"), ("nobody", "neither an address nor a key")]:
        result = run(home, "tx", "bank", "send", "alice", to, "5", "--yes", "--node", "http://127.0.0.1:1")
        assert result.exit_code == 1
        assert_one_error_line(result.stderr, why)
    query = run(home, "query", "bank", "balance", bad_checksum)
    assert_one_error_line(query.stderr, f"invalid address '{bad_checksum}': bad checksum")


@pytest.mark.parametrize("amount", ["0", "-5", "1.5", "1e3", "ten", "10atom", ""])
def test_bad_amount(home: Path, amount: str) -> None:
    add_key(home, "alice")
    result = run(home, "tx", "bank", "send", "alice", "alice", amount, "--yes")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "Invalid value for 'AMOUNT'")


def test_amount_accepts_denom_suffix() -> None:
    from abci_app.cli.common import AMOUNT

    assert AMOUNT.convert("1000ugrad", None, None) == 1000 and AMOUNT.convert("007", None, None) == 7


def test_node_unreachable_is_one_line(home: Path) -> None:
    run_process(home, "keys", "add", "alice")
    node = f"http://127.0.0.1:{free_port()}"
    for args in (["status"], ["query", "bank", "balance", "alice"], ["tx", "bank", "send", "alice", "alice", "5", "--yes"]):
        result = run_process(home, *args, "--node", node)
        assert result.returncode == 1
        assert_one_error_line(result.stderr, f"node not running at {node}")
        assert result.stdout == ""


def test_usage_error_is_one_line(home: Path) -> None:
    result = run_process(home, "tx", "bank", "send", "alice")
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "Missing argument 'TO'", "gradchain tx bank send --help")


def test_unexpected_exception_hides_traceback_unless_debug(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object) -> list[str]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("abci_app.keyring.Keyring.names", boom)
    result = run(home, "keys", "list")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "unexpected RuntimeError: disk on fire", "GRADCHAIN_DEBUG=1")
    debug = run(home, "keys", "list", env={"GRADCHAIN_DEBUG": "1"})
    assert "Traceback" in debug.stderr and debug.stderr.rstrip().splitlines()[-1].startswith("error: unexpected")


# --- tx bank send ------------------------------------------------------------


def test_send_committed(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, alice, bob = chain
    result = run(home, "tx", "bank", "send", "alice", "bob", "250", "--yes", "--memo", "hi")
    assert result.exit_code == 0, result.output
    assert "height:" in result.stdout and "code:   0" in result.stdout
    assert node.balances[bob] == 250 and node.balances[alice] == RICH - 250 - node.min_fee
    sent = node.sent[-1]
    assert (sent.body.nonce, sent.body.fee, sent.body.memo, sent.body.send.recipient) == (0, node.min_fee, "hi", bob)

    # second send: by address, explicit fee, json output, next nonce
    result = run(home, "tx", "bank", "send", alice, bob, "50ugrad", "--fees", "7", "-y", "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["code"] == 0 and report["height"] == node.height and report["hash"] in node.results
    assert (node.sent[-1].body.nonce, node.sent[-1].body.fee) == (1, 7)
    assert node.balances[bob] == 300


def test_send_default_fee_falls_back_without_params(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, _, _ = chain
    node.params_published = False
    assert run(home, "tx", "bank", "send", "alice", "bob", "1", "-y").exit_code == 0
    assert node.sent[-1].body.fee == 1


def test_send_rejected_by_checktx(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, alice, _ = chain
    node.check_reject = (7, "runtime", f"cannot pay fee: {alice} has 0ugrad,\nfee is 2ugrad")
    result = run(home, "tx", "bank", "send", "alice", "bob", "5", "--yes")
    assert result.exit_code == 1 and result.stdout == ""
    assert_one_error_line(result.stderr, "error: tx rejected (runtime code 7): cannot pay fee:", "has 0ugrad, fee is 2ugrad")


def test_send_insufficient_balance_in_block(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, alice, bob = chain
    result = run(home, "tx", "bank", "send", "alice", "bob", str(RICH), "--yes")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "error: tx rejected (bank code 1): insufficient balance", "the fee was charged")
    assert bob not in node.balances and node.balances[alice] == RICH - node.min_fee

    as_json = run(home, "tx", "bank", "send", "alice", "bob", str(RICH), "--yes", "-o", "json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["code"] == 1
    assert_one_error_line(as_json.stderr, "insufficient balance")


def test_send_as_subprocess(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, _, bob = chain
    ok = run_process(home, "tx", "bank", "send", "alice", "bob", "10", "--yes", "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["code"] == 0 and node.balances[bob] == 10
    broke = run_process(home, "tx", "bank", "send", "bob", "alice", "1000", "--yes")
    assert broke.returncode == 1
    assert_one_error_line(broke.stderr, "tx rejected (bank code 1): insufficient balance")


def test_send_confirmation(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, _, bob = chain
    declined = run(home, "tx", "bank", "send", "alice", "bob", "5", input="n\n")
    assert declined.exit_code == 1 and not node.sent
    assert "send 5 ugrad from alice" in declined.stderr
    assert declined.stderr.splitlines()[-1].startswith("error: transaction not sent")
    accepted = run(home, "tx", "bank", "send", "alice", "bob", "5", input="y\n")
    assert accepted.exit_code == 0 and node.balances[bob] == 5


def test_send_no_wait(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, _, _ = chain
    result = run(home, "tx", "bank", "send", "alice", "bob", "5", "--yes", "--no-wait", "-o", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["hash"] in node.results


def test_send_from_unknown_key(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    result = run(home, "tx", "bank", "send", "mallory", "bob", "5", "--yes")
    assert_one_error_line(result.stderr, "unknown key 'mallory'")
    stranger = crypto.PrivateKey.generate().address
    result = run(home, "tx", "bank", "send", stranger, "bob", "5", "--yes")
    assert_one_error_line(result.stderr, f"no key for address {stranger}")


# --- queries and status ------------------------------------------------------


def test_query_balance(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, alice, bob = chain
    assert run(home, "query", "bank", "balance", "alice").stdout.strip() == f"{RICH} ugrad"
    data = json.loads(run(home, "query", "bank", "balance", alice, "-o", "json").stdout)
    assert data == {"address": alice, "balance": RICH, "height": node.height}
    assert run(home, "query", "bank", "balance", "bob").stdout.strip() == "0 ugrad"


def test_query_balance_with_proof(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, alice, bob = chain
    run(home, "tx", "bank", "send", "alice", "bob", "40", "--yes")
    run(home, "tx", "bank", "send", "alice", "bob", "2", "--yes")  # so the latest-1 state holds bob's first 40
    for who, expected in [("alice", RICH - 40 - node.min_fee), ("bob", 40)]:
        result = run(home, "query", "bank", "balance", who, "--prove")
        assert result.exit_code == 0, result.output
        height = node.height - 1
        lines = result.stdout.splitlines()
        assert lines[0] == f"{expected} ugrad"
        assert lines[1].startswith(f"proof verified against app hash {node.roots[height].hex().upper()} at height {height}: key bank/balance/")
    absent = crypto.PrivateKey.generate().address  # a proof of absence: balance 0
    data = json.loads(run(home, "query", "bank", "balance", absent, "--prove", "-o", "json").stdout)
    assert data["balance"] == 0 and data["proof"]["verified"] is True

    node.tamper = True
    lie = run(home, "query", "bank", "balance", "alice", "--prove")
    assert lie.exit_code == 1 and lie.stdout == ""
    assert_one_error_line(lie.stderr, "proof verification failed against app hash")


def test_query_error_prints_chain_log(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, _, _ = chain
    node.query_reject = (2, "runtime", "bad query argument for /bank/balance: nope")
    result = run(home, "query", "account", "alice")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "query /auth/nonce failed (runtime code 2): bad query argument")


def test_query_account(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, alice, _ = chain
    run(home, "tx", "bank", "send", "alice", "bob", "1", "--yes")
    data = json.loads(run(home, "query", "account", "alice", "-o", "json").stdout)
    assert data == {"address": alice, "nonce": 1, "balance": RICH - 1 - node.min_fee}
    assert "nonce:   1" in run(home, "query", "account", alice).stdout


def test_status(home: Path, chain: tuple[FakeNode, str, str]) -> None:
    node, _, _ = chain
    text = run(home, "status")
    assert text.exit_code == 0 and CHAIN_ID in text.stdout and "validators:   4, total power 40" in text.stdout
    data = json.loads(run(home, "status", "-o", "json").stdout)
    assert data["chain_id"] == CHAIN_ID and data["latest_block_height"] == node.height and data["moniker"] == "fake0"
    assert [v["voting_power"] for v in data["validators"]] == [10] * 4


# --- help ----------------------------------------------------------------------


def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every leaf command's path, hidden aliases of another leaf left out."""
    for name, command in group.commands.items():
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            yield from _leaves(command, path + (name,))
        else:
            yield path + (name,)


def test_every_command_has_help_with_example_and_shared_flags(home: Path) -> None:
    leaves = [leaf for leaf in _leaves(cli) if leaf[0] != "localnet"]  # localnet is another module's
    assert ("tx", "bank", "send") in leaves and ("keys", "import") in leaves and ("tx", "dataset", "add") in leaves
    for leaf in leaves:
        result = run(home, *leaf, "--help")
        assert result.exit_code == 0, leaf
        assert "Example:" in result.stdout and "$ gradchain " + " ".join(leaf) in result.stdout, leaf
        assert "--home" in result.stdout and "--output" in result.stdout, leaf
        # keys, node and genesis work on a home, not through a node's RPC
        assert ("--node" in result.stdout) == (leaf[0] not in ("keys", "node", "genesis")), leaf


def test_bare_group_prints_help(home: Path) -> None:
    result = run(home, "tx")
    assert result.exit_code == 0 and "bank" in result.stdout
