"""A node's home on disk, its settings, and `gradchain node init`.

    HOME/config/        CometBFT: config.toml, genesis.json, node_key.json, priv_validator_key.json
    HOME/data/          CometBFT's blocks and state
    HOME/app/           the app's state (state.sqlite)
    HOME/ipfs/          the Kubo repo (swarm.key: the network's, handed over out of band)
    HOME/worker/        the optional worker's cache
    HOME/keyring/       operator keys (gradchain keys --home HOME)
    HOME/logs/          one log per child, rotated by size
    HOME/node.json      the settings below: what `node start` runs, on which addresses
CometBFT's home is HOME itself, as for `cometbft --home HOME`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from abci_app.localnet.config import NodeDirs, run_cometbft, set_toml_values

SETTINGS_FILE = "node.json"
DEFAULT_CHAIN_ID = "gradchain-1"
# Default listen addresses: p2p and the Kubo swarm face the network; everything else stays on loopback.
DEFAULT_P2P = "0.0.0.0:26656"
DEFAULT_RPC = "127.0.0.1:26657"
DEFAULT_APP = "127.0.0.1:26658"
DEFAULT_PROMETHEUS = "127.0.0.1:26660"  # CometBFT's own metrics
DEFAULT_METRICS = "127.0.0.1:26661"  # the app's metrics
DEFAULT_WORKER_METRICS = "127.0.0.1:26662"  # the worker's (verification seconds)
DEFAULT_IPFS_API = "127.0.0.1:5001"
DEFAULT_IPFS_GATEWAY = "127.0.0.1:8080"
DEFAULT_IPFS_SWARM = "0.0.0.0:4001"


class NodeError(Exception):
    """A node command could not do its job; the message says why and what to do."""


def host_port(text: str, what: str) -> tuple[str, int]:
    """'HOST:PORT' (or 'tcp://HOST:PORT') -> (host, port); NodeError if it is not one."""
    body = text.removeprefix("tcp://")
    host, sep, port = body.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise NodeError(f"{what} '{text}' is not HOST:PORT (for example 0.0.0.0:26656)")
    return host, int(port)


def dial_host(host: str) -> str:
    """Where a local client reaches a server listening on `host`: a wildcard means loopback."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


@dataclass
class Settings:
    """What `node init` chose and `node start` runs with (HOME/node.json)."""

    moniker: str
    chain_id: str
    p2p: str = DEFAULT_P2P
    external: str = ""  # the p2p address peers should dial, when p2p listens on a wildcard or behind NAT
    rpc: str = DEFAULT_RPC
    app: str = DEFAULT_APP
    prometheus: str = DEFAULT_PROMETHEUS
    metrics: str = DEFAULT_METRICS
    worker_metrics: str = DEFAULT_WORKER_METRICS
    ipfs_api: str = DEFAULT_IPFS_API
    ipfs_gateway: str = DEFAULT_IPFS_GATEWAY
    ipfs_swarm: str = DEFAULT_IPFS_SWARM
    private_network: bool = False  # peers on private/loopback addresses, several per IP (tests, LANs)
    app_args: list[str] = field(default_factory=list)  # extra flags for `python -m abci_app` (snapshots, pruning)
    generated_swarm_key_sha256: str = ""  # set when `node init` made a fresh swarm key: a joiner must replace it
    pin_max_file_bytes: int = 0  # pin sync skips larger files (0: abci_app.node.pins.MAX_FILE_BYTES)
    pin_free_floor_bytes: int = 0  # pin sync skips a file that would leave less free under HOME (0: pins.FREE_FLOOR_BYTES)

    @property
    def rpc_url(self) -> str:
        host, port = host_port(self.rpc, "rpc")
        return f"http://{dial_host(host)}:{port}"

    @property
    def app_addr(self) -> str:
        return f"tcp://{self.app}"

    @property
    def ipfs_url(self) -> str:
        host, port = host_port(self.ipfs_api, "ipfs api")
        return f"http://{dial_host(host)}:{port}"

    @property
    def metrics_url(self) -> str:
        host, port = host_port(self.metrics, "metrics")
        return f"http://{dial_host(host)}:{port}/metrics"


@dataclass(frozen=True)
class Layout(NodeDirs):
    home: Path

    @property
    def config(self) -> Path:
        return self.home / "config"

    @property
    def genesis(self) -> Path:
        return self.config / "genesis.json"

    @property
    def config_toml(self) -> Path:
        return self.config / "config.toml"

    @property
    def gentx_dir(self) -> Path:
        return self.config / "gentx"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def settings(self) -> Path:
        return self.home / SETTINGS_FILE

    @property
    def status(self) -> Path:
        return self.home / "status.json"

    def log(self, child: str) -> Path:
        return self.logs / f"{child}.log"

    def pid(self, child: str) -> Path:
        return self.logs / f"{child}.pid"


