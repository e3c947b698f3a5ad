"""Ports and config.toml of each localnet node.

Ports with a fixed base (`make localnet`, base 26656), node i uses
    p2p  base + 10*i      (26656, 26666, 26676, 26686)
    rpc  base + 10*i + 1  (26657, 26667, ...)
    app  base + 10*i + 2  (26658, 26668, ...)   ABCI socket of our app
    Kubo api, gateway, swarm  base + 10*i + 3, 4, 5
Without a base (tests), every port is a free one the kernel picked.

What a node changes in the config.toml that `cometbft testnet` writes is the
template localnet/config.toml at the repository root, filled per node.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from abci_app.ports import free_ports

# The checkout this package runs from (an editable install or a clone on PYTHONPATH): its bin/ holds the
# binaries `make install-go` builds, its localnet/ the localnet's templates, as cometbft/ and ipfs/ hold theirs.
REPO_ROOT = Path(__file__).resolve().parents[2]
FILES = REPO_ROOT / "localnet"
COMETBFT = Path(os.environ.get("GRADCHAIN_COMETBFT", REPO_ROOT / "bin" / "cometbft"))
DEFAULT_BASE_PORT = 26656
PORT_STRIDE = 10
APP_GRADCHAIN = "gradchain"
APP_KVSTORE = "kvstore"  # CometBFT's built-in app, compiled into the binary


class LocalnetError(Exception):
    """The localnet could not be created, started or reached; the message says why."""


def run_cometbft(*args: str, error: type[Exception] = LocalnetError) -> str:
    """Run the pinned CometBFT binary and return its output; `error` with its last line if it fails."""
    if not COMETBFT.exists():
        raise error(f"CometBFT binary not found at {COMETBFT}: run `make install-go`")
    result = subprocess.run([str(COMETBFT), *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        last = ((result.stderr or result.stdout).strip().splitlines() or ["no output"])[-1]
        raise error(f"`cometbft {' '.join(args)}` failed: {last}")
    return result.stdout.strip()


class NodeDirs:
    """Where a node's home keeps the app's state, its Kubo repo and its worker's cache: one layout for the
    localnet's nodes and for `gradchain node init` homes (abci_app.node.home.Layout), whose children run alike."""

    home: Path

    @property
    def app_home(self) -> Path:
        return self.home / "app"

    @property
    def ipfs_repo(self) -> Path:
        return self.home / "ipfs"

    @property
    def worker_home(self) -> Path:
        """The validator worker's cache of pulled checkpoints and deltas."""
        return self.home / "worker"


@dataclass
class Node(NodeDirs):
    index: int
    home: Path  # CometBFT home (config/, data/); the app's state lives in home/app
    node_id: str
    p2p_port: int
    rpc_port: int
    app_port: int
    ipfs_api_port: int = 0  # 0: this node runs no Kubo node
    ipfs_gateway_port: int = 0
    ipfs_swarm_port: int = 0
    ipfs_peer_id: str = ""

    @property
    def ipfs_url(self) -> str:
        return f"http://127.0.0.1:{self.ipfs_api_port}"

    @property
    def explorer_home(self) -> Path:
        """The explorer's cache of verified checkpoints (node 0 only)."""
        return self.home / "explorer"

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def p2p_address(self) -> str:
        return f"{self.node_id}@127.0.0.1:{self.p2p_port}"

    def log_path(self, kind: str) -> Path:
        return self.home / f"{kind}.log"

    def pid_path(self, kind: str) -> Path:
        return self.home / f"{kind}.pid"


def read_template(name: str) -> dict:
    """A TOML file of the localnet's own (localnet/NAME in the checkout)."""
    return tomllib.loads((FILES / name).read_text())


# --- ports -------------------------------------------------------------------


