"""`gradchain node init/join/status/systemd/start` and the app's metrics: real `cometbft init` homes,
a stand-in for a running node's RPC, and flags checked before anything starts."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from abci_app import supervisor
from abci_app.cli.main import cli
from abci_app.localnet.config import COMETBFT
from abci_app.node import join as joining
from abci_app.node import metrics
from abci_app.node.home import Layout, load_settings
from abci_app.pb.tendermint.abci import types_pb2 as abci



@pytest.fixture(autouse=True)
def require_cometbft() -> None:
    """`node init` runs `cometbft init`: fail, never skip, when the binary is missing (`make test` builds it first)."""
    if not COMETBFT.exists():
        pytest.fail(f"CometBFT binary missing at {COMETBFT}: run `make install-go`", pytrace=False)


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--home", str(home)], env={"GRADCHAIN_KEYRING_BACKEND": "test"})


def one_error_line(result: Result, fragment: str) -> None:
    assert result.exit_code != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr, result.stderr


def init(home: Path, *extra: str) -> dict:
    result = run(home, "node", "init", "--moniker", "alice", "--chain-id", "net-1", "--listen", "127.0.0.3:36656",
                 "--external", "203.0.113.7:36656", "--rpc", "127.0.0.3:36657", "--app", "127.0.0.3:36658",
                 "--prometheus", "127.0.0.3:36660", "--metrics", "127.0.0.3:36661", "--no-ipfs", "-o", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def config(home: Path) -> dict:
    return tomllib.loads(Layout(home).config_toml.read_text())


def test_init_writes_keys_addresses_and_prometheus(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    info = init(home)
    assert info["moniker"] == "alice" and info["chain_id"] == "net-1" and len(info["node_id"]) == 40
    for name in ("priv_validator_key.json", "node_key.json", "genesis.json", "config.toml"):
        assert (home / "config" / name).exists()
    toml = config(home)
    assert toml["moniker"] == "alice"
    assert toml["proxy_app"] == "tcp://127.0.0.3:36658"
    assert toml["rpc"]["laddr"] == "tcp://127.0.0.3:36657"
    assert toml["p2p"]["laddr"] == "tcp://127.0.0.3:36656"
    assert toml["p2p"]["external_address"] == "203.0.113.7:36656"
    assert toml["instrumentation"]["prometheus"] is True
    assert toml["instrumentation"]["prometheus_listen_addr"] == "127.0.0.3:36660"
    assert toml["p2p"]["addr_book_strict"] is True  # only --private-network loosens it
    genesis = json.loads(Layout(home).genesis.read_text())
    assert genesis["chain_id"] == "net-1" and genesis["app_state"] == {}
    settings = load_settings(home)
    assert settings.rpc_url == "http://127.0.0.3:36657" and settings.metrics == "127.0.0.3:36661"
    assert Layout(home).app_home.is_dir()


def test_init_takes_an_app_state_and_private_network(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"staking": {"params": {"power_unit": 10_000}}}))
    result = run(tmp_path / "h", "node", "init", "--moniker", "m", "--no-ipfs", "--app-state", str(state), "--private-network")
    assert result.exit_code == 0, result.output
    assert json.loads(Layout(tmp_path / "h").genesis.read_text())["app_state"] == {"staking": {"params": {"power_unit": 10_000}}}
    assert config(tmp_path / "h")["p2p"]["addr_book_strict"] is False


def test_init_refuses_an_existing_node_and_bad_addresses(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    init(home)
    key = (home / "config" / "priv_validator_key.json").read_text()
    one_error_line(run(home, "node", "init", "--moniker", "again", "--no-ipfs"), "already holds a node")
    assert (home / "config" / "priv_validator_key.json").read_text() == key  # keys are never overwritten
    one_error_line(run(tmp_path / "b", "node", "init", "--moniker", "b", "--no-ipfs", "--listen", "nowhere"), "--listen 'nowhere' is not HOST:PORT")
    assert not (tmp_path / "b").exists()


class FakeRpc:
    """A running node's RPC, as much of it as `node join` reads."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url

    GENESIS = {"genesis_time": "2026-01-01T00:00:00Z", "chain_id": "net-1", "initial_height": "1", "app_hash": "",
               "validators": [], "app_state": {"bank": {"balances": []}}}


    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def call(self, method: str, **params):
        if method == "genesis":
            return {"genesis": self.GENESIS}
        if method == "net_info":
            return {"n_peers": "1", "peers": [{"node_info": {"id": "b" * 40, "listen_addr": "tcp://0.0.0.0:26656"}, "remote_ip": "198.51.100.9"}]}
        raise AssertionError(method)

    def status(self) -> dict:
        return {"node_info": {"id": "a" * 40, "listen_addr": "tcp://0.0.0.0:26656"}, "sync_info": {"latest_block_height": "120"}}

    def latest_height(self) -> int:
        return 120

    def commit(self, height: int) -> dict:
        return {"signed_header": {"commit": {"block_id": {"hash": f"{height:064X}"}}}}


