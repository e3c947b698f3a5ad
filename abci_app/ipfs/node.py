"""Kubo nodes for a local private swarm: init, configure, start, stop.

One node = one repo directory (IPFS_PATH) with fixed loopback ports:

    key = generate_swarm_key()
    init_node(repo, api_port=5001, gateway_port=8080, swarm_port=4001, swarm_key=key)
    set_peering(repo, [(peer_id(other), swarm_multiaddr(other_swarm_port)), ...])
    daemon = start_node(repo, repo / "daemon.log")  # waits until the API answers
    ...
    stop_node(daemon)

`Swarm` does all of it for N nodes under one root:

    with Swarm.create(root, 3) as swarm:            # free ports; or ports=[(api, gw, swarm), ...]
        swarm.start()                               # all peered and connected
        cid = swarm.client(0).add(b"...")

Each daemon is an `abci_app.supervisor` child (its own process group: it
outlives a crashed parent until stopped; its pid file beside its log) with
`LIBP2P_FORCE_PNET=1`, so it refuses to start without the swarm key, and
nothing in its config dials out: no bootstrap peers, no mDNS, no
AutoConf/AutoTLS/telemetry, TCP on 127.0.0.1 only, DHT routing inside the swarm.
See docs/ipfs.md for what Kubo v0.43 needs and why.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abci_app import supervisor
from abci_app.ipfs.client import IpfsClient, IpfsError
from abci_app.ports import free_ports  # noqa: F401  (re-exported: tests use node.free_ports)

REPO_ROOT = Path(__file__).resolve().parents[2]
IPFS = Path(os.environ.get("GRADCHAIN_IPFS_BIN", REPO_ROOT / "bin" / "ipfs"))
START_TIMEOUT = 30.0  # seconds for a daemon's API to answer
STOP_TIMEOUT = supervisor.STOP_TIMEOUT  # seconds between SIGTERM and SIGKILL
PEER_TIMEOUT = 30.0  # seconds for every node to see every other one

# Config written over `ipfs init --profile=test` (which already sets AutoConf, AutoTLS, mDNS off,
# Bootstrap empty). Keys are "A.B.C" paths; values are JSON.
PRIVATE_CONFIG: dict[str, Any] = {
    "Bootstrap": [],
    "Discovery.MDNS.Enabled": False,
    "AutoConf.Enabled": False,  # else Kubo fetches public bootstrap/router lists (and refuses to start with a swarm key)
    "AutoTLS.Enabled": False,  # a hard error with a swarm key when explicitly true
    "Routing.Type": "dht",  # "auto" adds public HTTP routers; Kubo downgrades it to dht with an error log anyway
    "Routing.DelegatedRouters": [],
    "Ipns.DelegatedPublishers": [],
    "DNS.Resolvers": {},
    "HTTPRetrieval.Enabled": False,  # HTTP block retrieval dials providers' HTTPS endpoints: not in a private swarm
    "Swarm.Transports.Network.TCP": True,
    "Swarm.Transports.Network.QUIC": False,  # QUIC, WebTransport, WebRTC do not support private networks
    "Swarm.Transports.Network.WebTransport": False,
    "Swarm.Transports.Network.WebRTCDirect": False,
    "Swarm.Transports.Network.Websocket": False,
    "Swarm.RelayClient.Enabled": False,
    "Swarm.RelayService.Enabled": False,
    "Swarm.EnableHolePunching": False,
    "Swarm.DisableNatPortMap": True,
    "AutoNAT.ServiceMode": "disabled",
    "Plugins.Plugins.telemetry.Disabled": True,  # telemetry reports to a public endpoint
}


def _ipfs_env(repo: Path) -> dict[str, str]:
    return {**os.environ, "IPFS_PATH": str(repo), "LIBP2P_FORCE_PNET": "1", "IPFS_TELEMETRY": "off"}


def require_ipfs() -> Path:
    if not IPFS.exists():
        raise IpfsError(f"Kubo binary missing at {IPFS}: run `make install` (or `ipfs/install.sh`)")
    return IPFS


def generate_swarm_key() -> bytes:
    """A fresh pre-shared key in the format Kubo reads from `swarm.key`."""
    return b"/key/swarm/psk/1.0.0/\n/base16/\n" + secrets.token_hex(32).encode() + b"\n"


def swarm_multiaddr(swarm_port: int) -> str:
    return f"/ip4/127.0.0.1/tcp/{swarm_port}"


def _read_config(repo: Path) -> dict[str, Any]:
    return dict(json.loads((repo / "config").read_text()))


def _write_config(repo: Path, config: dict[str, Any]) -> None:
    # Written directly (the daemon is not running): one write instead of ~20 `ipfs config` processes.
    tmp = repo / "config.tmp"
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(repo / "config")


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = config
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value


def init_node(repo: Path, api_port: int, gateway_port: int, swarm_port: int, swarm_key: bytes) -> str:
    """Create a Kubo repo for a private loopback swarm node; return its peer ID."""
    repo = Path(repo)
    if (repo / "config").exists():
        raise IpfsError(f"an IPFS repo already exists at {repo}")
    repo.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([str(require_ipfs()), "init", "--profile=test"], env=_ipfs_env(repo), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise IpfsError(f"ipfs init {repo} failed: {(result.stderr or result.stdout).strip()}")
    config = _read_config(repo)
    for path, value in PRIVATE_CONFIG.items():
        _set(config, path, value)
    _set(config, "Addresses.API", f"/ip4/127.0.0.1/tcp/{api_port}")
    _set(config, "Addresses.Gateway", f"/ip4/127.0.0.1/tcp/{gateway_port}")
    _set(config, "Addresses.Swarm", [swarm_multiaddr(swarm_port)])
    _write_config(repo, config)
    write_swarm_key(repo, swarm_key)
    return str(config["Identity"]["PeerID"])


def write_swarm_key(repo: Path, swarm_key: bytes) -> None:
    """Install `swarm_key` as REPO/swarm.key, readable by its owner only from its first byte (created 0600,
    then renamed over any old key, so no reader ever sees it world-readable or half written)."""
    path = Path(repo) / "swarm.key"
    tmp = path.with_name(".swarm.key.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file left over from a crash
        os.write(fd, swarm_key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def peer_id(repo: Path) -> str:
    return str(_read_config(Path(repo))["Identity"]["PeerID"])


def api_url(repo: Path) -> str:
    """The node's RPC URL, from Addresses.API (`/ip4/127.0.0.1/tcp/PORT`)."""
    api = _read_config(Path(repo))["Addresses"]["API"]
    parts = (api[0] if isinstance(api, list) else api).split("/")
    return f"http://{parts[2]}:{parts[4]}"