def load_settings(home: Path) -> Settings:
    path = Layout(home).settings
    try:
        data = json.loads(path.read_text())
        known = {f.name for f in fields(Settings)}
        return Settings(**{k: v for k, v in data.items() if k in known})
    except FileNotFoundError:
        raise NodeError(f"no node in {home} (run `gradchain node init --moniker NAME --home {home}` first)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise NodeError(f"{path} is unreadable: {exc}") from None


def save_settings(home: Path, settings: Settings) -> None:
    Layout(home).settings.write_text(json.dumps(asdict(settings), indent=2) + "\n")


def cometbft(*args: str) -> str:
    """Run the pinned CometBFT binary; NodeError with its last line if it fails."""
    return run_cometbft(*args, error=NodeError)


def config_options(settings: Settings) -> dict[tuple[str, str], object]:
    """The config.toml options a node's settings decide (the localnet fills the same ones from its template)."""
    options: dict[tuple[str, str], object] = {
        ("", "moniker"): settings.moniker,
        ("", "proxy_app"): settings.app_addr,
        ("rpc", "laddr"): f"tcp://{settings.rpc}",
        ("p2p", "laddr"): f"tcp://{settings.p2p}",
        ("p2p", "external_address"): settings.external,
        ("instrumentation", "prometheus"): True,
        ("instrumentation", "prometheus_listen_addr"): settings.prometheus,
        ("tx_index", "indexer"): "kv",  # `query tx` and tx_search need it
    }
    if settings.private_network:
        options[("p2p", "addr_book_strict")] = False  # private and loopback addresses are not "routable"
        options[("p2p", "allow_duplicate_ip")] = True
    return options


def write_config(home: Path, values: dict[tuple[str, str], object]) -> None:
    path = Layout(home).config_toml
    path.write_text(set_toml_values(path.read_text(), values))


def node_id(home: Path) -> str:
    return cometbft("show-node-id", "--home", str(home))


def init(home: Path, settings: Settings, app_state: dict | None = None, swarm_key: bytes | None = None, ipfs: bool = True) -> dict:
    """Create a node home: CometBFT keys and config, app home, Kubo repo, settings; returns what an operator shares.

    The genesis written here is this node's draft (its own validator, `app_state`
    or {}): a network's coordinator grows it with `genesis add-account` and
    `collect`; a node that joins replaces it with `node join`.
    """
    home = Path(home).resolve()
    layout = Layout(home)
    if layout.settings.exists() or layout.genesis.exists():
        raise NodeError(f"{home} already holds a node; pick another --home (keys there are not overwritten)")
    for text, what in ((settings.p2p, "--listen"), (settings.rpc, "--rpc"), (settings.app, "--app"), (settings.prometheus, "--prometheus"),
                       (settings.metrics, "--metrics"), (settings.worker_metrics, "--worker-metrics")) + (((settings.external, "--external"),) if settings.external else ()):
        host_port(text, what)
    home.mkdir(parents=True, exist_ok=True)
    cometbft("init", "--home", str(home))
    genesis = json.loads(layout.genesis.read_text())
    genesis["chain_id"] = settings.chain_id
    genesis["app_state"] = app_state or {}
    layout.genesis.write_text(json.dumps(genesis, indent=2) + "\n")
    write_config(home, config_options(settings))
    for folder in (layout.app_home, layout.logs, layout.worker_home):
        folder.mkdir(exist_ok=True)
    peer = ""
    if ipfs:
        peer = init_ipfs(layout, settings, swarm_key)
    save_settings(home, settings)
    key = json.loads((layout.config / "priv_validator_key.json").read_text())
    return {"moniker": settings.moniker, "chain_id": settings.chain_id, "node_id": node_id(home), "home": str(home),
            "consensus_pubkey": key["pub_key"]["value"], "ipfs_peer_id": peer, "p2p": settings.external or settings.p2p}


def init_ipfs(layout: Layout, settings: Settings, swarm_key: bytes | None) -> str:
    """A Kubo repo on the settings' addresses with the network's swarm key (a fresh one for a new network)."""
    from abci_app.ipfs import node as kubo

    _, api = host_port(settings.ipfs_api, "--ipfs-api")
    _, gateway = host_port(settings.ipfs_gateway, "--ipfs-gateway")
    swarm_host, swarm = host_port(settings.ipfs_swarm, "--ipfs-swarm")
    if swarm_key is None:
        swarm_key = kubo.generate_swarm_key()
        settings.generated_swarm_key_sha256 = hashlib.sha256(swarm_key).hexdigest()
    peer = kubo.init_node(layout.ipfs_repo, api, gateway, swarm, check_swarm_key(swarm_key))
    config_path = layout.ipfs_repo / "config"
    config = json.loads(config_path.read_text())
    api_host, _ = host_port(settings.ipfs_api, "--ipfs-api")
    gateway_host, _ = host_port(settings.ipfs_gateway, "--ipfs-gateway")
    config["Addresses"]["API"] = f"/ip4/{api_host}/tcp/{api}"
    config["Addresses"]["Gateway"] = f"/ip4/{gateway_host}/tcp/{gateway}"
    config["Addresses"]["Swarm"] = [f"/ip4/{swarm_host}/tcp/{swarm}"]
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return peer


def check_swarm_key(swarm_key: bytes) -> bytes:
    """`swarm_key` if it is a Kubo pre-shared key file (three lines: the header, /base16/, 64 hex digits); NodeError
    otherwise: Kubo refuses to start on anything else, and would restart in a loop under `node start`."""
    lines = swarm_key.decode("ascii", "replace").strip().splitlines()
    if len(lines) != 3 or lines[0] != "/key/swarm/psk/1.0.0/" or lines[1] != "/base16/" or not re.fullmatch(r"[0-9a-fA-F]{64}", lines[2]):
        raise NodeError("the swarm key is not a Kubo pre-shared key (/key/swarm/psk/1.0.0/, /base16/, then 64 hex digits)")
    return swarm_key


def swarm_key_sha256(home: Path) -> str:
    """sha256 of this node's swarm key file, to compare with the network's (`sha256sum swarm.key`); "" without one."""
    try:
        return hashlib.sha256((Layout(home).ipfs_repo / "swarm.key").read_bytes()).hexdigest()
    except OSError:
        return ""


def set_swarm_key(home: Path, swarm_key: bytes) -> None:
    """Install the network's swarm key (received from its operators) in this node's Kubo repo."""
    from abci_app.ipfs import node as kubo

    kubo.write_swarm_key(Layout(home).ipfs_repo, check_swarm_key(swarm_key))
