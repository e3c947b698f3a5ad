"""A localnet on disk and its processes: create, load, start, stop, observe, add a node.

`create()` lets `cometbft testnet` write the homes (node keys, validator keys,
one shared genesis), then rewrites each config.toml (config.py), writes the
genesis app_state (genesis.py), and saves a `Network` description as
`ROOT/network.json`, so a later process (`gradchain localnet status/stop`)
finds the same network. `Network` starts and stops the processes through
abci_app.supervisor: each outlives the Python process that started it, with
its pid in `ROOT/nodeI/{app,cometbft,ipfs,worker}.pid` and its output in
`ROOT/nodeI/{app,cometbft,ipfs,worker}.log`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from abci_app import supervisor
from abci_app.keyring import TEST_BACKEND, Keyring
from abci_app.localnet.config import (
    APP_GRADCHAIN,
    APP_KVSTORE,
    COMETBFT,
    PORT_STRIDE,
    LocalnetError,
    Node,
    allocate_ipfs_ports,
    allocate_ports,
    node_config,
    run_cometbft,
    set_toml_values,
)
from abci_app.localnet.genesis import (
    DEV_BALANCE,
    FAUCET_BALANCE,
    FAUCET_KEY,
    Account,
    Staker,
    evidence_params,
    genesis_app_state,
    genesis_self_bond,
    register_genesis_content,
)
from abci_app.node import commands  # the child commands `gradchain node start` runs too
from abci_app.ports import free_ports, port_in_use
from abci_app.rpc import RpcClient, RpcError

NETWORK_FILE = "network.json"
DEFAULT_CHAIN_ID = "gradchain-localnet"
START_TIMEOUT = 30.0  # seconds for one process to open its port
STOP_TIMEOUT = supervisor.STOP_TIMEOUT  # seconds between SIGTERM and SIGKILL


@dataclass
class NodeStatus:
    index: int
    rpc_url: str
    app_pid: int | None  # None: no app process (built-in app) or not running
    app_alive: bool
    node_pid: int | None
    node_alive: bool
    height: int | None  # None when the RPC does not answer
    app_hash: str | None
    catching_up: bool | None
    ipfs_pid: int | None = None
    worker_pid: int | None = None


# --- create ------------------------------------------------------------------


def _init_ipfs(nodes: list[Node], base_port: int | None) -> None:
    """One Kubo repo per node, one private swarm: shared fresh key, all peered."""
    from abci_app.ipfs import node as kubo

    swarm_key = kubo.generate_swarm_key()
    taken = {port for n in nodes for port in (n.p2p_port, n.rpc_port, n.app_port)}
    for node, (api, gateway, swarm) in zip(nodes, allocate_ipfs_ports(len(nodes), base_port, taken)):
        node.ipfs_api_port, node.ipfs_gateway_port, node.ipfs_swarm_port = api, gateway, swarm
        node.ipfs_peer_id = kubo.init_node(node.ipfs_repo, api, gateway, swarm, swarm_key)
    for node in nodes:
        kubo.set_peering(node.ipfs_repo, [(o.ipfs_peer_id, kubo.swarm_multiaddr(o.ipfs_swarm_port)) for o in nodes if o is not node])


def create(
    root: Path,
    validators: int = 4,
    chain_id: str = DEFAULT_CHAIN_ID,
    app_state: dict | None = None,
    base_port: int | None = None,
    keyring_home: Path | None = None,
    dev_accounts: int = 4,
    app: str = APP_GRADCHAIN,
    app_cmd: list[str] | None = None,
    ipfs: bool = False,
    genesis_model: Path | None = None,
    corpus: Path | None = None,
    workers: bool = False,
    empty_blocks_interval: str = "0s",
    genesis_model_metrics: dict[str, int] | None = None,
) -> Network:
    """Write a new network under `root` (which must not hold one) and return it, not started.

    Dev keys `dev0..`, `faucet` and (for our app) the validators' operator keys
    `validator0..` go into the keyring at `keyring_home` (default: `root`) as
    plain `test`-backend keys (never let them guard real value), reusing keys
    of those names that already exist there; all are funded.
    For our app each CometBFT validator is also a staking genesis validator
    bonded by its operator, unless `app_state` lists staking validators itself.
    `app_cmd` overrides how the app is run; `{home}`, `{addr}` and `{python}` are filled in.

    With `ipfs`, every validator gets a Kubo node in one private swarm (a fresh
    swarm key, peering with each other, loopback only). `corpus` and
    `genesis_model` are registered in genesis as dataset 0 and model version 0
    (CIDs computed locally, so genesis is written before any daemon runs) and
    published to every Kubo node when the network starts; `genesis_model_metrics`
    (`genesis_metrics()`) become version 0's metrics. With `workers`, each
    validator also runs `gradchain validate` with its operator key.
    """
    root = Path(root).resolve()
    if (root / NETWORK_FILE).exists():
        raise LocalnetError(f"a localnet already exists in {root}; reset it first (`gradchain localnet reset`)")
    if app not in (APP_GRADCHAIN, APP_KVSTORE):
        raise LocalnetError(f"unknown app '{app}': use '{APP_GRADCHAIN}' or '{APP_KVSTORE}'")
    if validators < 1:
        raise LocalnetError("a localnet needs at least one validator")
    created_root = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        run_cometbft("testnet", "--v", str(validators), "--o", str(root), "--populate-persistent-peers=false")
        nodes = []
        for i, (p2p, rpc, app_port) in enumerate(allocate_ports(validators, base_port)):
            home = root / f"node{i}"
            nodes.append(Node(i, home, run_cometbft("show-node-id", "--home", str(home)), p2p, rpc, app_port))

        keyring = dev_keyring(Path(keyring_home or root), pin=keyring_home is None or Path(keyring_home).resolve() == root)
        genesis = json.loads((nodes[0].home / "config" / "genesis.json").read_text())
        names = [(f"dev{i}", DEV_BALANCE) for i in range(dev_accounts)] + [(FAUCET_KEY, FAUCET_BALANCE)]
        if app == APP_GRADCHAIN:  # our staking module drives the validator set: each validator needs a bonded operator
            names += [(f"validator{i}", DEV_BALANCE) for i in range(validators)]
        funded = []
        for name, amount in names:
            key = keyring.get(name) if name in keyring.names() else keyring.add(name)
            funded.append((Account(name, key.address), amount))
        stakers = []
        if app == APP_GRADCHAIN:
            self_bond, power = genesis_self_bond(app_state)
            for i, validator in enumerate(genesis["validators"]):
                validator["power"] = str(power)
                operator = next(a for a, _ in funded if a.name == f"validator{i}")
                stakers.append(Staker(operator.address, validator["pub_key"]["value"], f"node{i}", self_bond))

        if ipfs:
            _init_ipfs(nodes, base_port)
        content = register_genesis_content(root, app_state, genesis_model, corpus, genesis_model_metrics)
        app_state = content.app_state
        genesis["chain_id"] = chain_id
        genesis["app_state"] = genesis_app_state(app_state, funded, stakers)
        if app == APP_GRADCHAIN:
            genesis.setdefault("consensus_params", {})["evidence"] = evidence_params(genesis["app_state"], genesis.get("consensus_params", {}).get("evidence"))
        genesis_text = json.dumps(genesis, indent=2) + "\n"
        for node in nodes:
            (node.home / "config" / "genesis.json").write_text(genesis_text)
            config = node.home / "config" / "config.toml"
            config.write_text(set_toml_values(config.read_text(), node_config(node, nodes, app, empty_blocks_interval)))
            node.app_home.mkdir(exist_ok=True)

        network = Network(
            root=root,
            chain_id=chain_id,
            app=app,
            app_cmd=app_cmd or default_app_cmd(),
            nodes=nodes,
            keyring_home=Path(keyring_home or root).resolve(),
            accounts=[a for a, _ in funded],
            genesis_files=[str(f) for f in content.files],
            workers=workers,
        )
        network.save()
        return network
    except BaseException:
        if created_root:
            shutil.rmtree(root, ignore_errors=True)
        raise


def dev_keyring(home: Path, pin: bool = True) -> Keyring:
    """A keyring for dev keys: `test` backend (plain files, no prompts); `pin` marks the dir so every tool picks it.

    Only a keyring the localnet owns is pinned: one elsewhere keeps its backend for the keys a user adds later.
    """
    keyring = Keyring(home, backend=TEST_BACKEND)
    if pin:
        keyring.pin_backend()
    return keyring


def default_app_cmd() -> list[str]:
    return ["{python}", "-m", "abci_app", "--home", "{home}", "--addr", "{addr}"]


def load(root: Path) -> Network:
    """The network saved under `root`; LocalnetError if there is none."""
    path = Path(root) / NETWORK_FILE
    if not path.exists():
        raise LocalnetError(f"no localnet in {root} (start one with `make localnet`)")
    try:
        data = json.loads(path.read_text())
        return Network(
            root=Path(data["root"]),
            chain_id=data["chain_id"],
            app=data["app"],
            app_cmd=data["app_cmd"],
            nodes=[Node(**{**n, "home": Path(n["home"])}) for n in data["nodes"]],
            keyring_home=Path(data["keyring_home"]),
            accounts=[Account(**a) for a in data["accounts"]],
            genesis_files=data.get("genesis_files", []),
            workers=data.get("workers", False),
            explorer_port=data.get("explorer_port", 0),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalnetError(f"{path} is unreadable ({exc}); remove the localnet with `gradchain localnet reset`") from None


# --- the network -------------------------------------------------------------


@dataclass
class Network:
    root: Path
    chain_id: str
    app: str
    app_cmd: list[str]
    nodes: list[Node]
    keyring_home: Path
    accounts: list[Account]
    genesis_files: list[str] = field(default_factory=list)
    workers: bool = False
    explorer_port: int = 0  # 0: no explorer; else `gradchain explorer` of node 0 serves on this port
    _children: dict[tuple[int, str], supervisor.Child] = field(default_factory=dict, repr=False, compare=False)

    def save(self) -> None:
        data = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        data["nodes"] = [asdict(n) for n in self.nodes]
        data["accounts"] = [asdict(a) for a in self.accounts]
        (self.root / NETWORK_FILE).write_text(json.dumps(data, indent=2, default=str) + "\n")

    # --- lookups -------------------------------------------------------------

    def rpc_url(self, i: int) -> str:
        return self.nodes[i].rpc_url

    @property
    def explorer_url(self) -> str:
        return f"http://127.0.0.1:{self.explorer_port}" if self.explorer_port else ""

    def client(self, i: int, timeout: float = 10.0) -> RpcClient:
        return RpcClient(self.rpc_url(i), timeout=timeout)

    def account(self, name: str) -> Account:
        for account in self.accounts:
            if account.name == name:
                return account
        raise LocalnetError(f"no account '{name}' in this localnet")

    @property
    def has_app_process(self) -> bool:
        return self.app != APP_KVSTORE

    @property
    def has_ipfs(self) -> bool:
        return any(node.ipfs_api_port for node in self.nodes)

    def pid(self, i: int, kind: str) -> int | None:
        """The pid of node i's `kind` ("app", "cometbft", "ipfs", "worker" or, node 0's, "explorer") process if it runs, else None."""
        return self._child(i, kind).pid

    def _child(self, i: int, kind: str) -> supervisor.Child:
        """Node i's `kind` process: the one this Python process started, else the one its pid file names."""
        child = self._children.get((i, kind))
        if child is None:
            node = self.nodes[i]
            child = supervisor.Child(f"node{i} {kind}", node.log_path(kind), node.pid_path(kind), self._marker(i, kind))
        return child

    def _marker(self, i: int, kind: str) -> str:
        """The path in the argv of node i's `kind` process: a reused pid of some other program does not carry it."""
        node = self.nodes[i]
        return str({"app": node.app_home, "cometbft": node.home, "ipfs": node.ipfs_repo, "worker": node.worker_home,
                    "explorer": node.explorer_home}[kind])

    def is_running(self) -> bool:
        """Every process of every node is alive."""
        return all(self.pid(i, "cometbft") and (not self.has_app_process or self.pid(i, "app")) for i in range(len(self.nodes)))

    def any_running(self) -> bool:
        return any(self.pid(i, kind) for i in range(len(self.nodes)) for kind in ("app", "cometbft"))

    # --- start / stop --------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every process that is not running: all apps, then all nodes (each batch in parallel)."""
        everyone = range(len(self.nodes))
        if self.keyring_home == self.root:  # localnets made before the encrypted keyring lack the marker; workers need it
            dev_keyring(self.keyring_home)
        try:
            if self.has_ipfs:
                self._wait_all([i for i in everyone if self._spawn_ipfs(i)], "ipfs", timeout)
                self._connect_swarm()
                self._publish_genesis()
            if self.has_app_process:
                self._wait_all([i for i in everyone if self._spawn_app(i)], "app", timeout)
            self._wait_all([i for i in everyone if self._spawnrun_cometbft(i)], "cometbft", timeout)
            if self.workers:
                for i in everyone:
                    self._spawn_worker(i)
            self.start_explorer(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the explorer and workers, then nodes, then apps (a node whose app vanishes first logs a crash), then IPFS."""
        self._terminate(0, "explorer")
        for kind in ("worker", "cometbft", "app", "ipfs"):
            for i in range(len(self.nodes)):
                self._terminate(i, kind)

    def start_node(self, i: int, timeout: float = START_TIMEOUT) -> None:
        """Start validator i: its app if needed, then its CometBFT node."""
        self.start_app(i, timeout)
        if self._spawnrun_cometbft(i):
            self._wait_all([i], "cometbft", timeout)

    def stop_node(self, i: int, app: bool = True) -> None:
        """Stop validator i's CometBFT node and (by default) its app."""
        self._terminate(i, "cometbft")
        if app:
            self._terminate(i, "app")

    def start_app(self, i: int, timeout: float = START_TIMEOUT) -> None:
        """Start validator i's app unless it runs (no-op for the built-in app)."""
        if self._spawn_app(i):
            self._wait_all([i], "app", timeout)

    def kill_app(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to validator i's app (SIGKILL: a crash, no chance to clean up)."""
        app = self._child(i, "app")
        try:
            app.send_signal(sig)
        except ProcessLookupError:
            raise LocalnetError(f"node{i}'s app is not running") from None
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            app.wait_gone(STOP_TIMEOUT)

    def _spawn_app(self, i: int) -> bool:
        """Launch validator i's app if it has one and it is not running; True if launched."""
        if not self.has_app_process or self.pid(i, "app"):
            return False
        node = self.nodes[i]
        self._check_ports_free(i, [("app", node.app_port)])
        fill = {"python": sys.executable, "home": str(node.app_home), "addr": f"tcp://127.0.0.1:{node.app_port}"}
        argv = [part.format(**fill) for part in self.app_cmd]
        node.app_home.mkdir(parents=True, exist_ok=True)
        self._spawn(i, "app", argv, commands.child_env())
        return True

    def _spawn_ipfs(self, i: int) -> bool:
        from abci_app.ipfs import node as kubo

        node = self.nodes[i]
        if not node.ipfs_api_port or self.pid(i, "ipfs"):
            return False
        self._check_ports_free(i, [("ipfs api", node.ipfs_api_port), ("ipfs swarm", node.ipfs_swarm_port)])
        self._children[(i, "ipfs")] = kubo.spawn_daemon(node.ipfs_repo, node.log_path("ipfs"), node.pid_path("ipfs"), name=f"node{i} ipfs", cwd=node.home)
        return True

    def _connect_swarm(self) -> None:
        """Dial every peer now: Kubo's Peering retries a failed first dial only after seconds."""
        from abci_app.ipfs import node as kubo
        from abci_app.ipfs.client import IpfsClient, IpfsError

        with_ipfs = [node for node in self.nodes if node.ipfs_api_port]
        for node in with_ipfs:
            with IpfsClient(node.ipfs_url) as client:
                for other in with_ipfs:
                    if other is not node:
                        try:
                            client.swarm_connect(f"{kubo.swarm_multiaddr(other.ipfs_swarm_port)}/p2p/{other.ipfs_peer_id}")
                        except IpfsError:
                            pass  # Peering keeps retrying in the background

    def _publish_genesis(self) -> None:
        """Every Kubo node adds (and pins) the genesis model and corpus from disk: 4 replicas from the start."""
        from abci_app.ipfs.client import IpfsClient

        for node in (n for n in self.nodes if n.ipfs_api_port):
            with IpfsClient(node.ipfs_url, timeout=120) as client:
                for path in self.genesis_files:
                    client.add(Path(path))

    def _spawn_worker(self, i: int) -> bool:
        """Validator i's `gradchain validate` daemon, signing with its operator key."""
        node = self.nodes[i]
        if self.pid(i, "worker") or not node.ipfs_api_port or not any(a.name == f"validator{i}" for a in self.accounts):
            return False  # a node added later (add_node) has no Kubo node and no operator key of ours
        node.worker_home.mkdir(parents=True, exist_ok=True)
        argv = commands.worker_argv("validate", f"validator{i}", self.keyring_home, node.worker_home, node.rpc_url, node.ipfs_url)
        env = commands.child_env()
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # four workers share the cores: no OpenMP spin-waiting (same bits, measured)
        self._spawn(i, "worker", argv, env)
        return True

    def start_explorer(self, timeout: float = START_TIMEOUT) -> None:
        """Serve `gradchain explorer` of node 0 on explorer_port unless it runs (no-op without a port, an app or IPFS).
        A port another program took meanwhile is swapped for a free one (saved, so `localnet start` prints it)."""
        node = self.nodes[0]
        if not self.explorer_port or not self.has_app_process or not node.ipfs_api_port or self.pid(0, "explorer"):
            return
        if port_in_use(self.explorer_port):
            self.explorer_port = free_ports(1)[0]
            self.save()
        node.explorer_home.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "abci_app.cli", "explorer", "--node", node.rpc_url, "--ipfs", node.ipfs_url,
                "--port", str(self.explorer_port), "--home", str(node.explorer_home)]
        env = commands.child_env()
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # its chat shares the cores with the workers
        self._spawn(0, "explorer", argv, env)
        self._wait_all([0], "explorer", timeout)

    def _spawnrun_cometbft(self, i: int) -> bool:
        if self.pid(i, "cometbft"):
            return False
        node = self.nodes[i]
        self._check_ports_free(i, [("p2p", node.p2p_port), ("rpc", node.rpc_port)])
        if not COMETBFT.exists():
            raise LocalnetError(f"CometBFT binary not found at {COMETBFT}: run `make install-go`")
        self._spawn(i, "cometbft", commands.cometbft_argv(node.home), dict(os.environ))
        return True

    def _spawn(self, i: int, kind: str, argv: list[str], env: dict[str, str]) -> None:
        node = self.nodes[i]
        self._children[(i, kind)] = supervisor.spawn(f"node{i} {kind}", argv, env, node.log_path(kind), node.pid_path(kind),
                                                     marker=self._marker(i, kind), cwd=node.home)

    def _ready(self, i: int, kind: str) -> bool:
        node = self.nodes[i]
        if kind == "app":
            return supervisor.port_listening(node.app_port)
        if kind == "explorer":
            return supervisor.port_listening(self.explorer_port)
        if kind == "ipfs":
            from abci_app.ipfs import node as kubo

            return kubo.answers(node.ipfs_url, node.ipfs_peer_id)
        try:
            with RpcClient(node.rpc_url, timeout=2.0) as c:
                c.status()
            return True
        except RpcError:
            return False

    def _check_ports_free(self, i: int, ports: list[tuple[str, int]]) -> None:
        for name, port in ports:
            if port_in_use(port):
                raise LocalnetError(f"port {port} (node{i} {name}) is in use by another program; stop it, or `gradchain localnet reset` and start again")

    def _wait_all(self, indices: list[int], kind: str, timeout: float) -> None:
        """Wait until each listed node's `kind` process serves; raise with its log tail if it dies or hangs."""
        children = {i: self._child(i, kind) for i in indices}
        try:
            supervisor.wait_all_ready([(child, lambda i=i: self._ready(i, kind)) for i, child in children.items()], timeout)
        except supervisor.ChildExited as exc:
            message = str(exc)
            i = next(i for i, child in children.items() if child is exc.child)
            if kind == "cometbft" and self.has_app_process and not self.pid(i, "app"):
                app_log = self.nodes[i].log_path("app")
                message += f"\nits app died too; last lines of {app_log}:\n{supervisor.log_tail(app_log)}"
            raise LocalnetError(message) from None
        except supervisor.ChildNotReady as exc:
            raise LocalnetError(str(exc)) from None

    def _terminate(self, i: int, kind: str) -> None:
        self._child(i, kind).terminate(STOP_TIMEOUT)
        self._children.pop((i, kind), None)

    # --- observe -------------------------------------------------------------

    def node_status(self, i: int) -> NodeStatus:
        node = self.nodes[i]
        height = app_hash = catching_up = None
        node_pid = self.pid(i, "cometbft")
        if node_pid:
            try:
                with RpcClient(node.rpc_url, timeout=2.0) as c:
                    sync = c.status()["sync_info"]
                height, app_hash, catching_up = int(sync["latest_block_height"]), sync["latest_app_hash"], bool(sync["catching_up"])
            except (RpcError, KeyError, ValueError):
                pass
        app_pid = self.pid(i, "app") if self.has_app_process else None
        return NodeStatus(
            i, node.rpc_url, app_pid, bool(app_pid), node_pid, bool(node_pid), height, app_hash, catching_up,
            self.pid(i, "ipfs") if node.ipfs_api_port else None, self.pid(i, "worker") if self.workers else None,
        )

    def status(self) -> list[NodeStatus]:
        return [self.node_status(i) for i in range(len(self.nodes))]

    def _not_running(self, i: int) -> LocalnetError:
        log = self.nodes[i].log_path("cometbft")
        return LocalnetError(f"node{i} is not running; last lines of {log}:\n{supervisor.log_tail(log)}")

    def wait_for_blocks(self, height: int, nodes: list[int] | None = None, timeout: float = 60.0) -> None:
        """Wait until each of `nodes` (default: all) has committed `height`; raise if one of them dies."""
        pending = set(range(len(self.nodes)) if nodes is None else nodes)
        deadline = time.monotonic() + timeout
        while pending:
            for i in sorted(pending):
                if not self.pid(i, "cometbft"):
                    raise self._not_running(i)
                status = self.node_status(i)
                if status.height is not None and status.height >= height:
                    pending.discard(i)
            if not pending:
                return
            if time.monotonic() > deadline:
                heights = {f"node{i}": self.node_status(i).height for i in sorted(pending)}
                raise LocalnetError(f"height {height} not reached within {timeout:.0f}s: {heights}")
            time.sleep(0.2)

    # --- joining: one more node after genesis ----------------------------------
    # Appended for the staking e2e tests and `gradchain localnet add-node`: a
    # full node that syncs the chain and can then bond itself in as a validator.

    # config.toml options that differ between nodes; a joining node takes every other one from node 0
    JOIN_NODE_OPTIONS = (("", "proxy_app"), ("", "moniker"), ("rpc", "laddr"), ("rpc", "pprof_laddr"), ("p2p", "laddr"), ("p2p", "persistent_peers"))

    def add_node(self, timeout: float = 120.0) -> Node:
        """Create, record, start and sync one more node; a full node, not a validator until it bonds.

        Its home is ROOT/nodeN (N: the next index), written by `cometbft init`
        (its own node and consensus keys), with the network's genesis.json and
        node 0's config.toml, rewritten for its own ports and moniker and the
        existing nodes as persistent peers. With a fixed base port it takes the
        next slot (base + 10*N ...) if free, else free ports. It is saved in
        network.json before it starts, so `stop`, `status` and `start` include
        it. Returns once it has the others' height and is not catching up;
        LocalnetError (its processes stopped, its log tail in the message) if
        it cannot start or sync within `timeout` seconds. It becomes a validator
        by a tx: `gradchain tx staking create-validator KEY --pubkey-from-home <its home> --amount ...`.
        """
        if not self.nodes:
            raise LocalnetError("this localnet has no nodes to join")
        if not any(self.pid(i, "cometbft") for i in range(len(self.nodes))):
            raise LocalnetError("the localnet is not running: start it first (`gradchain localnet start`), then add a node")
        index = len(self.nodes)
        home = self.root / f"node{index}"
        if home.exists():
            raise LocalnetError(f"{home} already exists but is not in {self.root / NETWORK_FILE}; remove it first")
        p2p, rpc, app_port = self._join_ports(index)
        try:
            run_cometbft("init", "--home", str(home))
            node = Node(index=index, home=home, node_id=run_cometbft("show-node-id", "--home", str(home)), p2p_port=p2p, rpc_port=rpc, app_port=app_port)
            shutil.copyfile(self.nodes[0].home / "config" / "genesis.json", home / "config" / "genesis.json")
            wanted = node_config(node, self.nodes, self.app)
            values = {key: wanted[key] for key in self.JOIN_NODE_OPTIONS}
            template = (self.nodes[0].home / "config" / "config.toml").read_text()
            (home / "config" / "config.toml").write_text(set_toml_values(template, values))
            node.app_home.mkdir(exist_ok=True)
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
        self.nodes.append(node)
        self.save()
        try:
            self.start_node(index)
            self.wait_synced(index, timeout=timeout)
        except BaseException:
            self.stop_node(index)
            raise
        return node

    def _join_ports(self, index: int) -> tuple[int, int, int]:
        """(p2p, rpc, app) for node `index`: the next fixed slot if the network uses one and it is free, else free ports."""
        first = self.nodes[0]
        base = first.p2p_port - PORT_STRIDE * first.index
        fixed = all(n.p2p_port == base + PORT_STRIDE * n.index and n.rpc_port == n.p2p_port + 1 and n.app_port == n.p2p_port + 2 for n in self.nodes)
        slot = (base + PORT_STRIDE * index, base + PORT_STRIDE * index + 1, base + PORT_STRIDE * index + 2)
        if fixed and slot[-1] <= 65535 and not any(port_in_use(p) for p in slot):
            return slot
        taken = {v for n in self.nodes for k, v in asdict(n).items() if k.endswith("_port") and isinstance(v, int)}
        for _ in range(10):  # the network's own ports may be free right now (a stopped node): never hand those out
            ports = free_ports(3)
            if not taken.intersection(ports):
                return ports[0], ports[1], ports[2]
        raise LocalnetError("found no free ports for a new node")

    def wait_synced(self, i: int, timeout: float = 120.0) -> int:
        """Wait until node i has the height of the highest other node and is not catching up; returns its height."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.pid(i, "cometbft"):
                raise self._not_running(i)
            others = [self.node_status(j).height for j in range(len(self.nodes)) if j != i]
            target = max((h for h in others if h is not None), default=0)
            mine = self.node_status(i)  # after the others: a chain that moves on cannot leave it behind by our own delay
            if mine.height is not None and mine.height >= target and mine.catching_up is False:
                return mine.height
            if time.monotonic() > deadline:
                log = self.nodes[i].log_path("cometbft")
                raise LocalnetError(
                    f"node{i} did not sync within {timeout:.0f}s (height {mine.height}, catching up {mine.catching_up}, others at {target}); "
                    f"last lines of {log}:\n{supervisor.log_tail(log)}"
                )
            time.sleep(0.3)

    def consensus_pubkey(self, i: int) -> str:
        """Node i's ed25519 consensus pubkey, base64, from its config/priv_validator_key.json."""
        path = self.nodes[i].home / "config" / "priv_validator_key.json"
        try:
            return json.loads(path.read_text())["pub_key"]["value"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LocalnetError(f"cannot read node{i}'s consensus key from {path}: {exc}") from None