def set_peering(repo: Path, peers: list[tuple[str, str]]) -> None:
    """Peering.Peers = [(peer_id, multiaddr)]: Kubo dials them at start and redials them when they drop."""
    config = _read_config(Path(repo))
    _set(config, "Peering.Peers", [{"ID": pid, "Addrs": [addr]} for pid, addr in peers])
    _write_config(Path(repo), config)


def log_tail(path: Path, lines: int = 15) -> str:
    return supervisor.log_tail(path, lines, indent="")


def daemon_argv(repo: Path) -> list[str]:
    """`ipfs daemon` for `repo`; the repo path in argv is what tells this daemon apart from any other."""
    return [str(require_ipfs()), "--repo-dir", str(repo), "daemon"]


def spawn_daemon(repo: Path, log_path: Path, pid_path: Path, name: str | None = None, cwd: Path | None = None) -> supervisor.Child:
    """Start `ipfs daemon` on `repo` as a supervised child; returns at once (wait with `answers`)."""
    repo = Path(repo)
    return supervisor.spawn(name or f"ipfs daemon for {repo}", daemon_argv(repo), _ipfs_env(repo), log_path, pid_path, marker=str(repo), cwd=cwd)


def answers(url: str, peer_id: str) -> bool:
    """Whether the daemon with `peer_id` answers at `url` (not some other daemon left on that port)."""
    try:
        with IpfsClient(url, timeout=2.0) as client:
            return client.id().get("ID") == peer_id
    except IpfsError:
        return False


