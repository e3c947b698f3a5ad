"""The explorer's pages, JSON twins and chat, served in-process against the real Application.

The node is test_cli_staking's AppNode (the real Application behind a loopback
HTTP server that speaks CometBFT's RPC), taught the block-level methods the
explorer reads: blockchain, block, block_results, commit, tx_search and
block_search, answered from what the app returned for each block. The chat
loads a real tiny-gpt checkpoint registered in genesis, from the explorer's
verified cache (no Kubo here: a file that fails its sha256 must be fetched
again, and with no IPFS that fails with one line). The browser test against a
real localnet is tests/e2e/test_explorer_e2e.py.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from abci_app import crypto
from abci_app import tx as txlib
from abci_app.cli.staking import consensus_address
from abci_app.client import ChainClient
from abci_app.explorer import views
from abci_app.explorer.server import PAGES, create_app
from abci_app.ipfs.download import file_sha256
from abci_app.localnet import register_genesis_content
from abci_app.ml import family as family_mod
from abci_app.ml import model as gpt_model
from abci_app.ports import free_ports
from tests.unit.test_cli_staking import GENESIS_BOND, AppNode, _b64, on_app_thread, tx_hash_of
from tests.unit.test_staking import PARAMS, cons_key

FUNDS = 10_000_000


class ExplorerNode(AppNode):
    """AppNode that also keeps every block (txs, results, events, precommits) and serves it as CometBFT would."""

    def __init__(self, app_home: Path, balances: dict[str, int], staking: dict, **modules: dict):
        self.blocks: dict[int, dict] = {}
        self.modules = modules
        super().__init__(app_home, balances, staking)

    @on_app_thread
    def _start(self, app_home: Path, balances: dict[str, int], staking: dict) -> None:
        from tests.unit.conftest import Chain

        self.chain = Chain(app_home, balances, min_fee=2, staking=staking, **self.modules)
        self.app_hashes = {1: self.chain.app.store.app_hash}
        self.power = {u.pub_key.ed25519: u.power for u in self.chain.init.validators}
        self._block([])

    def _block(self, txs: list[bytes], **kwargs: Any):
        votes = kwargs.get("votes") or [(bytes.fromhex(consensus_address(k)), True) for k in self.power]
        response = super()._block(txs, votes=votes, **{k: v for k, v in kwargs.items() if k != "votes"})
        self.blocks[self.height] = {
            "txs": txs, "results": response.tx_results, "events": _events(response.events),
            "signed_previous": [a.hex().upper() for a, signed in votes if signed],
        }
        return response

    @on_app_thread
    def empty_block(self, votes: list[tuple[bytes, bool]]) -> None:
        self._block([], votes=votes)

    def _header(self, height: int) -> dict:
        return {"height": str(height), "time": f"2023-11-14T22:{13 + height // 60:02d}:{(20 + height) % 60:02d}.123456789Z",
                "proposer_address": "AB" * 20, "app_hash": self.app_hashes[height - 1].hex().upper() if height > 1 else ""}

    @on_app_thread
    def rpc_blockchain(self, params: dict) -> dict:
        low, high = int(params["minHeight"]), min(int(params["maxHeight"]), self.height)
        metas = [{"block_id": {"hash": f"{h:064X}"}, "header": self._header(h), "num_txs": str(len(self.blocks.get(h, {}).get("txs", [])))}
                 for h in range(high, low - 1, -1)]
        return {"result": {"last_height": str(self.height), "block_metas": metas}}

    @on_app_thread
    def rpc_block(self, params: dict) -> dict:
        height = int(params["height"])
        if height not in self.blocks:
            return {"error": {"code": -32603, "message": "Internal error", "data": f"height {height} is not available"}}
        return {"result": {"block_id": {"hash": f"{height:064X}"},
                           "block": {"header": self._header(height), "data": {"txs": [_b64(t) for t in self.blocks[height]["txs"]]}}}}

    @on_app_thread
    def rpc_block_results(self, params: dict) -> dict:
        block = self.blocks[int(params["height"])]
        results = [{"code": r.code, "codespace": r.codespace, "log": r.log, "events": _events(r.events)} for r in block["results"]]
        return {"result": {"height": params["height"], "txs_results": results, "finalize_block_events": block["events"]}}

    @on_app_thread
    def rpc_commit(self, params: dict) -> dict:
        """Block h's precommits travel in block h+1's last commit: only heights with a successor have one."""
        height = int(params["height"])
        if height + 1 not in self.blocks:
            return {"error": {"code": -32603, "message": "Internal error", "data": f"no commit for height {height} yet"}}
        signatures = [{"validator_address": a, "block_id_flag": 2} for a in self.blocks[height + 1]["signed_previous"]]
        return {"result": {"signed_header": {"header": self._header(height), "commit": {"height": str(height), "signatures": signatures}}}}

    @on_app_thread
    def rpc_tx_search(self, params: dict) -> dict:
        kind, key, value = _condition(params["query"])
        found = [tx for tx in self.committed.values()
                 if any(e["type"] == kind and any(a["key"] == key and a["value"] == value for a in e["attributes"]) for e in tx["tx_result"]["events"])]
        found.sort(key=lambda t: -int(t["height"]))
        return {"result": {"txs": found[: int(params.get("per_page", 30))], "total_count": str(len(found))}}

    @on_app_thread
    def rpc_block_search(self, params: dict) -> dict:
        kind, key, _ = _condition(params["query"])
        heights = sorted((h for h, b in self.blocks.items() if any(e["type"] == kind and any(a["key"] == key for a in e["attributes"]) for e in b["events"])),
                         reverse=True)
        return {"result": {"blocks": [{"block": {"header": self._header(h)}} for h in heights], "total_count": str(len(heights))}}


def _events(events: Any) -> list[dict]:
    return [{"type": e.type, "attributes": [{"key": a.key, "value": a.value, "index": a.index} for a in e.attributes]} for e in events]


def _condition(query: str) -> tuple[str, str, str | None]:
    """The one condition the explorer sends: `type.key='value'` or `type.key EXISTS`."""
    match = re.fullmatch(r'"?(\w+)\.(\w+)(?:=\'([^\']*)\'| EXISTS)"?', query)
    assert match, f"unexpected query {query}"
    return match[1], match[2], match[3]


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fam = family_mod.get_family("tiny-gpt")
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    fam.save(fam.build(gpt_model.TEST_CONFIG, seed=3), path, parent="")
    return path


def make_node(tmp_path: Path, checkpoint: Path, metrics: dict[str, int] | None) -> ExplorerNode:
    """alice and bob (funded) and the operators of two genesis validators; version 0 is `checkpoint` with `metrics`, dataset 0 a text."""
    keys = {name: crypto.PrivateKey(bytes([i + 1]) * 32) for i, name in enumerate(["alice", "bob", "val0", "val1"])}
    genesis = [{"operator": keys[f"val{i}"].address, "pubkey": cons_key(i).hex(), "moniker": f"val{i}", "self_bond": GENESIS_BOND} for i in range(2)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("In the beginning God created the heaven and the earth.\n" * 50)
    content = register_genesis_content(tmp_path, {}, checkpoint, corpus, metrics)
    app_node = ExplorerNode(tmp_path / "app", {k.address: FUNDS for k in keys.values()}, {"params": PARAMS, "validators": genesis},
                            **content.app_state)
    app_node.keys = keys
    return app_node


@pytest.fixture
def node(tmp_path: Path, tiny_ckpt: Path) -> Iterator[ExplorerNode]:
    app_node = make_node(tmp_path, tiny_ckpt, {"held_out_loss_micro": 5_432_100})
    yield app_node
    app_node.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "explorer-home"


def explorer_client(node_url: str, home: Path) -> TestClient:
    """A client of the explorer of `node_url` (port 9, discard: no IPFS here) that sees every new block at once
    (no shared /status between requests), sent as a browser on this machine would (Host 127.0.0.1)."""
    app = create_app(node_url, "http://127.0.0.1:9", home, preload_chat=False)
    app.state.reader.status_ttl = 0.0
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture
def client(node: ExplorerNode, home: Path) -> Iterator[TestClient]:
    with explorer_client(node.url, home) as test_client:
        yield test_client


def send(node: ExplorerNode, sender: str, msg: Any) -> str:
    """Sign and send through the project's one client; the tx hash once committed."""
    with ChainClient(node.url) as chain:
        return chain.send(node.keys[sender], msg).hash


