"""`gradchain tx dataset add`, and `gradchain dataset add`, its old name kept as a hidden alias.

The node is test_cli_staking's AppNode (the real Application behind a loopback
RPC server); Kubo is a stand-in that records what was added and answers with
the CID computed locally, as a real node would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from abci_app import paging
from abci_app.cli import model as model_cli
from abci_app.client import ChainClient
from abci_app.ipfs.cid import cid_of_file
from abci_app.ipfs.download import file_sha256
from tests.unit.test_cli import add_key, assert_one_error_line, run
from tests.unit.test_cli_staking import MIN_FEE, AppNode

FUNDS = 10_000
COMMANDS = [("tx", "dataset", "add"), ("dataset", "add")]


class FakeKubo:
    """IpfsClient's `add` as a context manager; `lie` makes it answer another CID."""

    added: list[Path] = []
    lie = False

    def __init__(self, url: str):
        self.url = url

    def __enter__(self) -> "FakeKubo":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def add(self, path: Path) -> str:
        FakeKubo.added.append(path)
        return "bafkreiaaaa" if FakeKubo.lie else cid_of_file(path)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def node(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppNode]:
    """Key alice holds FUNDS; Kubo is FakeKubo."""
    alice = add_key(home, "alice")
    app_node = AppNode(tmp_path / "app", {alice: FUNDS}, {})
    app_node.alice = alice
    monkeypatch.setenv("GRADCHAIN_NODE", app_node.url)
    monkeypatch.setattr(model_cli, "IpfsClient", FakeKubo)
    monkeypatch.setattr(FakeKubo, "added", [])
    monkeypatch.setattr(FakeKubo, "lie", False)
    yield app_node
    app_node.close()


def corpus(tmp_path: Path, name: str = "psalms.txt") -> Path:
    path = tmp_path / name
    path.write_text(f"The heavens declare the glory of God ({name}).\n" * 40)
    return path


def registered(node: AppNode) -> list[dict]:
    with ChainClient(node.url) as chain:
        return chain.query_pages("/datasets/list")


def add_args(path: Path, name: str = "psalms") -> list[str]:
    return [str(path), "--from", "alice", "--name", name, "--licence", "CC0-1.0"]


@pytest.mark.parametrize("command", COMMANDS)
def test_dataset_add_publishes_and_registers(home: Path, node: AppNode, tmp_path: Path, command: tuple[str, ...]) -> None:
    path = corpus(tmp_path)
    result = run(home, *command, *add_args(path), "-y", "-o", "json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    cid, size = cid_of_file(path), path.stat().st_size
    assert {k: out[k] for k in ("cid", "sha256", "bytes", "height")} == {"cid": cid, "sha256": file_sha256(path), "bytes": size, "height": node.height}
    assert node.committed[out["hash"]]["tx_result"]["code"] == 0 and FakeKubo.added == [path]
    (entry,) = registered(node)
    assert (entry["name"], entry["cid"], entry["licence"], entry["bytes"], entry["tokenizer"]) == ("psalms", cid, "CC0-1.0", size, "bytes")
    with ChainClient(node.url) as chain:
        assert chain.query_int("/bank/balance", node.alice) == FUNDS - MIN_FEE

    other = corpus(tmp_path, "proverbs.txt")
    text = run(home, *command, *add_args(other, "proverbs"), "--yes")
    assert text.exit_code == 0, text.output
    assert re.fullmatch(rf"added {re.escape(str(other))} to IPFS as {cid_of_file(other)}\nregistered in tx [0-9A-F]{{64}} at height {node.height}\n", text.stdout)

    no_wait = json.loads(run(home, *command, *add_args(corpus(tmp_path, "job.txt"), "job"), "-y", "--no-wait", "-o", "json").stdout)
    assert no_wait["height"] is None and no_wait["hash"] in node.committed


def test_the_old_name_is_a_hidden_alias(home: Path) -> None:
    listed = run(home, "dataset", "--help")
    commands = listed.stdout.split("Commands:")[1].split()
    assert listed.exit_code == 0 and "list" in commands and "add" not in commands
    helped = run(home, "dataset", "add", "--help")
    assert "Deprecated alias of `gradchain tx dataset add`" in helped.stdout and "--no-wait" in helped.stdout
    assert helped.stdout.split("Options:")[1] == run(home, "tx", "dataset", "add", "--help").stdout.split("Options:")[1]


def test_dataset_add_asks_before_publishing(home: Path, node: AppNode, tmp_path: Path) -> None:
    command = ("tx", "dataset", "add")
    path = corpus(tmp_path)
    declined = run(home, *command, *add_args(path), input="n\n")
    assert declined.exit_code == 1 and FakeKubo.added == [] and registered(node) == []
    assert f"register {path} as dataset 'psalms' ({path.stat().st_size} bytes, licence CC0-1.0, cid {cid_of_file(path)})" in declined.stderr
    assert f"fee {MIN_FEE} ugrad, nonce 0, chain test-chain" in declined.stderr
    assert declined.stderr.splitlines()[-1].startswith("error: transaction not sent")

    accepted = run(home, *command, *add_args(path), input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert FakeKubo.added == [path] and len(registered(node)) == 1


@pytest.mark.parametrize("command", COMMANDS)
def test_dataset_add_errors_are_one_line(home: Path, node: AppNode, tmp_path: Path, command: tuple[str, ...]) -> None:
    path = corpus(tmp_path)
    assert run(home, *command, *add_args(path), "-y").exit_code == 0
    again = run(home, *command, *add_args(path, "again"), "-y")
    assert again.exit_code == 1 and again.stdout == ""
    assert_one_error_line(again.stderr, "error: tx rejected (datasets code", f"dataset with sha256 {file_sha256(path)} is already registered as id 0")

    FakeKubo.lie = True
    lied = run(home, *command, *add_args(corpus(tmp_path, "other.txt"), "other"), "-y")
    assert_one_error_line(lied.stderr, "returned CID bafkreiaaaa", "not registered")
    assert len(registered(node)) == 1

    missing = run(home, *command, str(tmp_path / "missing.txt"), "--from", "alice", "--name", "x", "--licence", "CC0-1.0", "-y")
    assert missing.exit_code == 2
    assert_one_error_line(missing.stderr, "missing.txt")


def test_the_old_name_sends_without_asking_as_it_always_did(home: Path, node: AppNode, tmp_path: Path) -> None:
    """Scripts written for `gradchain dataset add` (which never asked) keep working; the new name asks."""
    path = corpus(tmp_path)
    asked = run(home, "tx", "dataset", "add", *add_args(path), "-o", "json", input="n\n")
    assert asked.exit_code != 0 and registered(node) == [] and FakeKubo.added == []
    old = run(home, "dataset", "add", *add_args(path), "-o", "json", input="")
    assert old.exit_code == 0, old.output
    assert [entry["name"] for entry in registered(node)] == ["psalms"]


def test_dataset_list_walks_every_page(home: Path, node: AppNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node answers /datasets/list a page at a time; `dataset list` shows the whole list, as it always did."""
    names = ["psalms", "proverbs", "job"]
    for name in names:
        assert run(home, "tx", "dataset", "add", *add_args(corpus(tmp_path, f"{name}.txt"), name), "-y").exit_code == 0
    monkeypatch.setattr(paging, "MAX_ENTRIES", 1)
    result = run(home, "dataset", "list", "-o", "json")
    assert result.exit_code == 0, result.output
    assert [(d["id"], d["name"]) for d in json.loads(result.stdout)] == list(enumerate(names))
    text = run(home, "dataset", "list").stdout.splitlines()
    assert [line.split()[1] for line in text[1:]] == names