def start_node(repo: Path, log_path: Path, timeout: float = START_TIMEOUT) -> supervisor.Child:
    """Start `ipfs daemon` on `repo` (pid file beside `log_path`); return once its API answers `id`.

    Raises IpfsError with the log's tail if the daemon exits or does not answer within `timeout`
    (and then stops it).
    """
    repo = Path(repo)
    url, me = api_url(repo), peer_id(repo)
    daemon = spawn_daemon(repo, log_path, Path(log_path).with_suffix(".pid"))
    try:
        daemon.wait_ready(lambda: answers(url, me), timeout)
    except supervisor.ChildExited as exc:
        tail = log_tail(log_path)
        reason = next((line for line in reversed(tail.splitlines()) if line.startswith("Error:")), "")
        daemon.terminate()  # only its pid file is left to remove
        raise IpfsError(f"ipfs daemon for {repo} exited with code {exc.returncode}: {reason or 'see its log'}; log {log_path}:\n{tail}") from None
    except supervisor.ChildNotReady:
        daemon.terminate()
        raise IpfsError(f"ipfs daemon for {repo} did not answer at {url} within {timeout:g}s; log {log_path}:\n{log_tail(log_path)}") from None
    return daemon


def stop_node(daemon: supervisor.Child, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the daemon's process group (Kubo shuts down cleanly), SIGKILL after `timeout`. Idempotent."""
    daemon.terminate(timeout)


@dataclass
class KuboNode:
    index: int
    repo: Path
    api_port: int
    gateway_port: int
    swarm_port: int
    peer_id: str
    daemon: supervisor.Child | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def swarm_addr(self) -> str:
        return swarm_multiaddr(self.swarm_port)

    @property
    def log_path(self) -> Path:
        return self.repo / "daemon.log"


@dataclass
class Swarm:
    """N Kubo nodes under `root` (repos root/ipfs0, root/ipfs1, ...) sharing one swarm key, all peered."""

    root: Path
    nodes: list[KuboNode] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, n: int, ports: list[tuple[int, int, int]] | None = None, swarm_key: bytes | None = None) -> Swarm:
        """Init `n` repos; `ports` = [(api, gateway, swarm)] per node, else free ports. Starts nothing."""
        root = Path(root)
        if ports is None:
            flat = free_ports(3 * n)
            ports = [(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]) for i in range(n)]
        if len(ports) != n:
            raise IpfsError(f"{n} nodes need {n} port triples, got {len(ports)}")
        key = swarm_key or generate_swarm_key()
        nodes = []
        for i, (api, gateway, swarm_port) in enumerate(ports):
            repo = root / f"ipfs{i}"
            nodes.append(KuboNode(i, repo, api, gateway, swarm_port, init_node(repo, api, gateway, swarm_port, key)))
        for node in nodes:
            set_peering(node.repo, [(other.peer_id, other.swarm_addr) for other in nodes if other is not node])
        return cls(root, nodes)

    def start(self, timeout: float = START_TIMEOUT, peer_timeout: float = PEER_TIMEOUT) -> None:
        """Start every daemon, then wait until each node is connected to all the others. Stops all on failure."""
        try:
            for node in self.nodes:
                node.daemon = start_node(node.repo, node.log_path, timeout)
            self.wait_connected(peer_timeout)
        except BaseException:
            self.stop()
            raise

    def wait_connected(self, timeout: float = PEER_TIMEOUT) -> None:
        """Dial every pair once (Peering's first retry comes only after 5-12 s), then wait for all links."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with self.client(node.index) as client:
                for other in self.nodes[node.index + 1 :]:
                    try:
                        client.swarm_connect(f"{other.swarm_addr}/p2p/{other.peer_id}")
                    except IpfsError:
                        pass  # reported below if the link never comes up
        for node in self.nodes:
            want = {other.peer_id for other in self.nodes if other is not node}
            with self.client(node.index) as client:
                while True:
                    have = {p["Peer"] for p in client.swarm_peers()}
                    if want <= have:
                        break
                    if time.monotonic() > deadline:
                        raise IpfsError(f"IPFS node {node.index} sees {len(want & have)} of {len(want)} peers after {timeout:g}s; log {node.log_path}")
                    time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            if node.daemon is not None:
                stop_node(node.daemon)
                node.daemon = None

    def client(self, i: int, timeout: float = 10.0) -> IpfsClient:
        return IpfsClient(self.nodes[i].api_url, timeout=timeout)

    def __enter__(self) -> Swarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