def get_json(client: TestClient, path: str, status: int = 200) -> Any:
    response = client.get(path)
    assert response.status_code == status, response.text
    return response.json()


# --- pages and their JSON twins ----------------------------------------------------


def test_every_page_has_a_json_twin_that_renders(client: TestClient, node: ExplorerNode) -> None:
    """Each page in PAGES answers in HTML and under /api with the same facts (no stack traces, no empty bodies)."""
    concrete = {"{height:id}": "2", "{hash_text:str}": "", "{address_text:str}": node.keys["alice"].address, "{version_id:id}": "0"}
    tx_hash = send(node, "alice", txlib.MsgSend(recipient=node.keys["bob"].address, amount=5))
    concrete["{hash_text:str}"] = tx_hash
    for page in PAGES:
        if "{round_id:id}" in page.path or "{proposal_id:id}" in page.path:
            continue  # nothing to show yet: covered by the 404 test
        path = page.path
        for pattern, value in concrete.items():
            path = path.replace(pattern, value)
        html = client.get(path)
        assert html.status_code == 200, (path, html.text)
        assert "<html" in html.text and "Traceback" not in html.text
        twin = "/api/home" if path == "/" else "/api" + path
        assert isinstance(get_json(client, twin), dict), twin
        assert f'href="{twin}"' in html.text  # the footer links the twin
    assert 'href="/api/blocks?before=3"' in client.get("/blocks?before=3&fragment=0").text
    assert 'href="/api/chat/status"' in client.get("/chat").text


