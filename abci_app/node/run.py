"""`gradchain node start`, `node status` and `node systemd`: one node's processes under one supervisor.

    app       python -m abci_app (ABCI socket, metrics port)
    cometbft  cometbft start --home HOME           after the app: it exits when its app dies
    ipfs      ipfs daemon on HOME/ipfs             (unless --no-ipfs)
    pins      gradchain node pin-sync              with Kubo: pins every file the chain uses (abci_app.node.pins)
    worker    gradchain validate|train --key KEY   (with --validate/--train), after CometBFT and Kubo
The child commands (abci_app.node.commands) are the ones the localnet's nodes run.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from abci_app import supervisor
from abci_app.localnet.config import COMETBFT, REPO_ROOT
from abci_app.node.commands import PIN_SYNC, app_argv, child_env, cometbft_argv, pins_argv, worker_argv
from abci_app.node.home import Layout, NodeError, Settings, host_port, load_settings
from abci_app.rpc import RpcClient, RpcError

SUPERVISOR_PID = "supervisor.pid"
START_TIMEOUT = 120.0  # seconds a child gets to serve before it counts as crashed (CometBFT replays blocks at start)


# --- readiness ------------------------------------------------------------------------


def rpc_answers(url: str) -> bool:
    try:
        with RpcClient(url, timeout=2.0) as client:
            client.status()
        return True
    except RpcError:
        return False


def child_specs(home: Path, settings: Settings, *, ipfs: bool = True, worker: tuple[str, str] | None = None,
                worker_flags: list[str] = ()) -> list[supervisor.ChildSpec]:
    """What `node start` supervises, in start order. `worker` is ("validate"|"train", KEY)."""
    layout = Layout(home)
    if not COMETBFT.exists():
        raise NodeError(f"CometBFT binary not found at {COMETBFT}: run `make install-go`")
    layout.logs.mkdir(parents=True, exist_ok=True)
    _, app_port = host_port(settings.app, "app")

    def spec(name: str, argv: list[str], env, ready: Callable[[], bool], marker: str, after: tuple[str, ...] = ()) -> supervisor.ChildSpec:
        return supervisor.ChildSpec(name, argv, env, layout.log(name), layout.pid(name), ready, marker=marker, after=after, cwd=home)

    specs = []
    if ipfs:
        from abci_app.ipfs import node as kubo

        peer = kubo.peer_id(layout.ipfs_repo)
        specs.append(spec("ipfs", kubo.daemon_argv(layout.ipfs_repo), kubo._ipfs_env(layout.ipfs_repo),
                          lambda: kubo.answers(settings.ipfs_url, peer), str(layout.ipfs_repo)))
    app = app_argv(layout.app_home, settings.app_addr, settings.metrics, settings.ipfs_url if ipfs else None, settings.app_args)
    specs.append(spec("app", app, child_env(), lambda: supervisor.port_listening(app_port), str(layout.app_home)))
    specs.append(spec("cometbft", cometbft_argv(home), dict(os.environ), lambda: rpc_answers(settings.rpc_url), str(home), after=("app",)))
    if ipfs:
        specs.append(spec("pins", pins_argv(home), child_env(), lambda: True, PIN_SYNC, after=("cometbft", "ipfs")))
    if worker is not None:
        if not ipfs:
            raise NodeError("a worker fetches checkpoints and deltas over IPFS: drop --no-ipfs")
        kind, key = worker
        argv = worker_argv(kind, key, home, layout.worker_home, settings.rpc_url, settings.ipfs_url, ["--metrics", settings.worker_metrics, *worker_flags])
        specs.append(spec("worker", argv, child_env() | {"OMP_WAIT_POLICY": "PASSIVE"}, lambda: True, str(layout.worker_home), after=("cometbft", "ipfs")))
    return specs


# --- start ------------------------------------------------------------------------------


def _running_supervisor(home: Path) -> int | None:
    pid_path = Layout(home).logs / SUPERVISOR_PID
    try:
        pid = int(pid_path.read_text())
    except (OSError, ValueError):
        return None
    argv = supervisor.proc_argv(pid)
    # the pid file is removed when the supervisor exits; a reused pid would not be running `node start`
    return pid if argv is not None and pid != os.getpid() and "node" in argv and "start" in argv else None


def start(home: Path, *, ipfs: bool = True, worker: tuple[str, str] | None = None, worker_flags: list[str] = (),
          echo: Callable[[str], None] = print, backoff: supervisor.Backoff = supervisor.Backoff(),
          log_max_bytes: int = supervisor.LOG_MAX_BYTES) -> None:
    """Run the node in the foreground until SIGTERM/SIGINT; children crash and come back, the supervisor stays."""
    home = Path(home).resolve()
    settings = load_settings(home)
    layout = Layout(home)
    other = _running_supervisor(home)
    if other is not None:
        raise NodeError(f"this node already runs (supervisor pid {other}); stop it first (`kill {other}` or `systemctl stop`)")
    specs = child_specs(home, settings, ipfs=ipfs, worker=worker, worker_flags=worker_flags)
    for spec in specs:  # left over from a supervisor that was SIGKILLed: ours now, so stop them before starting fresh
        supervisor.Child(spec.name, spec.log_path, spec.pid_path, spec.marker or spec.argv[0]).terminate()
    pid_path = layout.logs / SUPERVISOR_PID
    pid_path.write_text(f"{os.getpid()}\n")
    try:
        supervisor.Supervisor(specs, status_path=layout.status, echo=echo, backoff=backoff, start_timeout=START_TIMEOUT,
                              log_max_bytes=log_max_bytes).run()
    finally:
        pid_path.unlink(missing_ok=True)


# --- status -----------------------------------------------------------------------------


def status(home: Path) -> dict:
    """Each child (pid, up, restarts), the node's height, catching_up, peers and validator power from its RPC, and
    the pin sync's counts (None without Kubo or before its first pass)."""
    import json

    from abci_app.node import pins

    home = Path(home).resolve()
    settings = load_settings(home)
    layout = Layout(home)
    running = _running_supervisor(home)
    children = []
    try:
        recorded = json.loads(layout.status.read_text()).get("children", [])
    except (OSError, ValueError):
        recorded = []
    for entry in recorded:
        name = entry.get("name", "?")
        marker = {"app": str(layout.app_home), "cometbft": str(home), "ipfs": str(layout.ipfs_repo), "worker": str(layout.worker_home),
                  "pins": PIN_SYNC}.get(name, name)
        pid = supervisor.Child(name, layout.log(name), layout.pid(name), marker).pid
        children.append({"name": name, "pid": pid, "up": pid is not None, "state": entry.get("state") if running else "stopped",
                         "restarts": entry.get("restarts", 0)})
    result: dict = {"home": str(home), "moniker": settings.moniker, "supervisor_pid": running, "children": children,
                    "rpc": settings.rpc_url, "height": None, "catching_up": None, "peers": None, "voting_power": None,
                    "pins": pins.read_summary(home / pins.LEDGER_FILE)}
    try:
        with RpcClient(settings.rpc_url, timeout=3.0) as client:
            info = client.status()
            result["height"] = int(info["sync_info"]["latest_block_height"])
            result["catching_up"] = bool(info["sync_info"]["catching_up"])
            result["app_hash"] = info["sync_info"]["latest_app_hash"]
            result["node_id"] = info["node_info"]["id"]
            result["voting_power"] = int(info["validator_info"]["voting_power"])
            result["peers"] = int(client.call("net_info")["n_peers"])
    except (RpcError, KeyError, ValueError, TypeError):
        pass
    return result


# --- systemd ------------------------------------------------------------------------------


def systemd_unit(home: Path, user: str, start_args: list[str], description: str = "GradientChain node") -> str:
    """A unit file that runs `gradchain node start` for HOME; systemd restarts the supervisor itself if it dies."""
    exe = [sys.executable, "-m", "abci_app.cli", "node", "start", "--home", str(Path(home).resolve()), *start_args]
    return "\n".join([
        "[Unit]",
        f"Description={description} ({Path(home).resolve()})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"Environment=PYTHONPATH={REPO_ROOT}",
        f"ExecStart={shlex.join(exe)}",
        "KillSignal=SIGTERM",
        "KillMode=mixed",  # SIGTERM to the supervisor alone, which stops its children in order; SIGKILL to leftovers after the timeout
        "TimeoutStopSec=60",  # the supervisor stops its children in turn, each within supervisor.STOP_TIMEOUT
        "Restart=on-failure",
        "RestartSec=5",
        "LimitNOFILE=65536",  # CometBFT keeps a file per peer connection and many for its databases
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
