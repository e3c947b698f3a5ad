"""What a public explorer must withstand (review 16): a flood of chat requests, a browser that leaves, a lying
node (malformed answers, a sha256 that names a path, a registry that cycles, a round with 10**9 steps), odd
HTTP input, cross-site and DNS-rebinding requests; and the caches that keep per-request node work bounded.

The node here is a loopback HTTP server answering canned JSON-RPC (FakeNode); the chat's model is a stand-in
(no torch), since what is checked is the admission, locking and back-off around it. Bounded: every wait has a
deadline, and nothing asserts how long anything took.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from abci_app.cli.model import lineage
from abci_app.client import ChainError
from abci_app.explorer import chat as chat_mod
from abci_app.explorer import views
from abci_app.explorer.server import MAX_BODY_BYTES, create_app
from abci_app.models import Cache, ModelError
from abci_app.ports import free_ports
from abci_app.rpc import RpcClient, RpcError
from tests.unit.lightchain import json_handler

SHA = "ab" * 32


class FakeNode:
    """A loopback 'CometBFT' whose answers the test sets: `answers[method]` is the whole JSON body, or a callable
    of the query params; `history` is served as /registry/history pages of PAGE entries. Counts abci queries."""

    PAGE = 2

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.history: list[dict] = []
        self.queries: list[tuple[str, str]] = []
        self.height = 5
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), json_handler(self.answer))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, method: str, params: dict) -> bytes:
        if method == "abci_query":
            path, data = params["path"].strip('"'), bytes.fromhex(params.get("data", "0x")[2:]).decode()
            self.queries.append((path, data))
            return json.dumps({"result": {"response": {"code": 0, "value": base64.b64encode(self.page(path, data)).decode()}}}).encode()
        if method == "status" and method not in self.answers:
            return json.dumps({"result": {"node_info": {"network": "test"}, "sync_info": {"latest_block_height": str(self.height)}}}).encode()
        found = self.answers.get(method, {"error": {"code": -1, "message": f"no {method} here"}})
        return (found(params) if callable(found) else json.dumps(found)).encode() if not isinstance(found, bytes) else found

    def page(self, path: str, data: str) -> bytes:
        if path != "/registry/history":
            return b""
        start = int(data.lstrip("/")) + 1 if data else 0
        entries = self.history[start:start + self.PAGE]
        more = start + self.PAGE < len(self.history)
        return json.dumps({"entries": entries, "next": str(entries[-1]["id"]) if more else None}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def node() -> Iterator[FakeNode]:
    fake = FakeNode()
    yield fake
    fake.close()


@pytest.fixture
def client(node: FakeNode, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(node.url, "http://127.0.0.1:9", tmp_path, preload_chat=False)
    app.state.reader.status_ttl = 0.0
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as test_client:
        yield test_client


def version(i: int, parent: int | None = None) -> dict:
    return {"id": i, "cid": f"bafkrei{i}", "sha256": SHA, "family": "tiny-gpt", "config_hash": "c" * 64,
            "parent": parent, "metrics": {}, "contributions": [], "dataset_ids": []}


# --- a lying or broken node --------------------------------------------------------


@pytest.mark.parametrize("status", [
    {"result": {"node_info": {"network": "x"}}},  # no sync_info
    {"result": {"node_info": {"network": "x"}, "sync_info": {"latest_block_height": "abc"}}},
    {"result": ["not", "a", "dict"]},
    ["not", "json-rpc"],
])  # fmt: skip
def test_malformed_node_answers_show_the_node_banner(client: TestClient, node: FakeNode, status: Any) -> None:
    node.answers["status"] = status
    page = client.get("/blocks")
    assert page.status_code in (502, 503) and 'id="node-banner"' in page.text and "Error" not in page.text.split('id="node-banner"')[1][:300]
    answer = client.get("/api/home")
    assert answer.status_code in (502, 503) and answer.json()["node_down"] is True and "KeyError" not in answer.text
    assert client.get("/api/live").json()["node_down"] is True


def test_a_round_with_more_steps_than_the_chain_allows_is_refused_before_any_work() -> None:
    class OneRound:
        def round(self, round_id: int | None) -> dict:
            return {"id": 0, "submission_list": [{"id": 0, "steps": 10**9}]}

    with pytest.raises(ValueError, match="at most 256"):
        views.training_round(OneRound(), 0)  # type: ignore[arg-type]


def test_a_cycling_registry_ends_the_lineage_walk() -> None:
    entries = {0: version(0, parent=1), 1: version(1, parent=0)}
    with pytest.raises(ChainError, match="cycles"):
        lineage(None, 0, entry_of=lambda v: entries[v], dataset_of=lambda d: {})  # type: ignore[arg-type]


@pytest.mark.parametrize("sha256", ["../../victim/precious", "/tmp/x", "AB" * 32, "ab" * 31, 7])
def test_a_sha256_that_is_not_hex_never_becomes_a_path(tmp_path: Path, sha256: Any) -> None:
    victim = tmp_path / "victim" / "precious.safetensors"
    victim.parent.mkdir()
    victim.write_bytes(b"someone's own checkpoint")
    cache = Cache(tmp_path / "home")
    cache.root.mkdir(parents=True)

    class NoIpfs:
        def cat_stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
            raise AssertionError("nothing may be fetched for a bad sha256")

    with pytest.raises(ModelError, match="64 lowercase hex"):
        cache.pull_model(version(0) | {"sha256": sha256}, NoIpfs(), timeout=1)  # type: ignore[arg-type]
    assert victim.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["home", "victim"]
    assert list(cache.root.iterdir()) == []


def test_the_registry_entry_a_node_sends_is_checked(node: FakeNode) -> None:
    from abci_app.client import ChainClient
    from abci_app.models import version_entry

    node.history = [version(0) | {"sha256": "../x"}]
    node.page = lambda path, data: json.dumps(node.history[0]).encode()  # type: ignore[method-assign]
    with ChainClient(node.url) as chain, pytest.raises(ModelError, match="64 lowercase hex"):
        version_entry(chain, 0)
    node.page = lambda path, data: json.dumps(version(3)).encode()  # type: ignore[method-assign]
    with ChainClient(node.url) as chain, pytest.raises(ModelError, match="answered with version 3"):
        version_entry(chain, 0)


def test_the_rpc_client_refuses_an_answer_past_its_size_cap(node: FakeNode) -> None:
    node.answers["status"] = {"result": {"junk": "x" * 10_000}}
    with RpcClient(node.url, max_bytes=1_000) as rpc, pytest.raises(RpcError, match="more than 1000 bytes"):
        rpc.status()
    with RpcClient(node.url) as rpc:  # the default keeps the old behaviour
        assert len(rpc.status()["junk"]) == 10_000


def test_the_rpc_client_gives_up_on_a_node_that_dribbles_past_its_deadline() -> None:
    class Dribble(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                for _ in range(100):  # a byte each 0.1 s: every read is quick, the whole answer never ends
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass  # the client gave up

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Dribble)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with RpcClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=5, deadline=0.5) as rpc, \
                pytest.raises(RpcError, match="took more than"):
            rpc.status()
    finally:
        server.shutdown()
        server.server_close()


# --- bounded node work ---------------------------------------------------------------


def test_registry_history_is_read_once_per_height_and_then_only_its_new_pages(node: FakeNode) -> None:
    node.history = [version(i, i - 1 if i else None) for i in range(5)]
    reader = views.Reader(node.url, "http://127.0.0.1:9")
    reader.status_ttl = 0.0
    try:
        assert [v["id"] for v in reader.history()] == [0, 1, 2, 3, 4]
        walked = len(node.queries)
        assert walked == 3  # pages of 2
        reader.history()
        assert len(node.queries) == walked  # same height: nothing asked
        node.history.append(version(5, 4))
        node.height += 1
        assert [v["id"] for v in reader.history()][-1] == 5
        assert node.queries[walked:] == [("/registry/history", "/4")]  # only what follows the last known id
        doc = views.version(reader, 5)
        assert [v["id"] for v in doc["lineage"]["path"]] == [5, 4, 3, 2, 1, 0]
        assert len(node.queries) == walked + 1  # the ancestors came from the cache
    finally:
        reader.close()


def test_a_page_is_computed_once_per_height(node: FakeNode) -> None:
    reader = views.Reader(node.url, "http://127.0.0.1:9")
    reader.status_ttl = 0.0
    computed: list[int] = []
    try:
        for _ in range(3):
            reader.page(("/x", ()), lambda: computed.append(1) or {"n": len(computed)})
        node.height += 1
        assert reader.page(("/x", ()), lambda: computed.append(1) or {"n": len(computed)}) == {"n": 2}
        assert len(computed) == 2
    finally:
        reader.close()


# --- odd HTTP input ------------------------------------------------------------------


def test_odd_numbers_give_one_line_answers(client: TestClient) -> None:
    for q in ("²", "9" * 5000):
        found = client.get("/search", params={"q": q}, follow_redirects=False)
        assert found.status_code == 303 and found.headers["location"].startswith("/accounts/")
    assert client.get("/blocks/" + "9" * 5000).status_code == 404
    assert client.get("/api/blocks", params={"before": "²"}).status_code == 400
    for raw in ('{"message": "hi", "version": Infinity}', '{"message": "hi", "version": 1e400}', '{"message": "hi", "version": "²"}',
                '{"message": "hi", "version": true}', '{"message": 5}'):
        answer = client.post("/api/chat", content=raw, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, raw
        assert answer.text.count("\n") == 1 and "error" in json.loads(answer.text)


def test_chat_takes_json_only_and_a_small_body(client: TestClient) -> None:
    form = client.post("/api/chat", content='{"message":"hi","pad":"="}', headers={"Content-Type": "text/plain"})
    assert form.status_code == 415 and "application/json" in form.json()["error"]
    big = client.post("/api/chat", content=b'{"message": "' + b"x" * MAX_BODY_BYTES + b'"}', headers={"Content-Type": "application/json"})
    assert big.status_code == 413


def test_unknown_hosts_are_refused_and_answers_carry_security_headers(node: FakeNode, tmp_path: Path) -> None:
    app = create_app(node.url, "http://127.0.0.1:9", tmp_path, preload_chat=False, allowed_hosts=("explorer.example",))
    with TestClient(app, base_url="http://attacker.example") as rebound:
        assert rebound.get("/api/chat/status").status_code == 400
    for host in ("127.0.0.1", "localhost", "explorer.example"):
        with TestClient(app, base_url=f"http://{host}") as ok:
            answer = ok.get("/api/chat/status")
            assert answer.status_code == 200, host
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            assert answer.headers["x-content-type-options"] == "nosniff"


def test_internal_node_urls_stay_out_of_pages(tmp_path: Path) -> None:
    internal = f"http://user:secret@0.0.0.0:{free_ports(1)[0]}"  # not a loopback name, yet refused at once here
    hidden = create_app(internal, "http://10.9.8.7:5001", tmp_path, preload_chat=False)
    with TestClient(hidden, base_url="http://127.0.0.1") as client:
        banner = client.get("/validators")
        assert banner.status_code == 503 and "could not answer" in banner.text
        for text in (banner.text, client.get("/chat").text, client.get("/api/live").text):
            assert "0.0.0.0" not in text and "10.9.8.7" not in text and "secret" not in text
    shown = create_app("http://user:secret@127.0.0.1:9", "http://127.0.0.1:9", tmp_path, preload_chat=False,
                       public_node="https://rpc.example.org")
    with TestClient(shown, base_url="http://127.0.0.1") as client:
        page = client.get("/chat").text
        assert "https://rpc.example.org" in page and "secret" not in page


def test_chat_sessions_are_issued_by_the_server(client: TestClient) -> None:
    page = client.get("/chat")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("gc_chat=") and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert 'data-session' not in page.text
    assert "set-cookie" not in client.get("/chat").headers  # kept: the browser sends it back


# --- chat admission, back-off and release --------------------------------------------


class FakeConversation:
    """Stands in for cli.model.Conversation: endless tokens, so only a cancel or the time cap ends an answer."""

    templated = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.turn = 0

    def reply(self, text: str) -> Iterator[str]:
        self.turn += 1
        i = 0
        while True:
            i += 1
            time.sleep(0.01)
            yield f"t{i} "


@pytest.fixture
def fake_chat(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A ChatHost whose registry is {0, 1} and whose load is counted (failing while `fail` is set)."""
    import abci_app.ml.generate  # noqa: F401  (imported lazily by ChatHost._conversation)

    calls = {"loads": [], "fail": None}
    monkeypatch.setattr(chat_mod, "Conversation", FakeConversation)
    monkeypatch.setattr(chat_mod, "version_entry", lambda chain, v: version(1 if v is None else v))

    def load(self: chat_mod.ChatHost, entry: dict) -> chat_mod.Loaded:
        calls["loads"].append(entry["id"])
        if calls["fail"]:
            raise calls["fail"]
        return chat_mod.Loaded(entry, None, None)

    monkeypatch.setattr(chat_mod.ChatHost, "_pull_and_load", load)
    return calls


