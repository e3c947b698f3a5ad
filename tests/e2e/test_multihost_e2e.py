"""A network of "hosts" made the operator's way, not the localnet's (issue 15's test as a multi-host network).

Loopback addresses 127.0.0.2 ... 127.0.0.6 stand in for five machines; each
node binds only its own address and keeps its own home, as on separate hosts:

1. hosts 2-5 `node init`, make keys, and run the genesis ceremony: the
   coordinator funds them (`genesis add-account`), each signs a gentx, each
   collects the same gentxs and gets the same genesis digest;
2. each runs `node start` (the supervisor in the foreground); host 2 runs
   Kubo too, and adds to IPFS the dataset the genesis admitted;
3. host 6, whose Kubo got host 2's swarm key at `node init --swarm-key`, runs
   `node join --peer --gentx-dir` (its Kubo peers with the founders' named in
   the published gentxs) and `node start` after the chain passed several
   snapshot intervals, serves the right balance under the right app hash (with
   state sync: its first stored block is above 1, it did not replay), bonds in
   with `tx staking create-validator` and signs blocks; its pin sync fetches
   the dataset from host 2's Kubo and pins it, verified by sha256;
4. its app is SIGKILLed: its supervisor restarts the app, then CometBFT, and it
   carries on with the others' app hash;
5. one original validator stops: the chain goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from abci_app import supervisor
from abci_app.ipfs.cid import cid_of_bytes
from abci_app.ipfs.client import IpfsClient
from abci_app.node.commands import PIN_SYNC
from abci_app.node.home import Layout
from abci_app.ports import free_ports
from abci_app.rpc import RpcClient
from tests.e2e.conftest import require_cometbft
from tests.e2e.helpers import balance, cli_argv, cli_env, json_out, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CHAIN_ID = "gradchain-multihost-e2e"
HOSTS = [f"127.0.0.{i}" for i in range(2, 7)]  # four founders, then the joiner
FOUNDERS = 4
JOINER = 4
KUBO_HOSTS = (0, JOINER)  # a founder serves a registered file, the joiner must end up pinning it; the others run no Kubo
PORTS = 8  # per host: p2p, rpc, app, prometheus, metrics, Kubo api, gateway, swarm
FUNDS = 100_000_000
BOND = 10_000_000  # 10 power units each at the default power_unit: 4 founders of 10, the joiner 10 more
SENT = 123_456
# The app's snapshot flags (abci_app.snapshots.add_flags), given to every node by `node init --app-arg`.
# Empty would mean no snapshots: the joiner then replays blocks (`node join --no-state-sync`) instead of state-syncing.
SNAPSHOT_FLAGS: list[str] = ["--snapshot-interval", "10", "--snapshot-keep-recent", "3"]
SNAPSHOT_INTERVAL = 10  # --snapshot-interval in SNAPSHOT_FLAGS
# A stopped validator and a restarting app miss blocks: no downtime jail during the test.
APP_STATE = {"staking": {"params": {"downtime_window": 1000, "downtime_max_missed": 1000}}}


def run(home: Path, *args: str, node: str | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
    env = cli_env() | {"GRADCHAIN_HOME": str(home), "GRADCHAIN_KEYRING_BACKEND": "test"}
    if node:
        env["GRADCHAIN_NODE"] = node
    env.pop("GRADCHAIN_DEBUG", None)
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, env=env, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return result


class Host:
    """One machine: its address, home, ports and `node start` supervisor."""

    def __init__(self, root: Path, index: int, ports: list[int]) -> None:
        self.index, self.ip, self.home = index, HOSTS[index], root / f"host{index}"
        self.p2p, self.rpc, self.app, self.prometheus, self.metrics, self.ipfs_api, self.ipfs_gateway, self.ipfs_swarm = ports
        self.kubo = index in KUBO_HOSTS
        self.process: subprocess.Popen | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://{self.ip}:{self.rpc}"

    @property
    def ipfs_url(self) -> str:
        return f"http://{self.ip}:{self.ipfs_api}"

    def client(self) -> RpcClient:
        return RpcClient(self.rpc_url, timeout=5.0)

    def init(self, swarm_key: Path | None = None) -> dict:
        flags = [f"--app-arg={flag}" for flag in SNAPSHOT_FLAGS]
        if not self.kubo:
            flags.append("--no-ipfs")
        else:
            flags += ["--ipfs-api", f"{self.ip}:{self.ipfs_api}", "--ipfs-gateway", f"{self.ip}:{self.ipfs_gateway}",
                      "--ipfs-swarm", f"{self.ip}:{self.ipfs_swarm}"] + (["--swarm-key", str(swarm_key)] if swarm_key else [])
        app_state = self.home.parent / "app_state.json"
        return json_out(run(self.home, "node", "init", "--moniker", f"host{self.index}", "--chain-id", CHAIN_ID, "--private-network",
                            "--listen", f"{self.ip}:{self.p2p}", "--rpc", f"{self.ip}:{self.rpc}", "--app", f"{self.ip}:{self.app}",
                            "--prometheus", f"{self.ip}:{self.prometheus}", "--metrics", f"{self.ip}:{self.metrics}",
                            "--app-state", str(app_state), *flags, "-o", "json"))

    def start(self) -> None:
        env = cli_env() | {"GRADCHAIN_KEYRING_BACKEND": "test"}
        with open(self.home / "supervisor.out", "ab") as out:
            argv = cli_argv("node", "start", "--home", str(self.home), *([] if self.kubo else ["--no-ipfs"]))
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)

    def stop(self) -> None:
        """SIGTERM the supervisor (it stops its children); then make sure no child is left, even if it was killed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        layout = Layout(self.home)
        for name, marker in (("pins", PIN_SYNC), ("cometbft", str(self.home)), ("app", str(layout.app_home)), ("ipfs", str(layout.ipfs_repo))):
            supervisor.Child(name, layout.log(name), layout.pid(name), marker).terminate()

    def status(self) -> dict:
        return json_out(run(self.home, "node", "status", "-o", "json"))

    def height(self) -> int:
        with self.client() as client:
            return client.latest_height()

    def app_metric(self, name: str) -> float:
        """One sample of the app's own Prometheus metrics (`node init --metrics`)."""
        text = httpx.get(f"http://{self.ip}:{self.metrics}/metrics", timeout=5.0).text
        return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE).group(1))

    def tails(self) -> str:
        parts = []
        for name in ("supervisor.out", "logs/app.log", "logs/cometbft.log") + (("logs/ipfs.log", "logs/pins.log") if self.kubo else ()):
            parts.append(f"--- host{self.index} {name}:\n{supervisor.log_tail(self.home / name, 12)}")
        return "\n".join(parts)