def test_home_reports_height_validators_version_and_chart(client: TestClient, node: ExplorerNode) -> None:
    data = get_json(client, "/api/home")
    with ChainClient(node.url) as chain:
        latest = chain.query_json("/registry/latest")
    assert data["height"] == node.height and data["chain_id"] == "test-chain"
    assert data["active_validators"] == 2
    assert data["latest_version"]["cid"] == latest["cid"] and data["latest_version"]["id"] == 0
    assert data["chart"] == {"versions": [0], "held_out_loss": [5.4321], "prompt_score": [None]}
    assert data["round"] is None  # training is not enabled in this genesis
    assert data["block_time_s"] == 1.0  # the node stamps one block a second
    html = client.get("/").text
    assert f'data-height="{node.height}"' in html and "data-chart=" in html and latest["cid"][:10] not in ("",)
    fragment = client.get("/?fragment=1").text
    assert "<html" not in fragment and f'data-height="{node.height}"' in fragment  # what htmx swaps in when the chain moves


def test_transfer_shows_in_its_block_tx_and_accounts(client: TestClient, node: ExplorerNode) -> None:
    alice, bob = node.keys["alice"].address, node.keys["bob"].address
    tx_hash = send(node, "alice", txlib.MsgSend(recipient=bob, amount=4321))
    height = node.height

    block = get_json(client, f"/api/blocks/{height}")
    assert [(t["hash"], t["type"], t["signer"], t["code"]) for t in block["txs"]] == [(tx_hash, "send", alice, 0)]
    tx = get_json(client, f"/api/txs/{tx_hash.lower()}")
    assert tx["height"] == height and tx["code"] == 0 and tx["message"] == {"type": "send", "recipient": bob, "amount": 4321}
    assert {"type": "transfer", "attributes": {"sender": alice, "recipient": bob, "amount": "4321"}} in tx["events"]
    page = client.get(f"/txs/{tx_hash}").text
    assert 'data-field="amount"' in page and "4321" in page

    with ChainClient(node.url) as chain:
        bob_balance = chain.query_int("/bank/balance", bob)
    account = get_json(client, f"/api/accounts/{bob}")
    assert account["balance"] == bob_balance == FUNDS + 4321
    assert [t["hash"] for t in account["recent_txs"]] == [tx_hash]  # received
    sender = get_json(client, f"/api/accounts/{alice}")
    assert sender["nonce"] == 1 and [t["hash"] for t in sender["recent_txs"]] == [tx_hash]  # sent