def allocate_ports(validators: int, base_port: int | None) -> list[tuple[int, int, int]]:
    """(p2p, rpc, app) per node: fixed offsets from `base_port`, or free ports when it is None."""
    if base_port is None:
        ports = free_ports(3 * validators)
        return [tuple(ports[3 * i : 3 * i + 3]) for i in range(validators)]  # type: ignore[misc]
    if not 1024 <= base_port <= 65535 - PORT_STRIDE * validators:
        raise LocalnetError(f"base port {base_port} leaves no room for {validators} nodes; pick one in 1024..{65535 - PORT_STRIDE * validators}")
    return [(base_port + PORT_STRIDE * i, base_port + PORT_STRIDE * i + 1, base_port + PORT_STRIDE * i + 2) for i in range(validators)]


def allocate_ipfs_ports(validators: int, base_port: int | None, taken: set[int] | frozenset[int] = frozenset()) -> list[tuple[int, int, int]]:
    """(api, gateway, swarm) per node's Kubo: base + 10*i + 3..5, or free ports when base is None.

    Free ports are probed after the nodes' own ports were picked and released,
    so the kernel may hand out one of those again: `taken` (the nodes' ports) is never returned.
    """
    if base_port is None:
        for _ in range(10):
            ports = free_ports(3 * validators)
            if not taken.intersection(ports):
                return [tuple(ports[3 * i : 3 * i + 3]) for i in range(validators)]  # type: ignore[misc]
        raise LocalnetError("found no free ports for the IPFS nodes")
    return [tuple(base_port + PORT_STRIDE * i + k for k in (3, 4, 5)) for i in range(validators)]  # type: ignore[misc]


# --- config.toml -------------------------------------------------------------

_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the ASCII values we write
    raise TypeError(f"cannot write {value!r} to config.toml")


def set_toml_values(text: str, values: dict[tuple[str, str], object]) -> str:
    """Rewrite `key = ...` lines in place, per (table, key) with "" for top level.

    Line-based, so CometBFT's comments survive and the file stays diffable
    against a fresh one; every key must exist already, so a renamed option in a
    new CometBFT fails here instead of being silently ignored.
    """
    table, missing, out = "", dict(values), []
    for line in text.splitlines(keepends=True):
        header = _TABLE.match(line)
        if header:
            table = header.group(1)
        else:
            key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
            if key is not None and (table, key) in values:
                newline = "\n" if line.endswith("\n") else ""
                line = f"{key} = {toml_value(values[(table, key)])}{newline}"
                missing.pop((table, key), None)
        out.append(line)
    if missing:
        names = ", ".join(f"{t}.{k}" if t else k for t, k in missing)
        raise LocalnetError(f"config.toml has no option {names} (CometBFT version changed?)")
    return "".join(out)


def _options(table: dict, name: str = "") -> dict[tuple[str, str], object]:
    """A parsed TOML document as {(table, key): value}, nested tables named as in their headers ("p2p.libp2p")."""
    options: dict[tuple[str, str], object] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            options.update(_options(value, f"{name}.{key}" if name else key))
        else:
            options[(name, key)] = value
    return options


CONFIG_TEMPLATE = _options(read_template("config.toml"))
CONSENSUS_TIMEOUTS = {key: value for (table, key), value in CONFIG_TEMPLATE.items() if table == "consensus" and key.startswith("timeout_")}


def node_config(node: Node, peers: list[Node], app: str, empty_blocks_interval: str = "0s") -> dict[tuple[str, str], object]:
    """The config.toml options we set for `node` in a localnet of `peers` (itself included or not): localnet/config.toml, filled in.

    `empty_blocks_interval` > 0 makes an idle chain still add a block that often:
    training rounds measure their windows in heights, so they need heights to pass.
    """
    fill = {
        "proxy_app": APP_KVSTORE if app == APP_KVSTORE else f"tcp://127.0.0.1:{node.app_port}",
        "index": node.index,
        "p2p_port": node.p2p_port,
        "rpc_port": node.rpc_port,
        "app_port": node.app_port,
        "persistent_peers": ",".join(p.p2p_address for p in peers if p.index != node.index),
        "empty_blocks_interval": empty_blocks_interval,
    }
    return {option: value.format(**fill) if isinstance(value, str) else value for option, value in CONFIG_TEMPLATE.items()}