def app_hash_at(host: Host, height: int) -> str:
    with host.client() as client:
        return client.header(height)["app_hash"]


def operator_address(host: Host) -> str:
    return ok(run(host.home, "keys", "show", "op", "--address")).stdout.strip()


@pytest.fixture
def hosts(tmp_path: Path):
    require_cometbft()
    (tmp_path / "app_state.json").write_text(json.dumps(APP_STATE))
    ports = free_ports(PORTS * len(HOSTS))
    made = [Host(tmp_path, i, ports[PORTS * i : PORTS * (i + 1)]) for i in range(len(HOSTS))]
    try:
        yield made
    except BaseException:
        for host in made:
            print(host.tails())
        raise
    finally:
        for host in made:
            host.stop()


def ceremony(founders: list[Host], joiner: Host, tmp_path: Path) -> str:
    """init, keys, add-account, gentx, collect on every founder; returns the genesis digest they all agree on.
    The joiner's Kubo gets the network's swarm key (host 2's, handed over as operators would, out of band)."""
    for host in founders + [joiner]:
        host.init(swarm_key=Layout(founders[0].home).ipfs_repo / "swarm.key" if host is joiner else None)
        ok(run(host.home, "keys", "add", "op"))
    coordinator = founders[0]
    for host in founders + [joiner]:
        ok(run(coordinator.home, "genesis", "add-account", operator_address(host), str(FUNDS)))
    gentxs = tmp_path / "gentxs"
    gentxs.mkdir()
    draft = Layout(coordinator.home).genesis.read_text()
    for host in founders:
        Layout(host.home).genesis.write_text(draft)
        path = json_out(run(host.home, "genesis", "gentx", str(BOND), "--from", "op", "-o", "json"))["gentx"]
        (gentxs / Path(path).name).write_text(Path(path).read_text())
    digests = {json_out(run(host.home, "genesis", "collect", "--gentx-dir", str(gentxs), "-o", "json"))["sha256"] for host in founders}
    assert len(digests) == 1, "every founder must collect the same genesis"
    checked = json_out(run(coordinator.home, "genesis", "validate", "-o", "json"))
    assert checked["validators"] == FOUNDERS and checked["sha256"] in digests
    return digests.pop()