def test_validators_show_uptime_jailing_and_the_downtime_slash(client: TestClient, node: ExplorerNode) -> None:
    """val1 misses 3 of 5 precommits (the window): staking jails and slashes it; the page shows all of it."""
    signer0, signer1 = (bytes.fromhex(consensus_address(cons_key(i))) for i in range(2))
    for _ in range(3):
        node.empty_block([(signer0, True), (signer1, False)])
    node.empty_block([(signer0, True), (signer1, True)])
    node.empty_block([(signer0, True), (signer1, True)])
    data = get_json(client, "/api/validators")
    by_moniker = {v["moniker"]: v for v in data["validators"]}
    assert data["uptime_window"] == PARAMS["downtime_window"]
    assert by_moniker["val0"]["uptime"]["signed"] == PARAMS["downtime_window"]
    assert by_moniker["val1"]["uptime"]["signed"] < PARAMS["downtime_window"]
    assert by_moniker["val1"]["jailed_until"] > 0 and by_moniker["val1"]["power"] == 0
    slashes = data["recent_slashes"]
    assert [(s["validator"], s["reason"]) for s in slashes] == [(node.keys["val1"].address, "downtime")]
    assert int(slashes[0]["amount"]) == GENESIS_BOND * PARAMS["downtime_slash_bps"] // 10_000
    page = client.get("/validators").text
    assert "downtime" in page and f'data-operator="{node.keys["val1"].address}"' in page


def test_versions_datasets_params_and_proposals(client: TestClient, node: ExplorerNode) -> None:
    with ChainClient(node.url) as chain:
        entry = chain.query_json("/registry/version", "0")
        all_params = chain.query_json("/app/params")
    version = get_json(client, "/api/versions/0")
    assert version["version"]["cid"] == entry["cid"] and version["version"]["sha256"] == entry["sha256"]
    assert version["pull_command"] == f"gradchain model pull --version 0 --node {node.url} --ipfs http://127.0.0.1:9"
    assert [v["id"] for v in version["lineage"]["path"]] == [0]
    page = client.get("/versions/0").text
    assert entry["cid"] in page and entry["sha256"] in page and "gradchain model pull --version 0" in page
    assert get_json(client, "/api/versions")["versions"][0]["pull_command"] == version["pull_command"]
    assert [d["name"] for d in get_json(client, "/api/datasets")["datasets"]] == ["kjv-bible"]
    assert get_json(client, "/api/params")["params"] == all_params
    assert get_json(client, "/api/proposals") == {"proposals": []}
    assert get_json(client, "/api/rounds")["rounds"] == []


def test_a_version_without_metrics_shows_dashes(tmp_path: Path, tiny_ckpt: Path, home: Path) -> None:
    """A genesis version nobody evaluated (metrics {}) renders everywhere, its figures as `-`."""
    bare = make_node(tmp_path, tiny_ckpt, None)
    try:
        with explorer_client(bare.url, home) as client:
            for path in ("/", "/versions", "/versions/0"):
                page = client.get(path)
                assert page.status_code == 200 and 'id="problem"' not in page.text, (path, page.text)
            assert "held-out loss -" in client.get("/").text
            assert get_json(client, "/api/home")["chart"] == {"versions": [0], "held_out_loss": [None], "prompt_score": [None]}
    finally:
        bare.close()


@pytest.mark.parametrize("path, fragment", [
    ("/blocks/9999", "does not exist: the chain is at height"),
    ("/txs/nothex", "is not a tx hash"),
    ("/txs/" + "AB" * 32, "not found"),
    ("/accounts/gc1nope", "invalid address"),
    ("/rounds/5", "round 5 does not exist"),
    ("/versions/9", "model version 9 does not exist"),
    ("/proposals/3", "no proposal 3"),
    ("/blocks?before=x", "must be a whole number"),
])  # fmt: skip
def test_a_bad_argument_is_one_line_never_a_trace(client: TestClient, path: str, fragment: str) -> None:
    html = client.get(path)
    assert html.status_code in (400, 404), html.text
    assert fragment in html.text and "Traceback" not in html.text
    api = "/api" + path
    answer = get_json(client, api, html.status_code)
    assert fragment in answer["error"] and answer["node_down"] is False and "\n" not in answer["error"]


def test_a_node_that_is_down_shows_a_banner(home: Path) -> None:
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    with explorer_client(closed, home) as client:
        page = client.get("/validators")
        assert page.status_code == 503
        assert 'id="node-banner"' in page.text and f"node {closed} could not answer" in page.text and "Traceback" not in page.text
        assert get_json(client, "/api/home", 503)["node_down"] is True
        live = get_json(client, "/api/live")  # the poller's endpoint answers 200: the explorer itself is up
        assert live["node_down"] is True and closed in live["error"]
        assert client.get("/chat").status_code == 200  # the chat page still loads; sending says why it cannot answer