def test_a_flood_of_chat_requests_is_refused_at_once(client: TestClient, fake_chat: dict) -> None:
    host: chat_mod.ChatHost = client.app.state.chat  # type: ignore[attr-defined]
    taken = [host.admit() for _ in range(chat_mod.MAX_ACTIVE)]
    assert all(taken) and not host.admit()
    try:
        refused = client.post("/api/chat", json={"message": "hi"})
        assert refused.status_code == 429 and refused.headers["content-type"].startswith("application/x-ndjson")
        event = json.loads(refused.text)
        assert event["busy"] is True and "busy" in event["error"] and refused.text.endswith("\n")
        assert client.get("/api/chat/status").status_code == 200  # pages still answer
    finally:
        for _ in taken:
            host.release()
    assert host.admit()
    host.release()


def test_a_failed_load_is_not_retried_on_every_message_and_hides_local_paths(tmp_path: Path, fake_chat: dict) -> None:
    host = chat_mod.ChatHost("http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path)
    fake_chat["fail"] = PermissionError(13, "Permission denied", "/home/someone/.gradchain/cache/x.safetensors")
    first = list(host.reply("s", "hi", None))
    second = list(host.reply("s", "hi", None))
    assert fake_chat["loads"] == [1]
    assert "could not be loaded" in first[0]["error"] and "tries again after" in second[0]["error"]
    assert all("/home/someone" not in e["error"] for e in first + second) and "/home/someone" not in str(host.state)


def test_a_visitor_may_switch_the_loaded_version_only_now_and_then(tmp_path: Path, fake_chat: dict) -> None:
    host = chat_mod.ChatHost("http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path)
    assert list(host.reply("s", "hi", 0, seconds=0))[0]["version"] == 0
    busy = list(host.reply("s", "hi", 1))
    assert busy == [busy[0]] and busy[0]["busy"] is True and "busy" in busy[0]["error"]
    assert fake_chat["loads"] == [0]
    assert list(host.reply("s", "hi", None, seconds=0))[0]["version"] == 1  # the latest is the chain's choice: loaded
    assert list(host.reply("s", "hi", 0))[0]["busy"] is True
    assert fake_chat["loads"] == [0, 1]


def test_an_answer_stops_at_its_time_cap_and_when_its_browser_leaves(tmp_path: Path, fake_chat: dict) -> None:
    host = chat_mod.ChatHost("http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path)
    events = list(host.reply("s", "hi", None, seconds=0))
    assert events[1] == {"text": "t1 "} and events[2]["cut"] is True and events[-1]["done"] is True
    cancelled = threading.Event()
    answer = host.reply("s", "hi", None, cancelled)
    assert "version" in next(answer) and "text" in next(answer)
    assert host._generate_lock.locked()
    cancelled.set()
    assert list(answer) == []  # stopped at the next token, the model freed
    assert not host._generate_lock.locked()


def test_a_browser_that_leaves_frees_the_model_for_the_next(tmp_path: Path, fake_chat: dict) -> None:
    """Over a real server: the stream is closed mid-answer; the answer stops and the next visitor is served."""
    port = free_ports(1)[0]
    app = create_app("http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path, preload_chat=False)
    host: chat_mod.ChatHost = app.state.chat
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        with httpx.stream("POST", base + "/api/chat", json={"message": "hi"}, timeout=20) as response:
            lines = response.iter_lines()
            assert "version" in json.loads(next(lines)) and "text" in json.loads(next(lines))
        deadline = time.monotonic() + 20  # a bound, not a speed claim: the answer notices at its next token
        while (host._generate_lock.locked() or host.active) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not host._generate_lock.locked() and host.active == 0
        with httpx.stream("POST", base + "/api/chat", json={"message": "again"}, timeout=20) as response:
            assert "version" in json.loads(next(response.iter_lines()))
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_idle_conversations_are_forgotten(tmp_path: Path, fake_chat: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    host = chat_mod.ChatHost("http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path)
    list(host.reply("a", "hi", None, seconds=0))
    list(host.reply("b", "hi", None, seconds=0))
    assert list(host._conversations) == ["a", "b"]
    monkeypatch.setattr(chat_mod, "CONVERSATION_IDLE_S", 0.0)  # anything not used by this very answer is idle
    time.sleep(0.01)
    list(host.reply("c", "hi", None, seconds=0))
    assert list(host._conversations) == ["c"]