@pytest.fixture
def fake_rpc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(joining, "RpcClient", FakeRpc)


def test_join_writes_genesis_peers_and_state_sync(tmp_path: Path, fake_rpc: None) -> None:
    home = tmp_path / "carol"
    init(home)
    digest = joining.genesis_digest(FakeRpc.GENESIS)
    result = run(home, "node", "join", "--peer", "http://203.0.113.7:26657", "--genesis-sha256", digest, "-o", "json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["chain_id"] == "net-1" and out["genesis_sha256"] == digest
    assert json.loads(Layout(home).genesis.read_text()) == FakeRpc.GENESIS
    toml = config(home)
    # the peer listens on a wildcard: it is dialled at its URL's host; its own peer at the IP it connects from
    assert toml["p2p"]["persistent_peers"] == f"{'a' * 40}@203.0.113.7:26656,{'b' * 40}@198.51.100.9:26656"
    sync = toml["statesync"]
    assert sync["enable"] is True and sync["rpc_servers"] == "http://203.0.113.7:26657,http://203.0.113.7:26657"
    assert sync["trust_height"] == 120 and sync["trust_hash"] == f"{120:064X}" and sync["trust_period"] == "168h0m0s"
    assert "check both with another operator" in result.stderr  # the peer's word only
    assert load_settings(home).chain_id == "net-1"


def test_join_with_a_checked_trust_point_and_no_warning(tmp_path: Path, fake_rpc: None) -> None:
    home = tmp_path / "carol"
    init(home)
    result = run(home, "node", "join", "--peer", "http://203.0.113.7:26657", "--trust-height", "100", "--trust-hash", "AB" * 32,
                 "--genesis-sha256", joining.genesis_digest(FakeRpc.GENESIS))
    assert result.exit_code == 0, result.output
    assert config(home)["statesync"]["trust_hash"] == "AB" * 32 and config(home)["statesync"]["trust_height"] == 100
    assert "warning" not in result.stderr


def test_join_refuses_a_genesis_with_another_digest(tmp_path: Path, fake_rpc: None) -> None:
    home = tmp_path / "carol"
    init(home)
    before = Layout(home).genesis.read_text()
    one_error_line(run(home, "node", "join", "--peer", "http://203.0.113.7:26657", "--genesis-sha256", "00" * 32), "wrong network")
    assert Layout(home).genesis.read_text() == before
    one_error_line(run(home, "node", "join", "--peer", "http://x:1", "--trust-hash", "AB" * 32), "--trust-hash needs --trust-height")


def test_join_needs_a_node(tmp_path: Path) -> None:
    one_error_line(run(tmp_path / "none", "node", "join", "--peer", "http://127.0.0.1:9"), "no node in")


def test_status_of_a_stopped_node(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    init(home)
    result = run(home, "node", "status", "-o", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["supervisor_pid"] is None and info["height"] is None and info["children"] == []


def test_systemd_unit_runs_node_start_for_the_home(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    init(home)
    result = run(home, "node", "systemd", "--user", "gradchain", "--validate", "--key", "operator")
    assert result.exit_code == 0, result.output
    unit = result.stdout
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert f"node start --home {home.resolve()} --validate --key operator" in exec_start
    assert "User=gradchain" in unit and "Restart=on-failure" in unit and "WantedBy=multi-user.target" in unit
    target = tmp_path / "gradchain.service"
    assert run(home, "node", "systemd", "--write", str(target)).exit_code == 0
    assert target.read_text().startswith("[Unit]")


def test_start_checks_its_flags_before_starting_anything(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    init(home)
    one_error_line(run(home, "node", "start", "--validate"), "--validate needs --key")
    one_error_line(run(home, "node", "start", "--validate", "--key", "k", "--train", "k"), "different workers")
    one_error_line(run(home, "node", "start", "--train", "k", "--no-ipfs"), "drop --no-ipfs")
    one_error_line(run(tmp_path / "none", "node", "start"), "no node in")


def sample(name: str, labels: dict | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_metrics_count_blocks_txs_rounds_and_verdicts() -> None:
    counted = [("gradchain_blocks_total", {}), ("gradchain_txs_total", {"code": "5", "codespace": "bank"}), ("gradchain_rounds_total", {}),
               ("gradchain_submissions_total", {"verdict": "accepted"}), ("gradchain_verdicts_total", {"verdict": "fraud"})]
    before = [sample(name, labels) for name, labels in counted]

    def event(kind: str, **attributes: str) -> abci.Event:
        return abci.Event(type=kind, attributes=[{"key": k, "value": v} for k, v in attributes.items()])

    response = abci.ResponseFinalizeBlock(
        tx_results=[abci.ExecTxResult(code=5, codespace="bank"), abci.ExecTxResult(code=0, events=[event("verdict_revealed", verdict="fraud")]),
                    abci.ExecTxResult(code=5, codespace="bank")],
        events=[event("round_opened", round="3"), event("delta_accepted", round="2")],
    )
    ahead = sample("gradchain_blocks_executed_ahead_total")
    metrics.record_block(41, response)
    assert sample("gradchain_height") == 41
    assert [sample(name, labels) for name, labels in counted] == [b + n for b, n in zip(before, [1, 2, 1, 1, 1])]
    assert sample("gradchain_blocks_executed_ahead_total") == ahead
    metrics.record_block(42, abci.ResponseFinalizeBlock(), executed_ahead=True)
    assert sample("gradchain_blocks_executed_ahead_total") == ahead + 1
    metrics.record_block(43, object())  # not a response: logged, never raised into FinalizeBlock


def test_start_runs_the_app_then_cometbft_with_the_settings_flags(tmp_path: Path) -> None:
    from abci_app.node import run as noderun

    home = tmp_path / "alice"
    init(home, "--app-arg=--snapshot-interval", "--app-arg=10")
    specs = noderun.child_specs(home.resolve(), load_settings(home), ipfs=False)
    assert [(s.name, s.after) for s in specs] == [("app", ()), ("cometbft", ("app",))]
    app = specs[0].argv
    assert app[app.index("--addr") + 1] == "tcp://127.0.0.3:36658" and app[app.index("--metrics") + 1] == "127.0.0.3:36661"
    assert app[app.index("--snapshot-interval") + 1] == "10"  # kept in node.json, passed through
    assert specs[1].argv[-3:] == ["start", "--home", str(home.resolve())]
    assert all(s.log_path.parent == Layout(home.resolve()).logs for s in specs)


def test_start_refuses_a_home_whose_supervisor_runs(tmp_path: Path) -> None:
    import subprocess

    home = tmp_path / "alice"
    init(home)
    # a process whose argv reads like `... node start ...`, named by the home's supervisor pid file
    other = subprocess.Popen(["sh", "-c", "sleep 30", "node", "start"])
    try:
        # until the child has exec'd, /proc shows the forked Python's argv (seen once on a loaded CI machine)
        deadline = time.monotonic() + 30
        while "start" not in (supervisor.proc_argv(other.pid) or []):
            assert time.monotonic() < deadline, "the stand-in supervisor did not start"
            time.sleep(0.05)
        (Layout(home.resolve()).logs / "supervisor.pid").write_text(f"{other.pid}\n")
        one_error_line(run(home, "node", "start", "--no-ipfs"), f"already runs (supervisor pid {other.pid})")
        assert json.loads(run(home, "node", "status", "-o", "json").stdout)["supervisor_pid"] == other.pid
    finally:
        other.kill()
        other.wait()
    assert json.loads(run(home, "node", "status", "-o", "json").stdout)["supervisor_pid"] is None  # a dead pid does not count


def test_metrics_are_served_over_http() -> None:
    import httpx

    from abci_app.ports import free_ports

    port = free_ports(1)[0]
    server = metrics.serve(f"127.0.0.1:{port}")
    try:
        metrics.record_block(7, abci.ResponseFinalizeBlock())
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    finally:
        server.shutdown()
        server.server_close()
    assert "gradchain_height 7.0" in text and "gradchain_blocks_total" in text and "process_start_time_seconds" in text


PEER = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp@/ip4/203.0.113.7/tcp/4001"


def init_with_kubo(home: Path) -> None:
    result = run(home, "node", "init", "--moniker", "carol", "--chain-id", "net-1", "--ipfs-api", "127.0.0.3:35001",
                 "--ipfs-gateway", "127.0.0.3:35080", "--ipfs-swarm", "127.0.0.3:34001")
    assert result.exit_code == 0, result.output


def test_join_puts_kubo_in_the_networks_swarm(tmp_path: Path, fake_rpc: None) -> None:
    from abci_app.ipfs import node as kubo

    home = tmp_path / "carol"
    init_with_kubo(home)
    key = tmp_path / "swarm.key"
    key.write_bytes(kubo.generate_swarm_key())
    peer = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp@/ip4/203.0.113.7/tcp/4001"
    result = run(home, "node", "join", "--peer", "http://203.0.113.7:26657", "--genesis-sha256", joining.genesis_digest(FakeRpc.GENESIS),
                 "--swarm-key", str(key), "--ipfs-peer", peer, "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ipfs_peers"] == [peer]
    repo = Layout(home).ipfs_repo
    assert (repo / "swarm.key").read_bytes() == key.read_bytes()
    assert json.loads((repo / "config").read_text())["Peering"]["Peers"] == [{"ID": peer.split("@")[0], "Addrs": ["/ip4/203.0.113.7/tcp/4001"]}]


def test_join_refuses_ipfs_flags_it_cannot_apply_before_writing_anything(tmp_path: Path, fake_rpc: None) -> None:
    home = tmp_path / "carol"
    init(home)  # --no-ipfs
    before = Layout(home).genesis.read_text()
    one_error_line(run(home, "node", "join", "--peer", "http://203.0.113.7:26657", "--ipfs-peer", PEER), "has no Kubo repo")
    for bad in ("nonsense", "x@/garbage", "12D3KooWfoo@/ip4/1.2.3.4/tcp/99999", "a b@/ip4/1.2.3.4/tcp/4001", PEER.replace("4001", "99999")):
        one_error_line(run(home, "node", "join", "--peer", "http://203.0.113.7:26657", "--ipfs-peer", bad), "is not PEERID@/ip4|ip6|dns/HOST/tcp/PORT")
    bad_key = tmp_path / "bad.key"
    for text in ("not a key", "/key/swarm/psk/1.0.0/\n/base16/\nabc\n", "/key/swarm/psk/1.0.0/\n/base64/\n" + "a" * 64 + "\n"):
        bad_key.write_text(text)
        one_error_line(run(home, "node", "join", "--peer", "http://203.0.113.7:26657", "--swarm-key", str(bad_key)), "not a Kubo pre-shared key")
    assert Layout(home).genesis.read_text() == before


def test_join_refuses_ipfs_peers_with_the_swarm_key_init_made(tmp_path: Path, fake_rpc: None) -> None:
    """A swarm key `node init` generated makes a swarm of one: joining a network's Kubo nodes with it cannot work."""
    home = tmp_path / "carol"
    init_with_kubo(home)
    before = Layout(home).genesis.read_text()
    one_error_line(run(home, "node", "join", "--peer", "http://203.0.113.7:26657", "--ipfs-peer", PEER), "pass the network's with --swarm-key")
    assert Layout(home).genesis.read_text() == before
    result = run(home, "node", "join", "--peer", "http://203.0.113.7:26657", "-o", "json")  # no IPFS flags: joins, and says why Kubo is alone
    assert result.exit_code == 0, result.output
    assert "made by `node init` for a new network" in result.stderr


def test_the_swarm_key_is_installed_owner_only_and_its_digest_shown(tmp_path: Path, fake_rpc: None) -> None:
    import hashlib
    import stat

    from abci_app.ipfs import node as kubo

    home = tmp_path / "carol"
    init_with_kubo(home)
    key = tmp_path / "swarm.key"
    key.write_bytes(kubo.generate_swarm_key())
    result = run(home, "node", "join", "--peer", "http://203.0.113.7:26657", "--swarm-key", str(key), "--ipfs-peer", PEER, "-o", "json")
    assert result.exit_code == 0, result.output
    installed = Layout(home).ipfs_repo / "swarm.key"
    assert stat.S_IMODE(installed.stat().st_mode) == 0o600 and installed.read_bytes() == key.read_bytes()
    assert json.loads(result.stdout)["swarm_key_sha256"] == hashlib.sha256(key.read_bytes()).hexdigest()


def test_start_with_kubo_runs_the_pin_sync_after_cometbft_and_kubo(tmp_path: Path) -> None:
    from abci_app.node import run as noderun

    home = tmp_path / "carol"
    init_with_kubo(home)
    specs = noderun.child_specs(home.resolve(), load_settings(home))
    assert [(s.name, s.after) for s in specs] == [("ipfs", ()), ("app", ()), ("cometbft", ("app",)), ("pins", ("cometbft", "ipfs"))]
    assert specs[-1].argv[-4:] == ["node", "pin-sync", "--home", str(home.resolve())]