def test_search_box_finds_heights_txs_and_accounts(client: TestClient, node: ExplorerNode) -> None:
    tx_hash = send(node, "alice", txlib.MsgSend(recipient=node.keys["bob"].address, amount=1))
    for text, target in ((" 2 ", "/blocks/2"), ("0x" + tx_hash, f"/txs/{tx_hash}"), (node.keys["bob"].address, f"/accounts/{node.keys['bob'].address}"),
                         ("a/../b", "/accounts/a%2F..%2Fb")):
        response = client.get("/search", params={"q": text}, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, target)


def test_static_assets_are_vendored(client: TestClient) -> None:
    page = client.get("/").text
    for src in re.findall(r'src="([^"]+)"', page):
        assert src.startswith("/static/"), src  # no CDN
        assert client.get(src).status_code == 200


# --- chat --------------------------------------------------------------------------


def chat(client: TestClient, session: str, message: str, version: int | None = None) -> list[dict]:
    with client.stream("POST", "/api/chat", json={"session": session, "message": message, "version": version}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def cache_checkpoint(home: Path, tiny_ckpt: Path) -> Path:
    """The verified cache a pull fills: <home>/cache/<sha256>.safetensors."""
    target = home / "cache" / f"{file_sha256(tiny_ckpt)}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tiny_ckpt, target)
    return target


def test_chat_streams_from_the_verified_version_and_names_it(client: TestClient, node: ExplorerNode, home: Path, tiny_ckpt: Path) -> None:
    cache_checkpoint(home, tiny_ckpt)
    with ChainClient(node.url) as chain:
        entry = chain.query_json("/registry/latest")
    events = chat(client, "s1", "In the beginning")
    assert events[0] == {"version": 0, "cid": entry["cid"], "sha256": entry["sha256"], "family": "tiny-gpt", "templated": False}
    pieces = [e["text"] for e in events if "text" in e]
    assert len(pieces) > 1 and "".join(pieces)  # streamed in pieces, not one block
    assert events[-1] == {"done": True, "turns": 1}
    assert chat(client, "s1", "And God said")[-1] == {"done": True, "turns": 2}
    assert get_json(client, "/api/chat/status") == {"status": "ready", "version": 0, "cid": entry["cid"], "error": None}
    assert client.post("/api/chat/reset", json={"session": "s1"}).json() == {"reset": True}
    assert chat(client, "s1", "In the beginning")[-1] == {"done": True, "turns": 1}  # a new conversation
    assert chat(client, "s1", "In the beginning") != []
    assert chat(client, "other", "In the beginning", version=0)[0]["version"] == 0


def test_chat_never_loads_a_file_that_fails_its_check(client: TestClient, home: Path, tiny_ckpt: Path) -> None:
    """A cached file whose sha256 is not the registry's is dropped and fetched again; with IPFS away that fails, in one line."""
    cached = cache_checkpoint(home, tiny_ckpt)
    cached.write_bytes(cached.read_bytes()[:-1] + b"\0")
    events = chat(client, "s", "In the beginning")
    assert len(events) == 1 and "version 0 could not be loaded" in events[0]["error"] and "\n" not in events[0]["error"]
    assert not cached.exists()  # the damaged file is gone, not served
    assert get_json(client, "/api/chat/status")["status"] == "failed"


@pytest.mark.parametrize("body, fragment", [
    ({"session": "s", "message": "   "}, "the message is empty"),
    ({"session": "s", "message": "hi", "version": 7}, "model version 7 does not exist"),
])  # fmt: skip
def test_chat_refuses_bad_requests_in_one_line(client: TestClient, body: dict, fragment: str) -> None:
    with client.stream("POST", "/api/chat", json=body) as response:
        events = [json.loads(line) for line in response.iter_lines() if line]
    assert len(events) == 1 and fragment in events[0]["error"]
    assert client.post("/api/chat", content=b"not json", headers={"Content-Type": "application/json"}).status_code == 400


# --- pure helpers ------------------------------------------------------------------


def test_verification_record_counts_agreement_and_missed_seats() -> None:
    def sub(status: str, committee: list[str], verdicts: dict[str, str]) -> dict:
        return {"status": status, "committee": [[op, 10] for op in committee], "verdicts": [{"validator": v, "verdict": x} for v, x in verdicts.items()]}

    rounds = [{"submission_list": [
        sub("accepted", ["a", "b", "c"], {"a": "accept", "b": "fraud"}),  # c missed
        sub("rejected", ["a", "b"], {"a": "accept", "b": "fraud"}),
        sub("pending", ["a", "b", "c"], {}),  # undecided: not counted
        sub("not_merged", ["c"], {"c": "no_gain"}),
    ]}]  # fmt: skip
    assert views.verification_record(None, rounds) == {  # type: ignore[arg-type]
        "a": {"verdicts": 2, "agreed": 1, "missed": 0},
        "b": {"verdicts": 2, "agreed": 1, "missed": 0},
        "c": {"verdicts": 1, "agreed": 1, "missed": 1},
    }


def test_phase_progress_counts_blocks_left() -> None:
    rnd = {"id": 3, "phase": "commit", "submit_until": 10, "commit_until": 20, "submissions": 2, "base_version": 1}
    assert views.phase_progress(rnd, 15) == {"round": 3, "phase": "commit", "ends_by": 19, "blocks_left": 4, "submissions": 2, "base_version": 1}
    assert views.phase_progress({**rnd, "phase": "closed", "closed_until": 0}, 30)["blocks_left"] is None


def test_parse_time_keeps_microseconds_of_cometbft_nanoseconds() -> None:
    parsed = views.parse_time("2026-12-03T07:41:56.123456789Z")
    assert parsed is not None and parsed.microsecond == 123456 and parsed.utcoffset().total_seconds() == 0
    assert views.parse_time("") is None and views.parse_time("garbage") is None


def test_cli_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    from click.testing import CliRunner

    from abci_app.cli.main import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["explorer", "--port", str(port), "--home", str(tmp_path)])
    assert result.exit_code != 0 and result.stderr == f"error: port {port} is in use by another program; pass --port\n"