def test_a_network_made_by_ceremony_is_joined_from_another_host(hosts: list[Host], tmp_path: Path) -> None:
    founders, joiner = hosts[:FOUNDERS], hosts[JOINER]
    # a dataset genesis admits (pin sync fetches what the chain uses, not every registration), served only by host 2's
    # Kubo, before the joiner exists: the joiner's pin sync must find it
    corpus = os.urandom(300_000)  # two chunks: a DAG, not a single block
    added = {"name": "multihost-corpus", "cid": cid_of_bytes(corpus), "sha256": hashlib.sha256(corpus).hexdigest(), "bytes": len(corpus),
             "tokens": len(corpus), "tokenizer": "bytes", "licence": "CC0-1.0"}
    (tmp_path / "app_state.json").write_text(json.dumps(APP_STATE | {"datasets": {"datasets": [added]}}))
    digest = ceremony(founders, joiner, tmp_path)
    for host in founders:
        host.start()
    wait_until(lambda: all(host.height() >= 2 for host in founders), 120, "the founders to make blocks", poll=0.5)
    with IpfsClient(founders[0].ipfs_url) as ipfs:
        assert ipfs.add(corpus) == added["cid"]

    # a transfer the joiner must later serve
    recipient = ok(run(founders[1].home, "keys", "add", "recipient", "-o", "json"))
    recipient_address = json.loads(recipient.stdout)["address"]
    ok(run(founders[0].home, "tx", "bank", "send", "op", recipient_address, str(SENT), "--yes", node=founders[0].rpc_url))
    passed = 3 * SNAPSHOT_INTERVAL if SNAPSHOT_FLAGS else 8
    wait_until(lambda: founders[0].height() >= passed, 180, f"height {passed}", poll=0.5)
    # Optimistic execution under real CometBFT: FinalizeBlock found (nearly) every block's txs executed by the
    # proposal calls; one executed again means what ProcessProposal saw and what was decided did not match.
    for host in founders:
        blocks, ahead = host.app_metric("gradchain_blocks_total"), host.app_metric("gradchain_blocks_executed_ahead_total")
        assert blocks >= passed - 1 and ahead >= blocks - 2, f"host{host.index}: {ahead:.0f} of {blocks:.0f} blocks executed ahead"

    # the joiner: genesis, peers and trust point from one founder's RPC, checked against the published digest
    joined = json_out(run(joiner.home, "node", "join", "--peer", founders[0].rpc_url, "--genesis-sha256", digest, "-o", "json",
                          "--gentx-dir", str(tmp_path / "gentxs"), *([] if SNAPSHOT_FLAGS else ["--no-state-sync"])))
    assert joined["chain_id"] == CHAIN_ID and joined["persistent_peers"][0].endswith(f"@{founders[0].ip}:{founders[0].p2p}")
    assert [peer.split("@", 1)[1] for peer in joined["ipfs_peers"]] == [f"/ip4/{founders[0].ip}/tcp/{founders[0].ipfs_swarm}"]
    joiner.start()

    def synced() -> bool:
        status = joiner.status()
        return status["catching_up"] is False and status["height"] is not None and status["height"] >= founders[0].height() - 1

    wait_until(synced, 240, "the joiner to catch up", poll=1.0)
    with joiner.client() as client:
        earliest = int(client.status()["sync_info"]["earliest_block_height"])
        assert balance(client, recipient_address) == SENT
    if SNAPSHOT_FLAGS:
        assert earliest > 1, "the joiner replayed from genesis instead of restoring a snapshot"

    # the dataset admitted before it joined is pinned on its Kubo, with the bytes the chain registered
    def pinned() -> bool:
        pins = joiner.status()["pins"]
        return pins is not None and pins["pinned"] >= 1

    wait_until(pinned, 120, "the joiner's pin sync to pin the genesis dataset", poll=1.0)
    with IpfsClient(joiner.ipfs_url) as ipfs:
        assert ipfs.pinned(added["cid"])
        assert ipfs.cat(added["cid"]) == corpus
    height = joiner.height() - 1
    assert app_hash_at(joiner, height) == app_hash_at(founders[0], height)

    # it bonds in and signs
    ok(run(joiner.home, "tx", "staking", "create-validator", "op", "--pubkey-from-home", str(joiner.home), "--amount", str(BOND), "--yes",
           node=joiner.rpc_url))
    wait_until(lambda: (joiner.status()["voting_power"] or 0) > 0, 60, "the joiner to get voting power", poll=0.5)
    with joiner.client() as client:
        my_address = client.status()["validator_info"]["address"]

    def signed_recently() -> bool:
        with founders[0].client() as client:
            latest = client.latest_height()
            signatures = client.commit(latest)["signed_header"]["commit"]["signatures"]
        return any(s.get("validator_address") == my_address and s.get("signature") for s in signatures)

    wait_until(signed_recently, 60, "the joiner's signature in a commit", poll=0.5)

    # a crash of its app: the supervisor restarts the app, then CometBFT, and the node carries on
    app_pid = int(Layout(joiner.home).pid("app").read_text())
    os.kill(app_pid, signal.SIGKILL)

    def recovered() -> bool:
        children = {c["name"]: c for c in joiner.status()["children"]}
        return children["app"]["restarts"] >= 1 and children["app"]["up"] and children["cometbft"]["up"] and children["app"]["pid"] != app_pid

    wait_until(recovered, 120, "the supervisor to bring the joiner's app back", poll=0.5)
    before = founders[0].height()
    wait_until(lambda: joiner.height() >= before + 2, 120, "the restarted joiner to follow the chain", poll=0.5)
    height = joiner.height() - 1
    assert app_hash_at(joiner, height) == app_hash_at(founders[0], height)

    # one founder goes: 40 of 50 power is left, over 2/3
    founders[3].stop()
    before = founders[0].height()
    wait_until(lambda: founders[0].height() >= before + 3 and joiner.height() >= before + 3, 120, "the chain to go on without host3", poll=0.5)