def test_tx_hash_is_cometbfts() -> None:
    raw = b"\x01\x02"
    assert views.tx_hash(raw) == tx_hash_of(raw)


# --- the localnet's explorer ---------------------------------------------------------


def localnet_on_disk(root: Path, ipfs: bool) -> Any:
    from abci_app import localnet as ln

    root.mkdir(parents=True, exist_ok=True)
    node = ln.Node(0, root / "node0", "ab" * 20, 1, 2, 3, ipfs_api_port=4 if ipfs else 0)
    net = ln.Network(root=root, chain_id="c", app=ln.APP_GRADCHAIN, app_cmd=[], nodes=[node], keyring_home=root, accounts=[])
    net.save()
    return net


def test_a_training_localnet_gets_an_explorer_port_kept_in_network_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from abci_app import localnet as ln
    from abci_app.cli import localnet as localnet_cli

    net = localnet_on_disk(tmp_path / "net", ipfs=True)
    assert ln.load(net.root).explorer_port == 0  # made before the explorer existed: no port yet
    monkeypatch.setattr(localnet_cli, "EXPLORER_PORT", free_ports(1)[0])
    assert localnet_cli._give_explorer_port(net) is True and localnet_cli._give_explorer_port(net) is False
    again = ln.load(net.root)
    assert again.explorer_port == localnet_cli.EXPLORER_PORT and again.explorer_url == f"http://127.0.0.1:{localnet_cli.EXPLORER_PORT}"
    assert f"explorer: {again.explorer_url}" in localnet_cli._endpoints(again).splitlines()[1]


def test_the_explorer_port_moves_when_another_program_holds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from abci_app.cli import localnet as localnet_cli

    net = localnet_on_disk(tmp_path / "net", ipfs=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(localnet_cli, "EXPLORER_PORT", taken.getsockname()[1])
        localnet_cli._give_explorer_port(net)
        assert net.explorer_port not in (0, localnet_cli.EXPLORER_PORT)


def test_a_localnet_without_ipfs_gets_no_explorer(tmp_path: Path) -> None:
    from abci_app.cli import localnet as localnet_cli

    net = localnet_on_disk(tmp_path / "net", ipfs=False)
    assert localnet_cli._give_explorer_port(net) is False and net.explorer_port == 0
    net.start_explorer()  # nothing to start: no port
    assert net.pid(0, "explorer") is None and "explorer" not in localnet_cli._endpoints(net)
