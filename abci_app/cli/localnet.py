"""`gradchain localnet`: 4 validators on loopback for development (`make localnet`).

The network lives in `<repo>/.localnet` (or $GRADCHAIN_LOCALNET_DIR); its
processes keep running after the command returns, until `localnet stop`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import click

from abci_app import localnet as ln

LOCALNET_DIR_ENV = "GRADCHAIN_LOCALNET_DIR"


def localnet_dir() -> Path:
    return Path(os.environ.get(LOCALNET_DIR_ENV) or ln.REPO_ROOT / ".localnet").expanduser().resolve()


def _load(root: Path) -> ln.Network:
    try:
        return ln.load(root)
    except ln.LocalnetError as exc:
        raise click.ClickException(str(exc)) from None


def _endpoints(net: ln.Network) -> str:
    dev = [a for a in net.accounts if a.name.startswith("dev")]
    lines = [f"localnet '{net.chain_id}' in {net.root}: {len(net.nodes)} validators ({net.app} app)"]
    for node in net.nodes:
        app = f"app {node.app_port}  logs {node.home}/{{cometbft,app}}.log" if net.has_app_process else f"logs {node.home}/cometbft.log"
        lines.append(f"  node{node.index}  rpc {node.rpc_url}  p2p {node.p2p_port}  {app}")
    lines.append(f"keyring home: {net.keyring_home}  (keys: {', '.join(a.name for a in net.accounts)})")
    if len(dev) >= 2:
        other = net.rpc_url(1 % len(net.nodes))
        lines += [
            "try:",
            f"  gradchain tx bank send {dev[0].name} {dev[1].address} 1000 --yes --home {net.keyring_home} --node {net.rpc_url(0)}",
            f"  gradchain query bank balance {dev[1].address} --node {other}",
            f"  gradchain status --node {net.rpc_url(0)}",
        ]
    lines.append("status: make localnet-status   stop: make localnet-stop   wipe: make localnet-reset")
    return "\n".join(lines)


@click.group()
def localnet() -> None:
    """Run a 4-validator network on this machine (loopback only)."""


@localnet.command()
@click.option("--validators", type=click.IntRange(1, 16), default=4, show_default=True, help="Validators, when creating a new localnet.")
@click.option("--base-port", type=int, default=ln.DEFAULT_BASE_PORT, show_default=True, help="node i uses base+10i (p2p), +1 (rpc), +2 (app).")
@click.option("--app", type=click.Choice([ln.APP_GRADCHAIN, ln.APP_KVSTORE]), default=ln.APP_GRADCHAIN, show_default=True,
              help="ABCI app: ours, or CometBFT's built-in kvstore (to debug the network itself).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for the first blocks.")
def start(validators: int, base_port: int, app: str, timeout: float) -> None:
    """Create the localnet if needed, start whatever is stopped, wait for blocks.

    \b
    Example:
      $ gradchain localnet start
    """
    root = localnet_dir()
    try:
        if (root / ln.NETWORK_FILE).exists():
            net = ln.load(root)
            if net.is_running():
                click.echo("localnet is already running")
                click.echo(_endpoints(net))
                return
            state = "some of its processes are down; restarting them" if net.any_running() else "it is stopped; starting it"
            click.echo(f"localnet in {root}: {state} ...")
        else:
            click.echo(f"creating a {validators}-validator localnet in {root} ...")
            net = ln.create(root, validators=validators, base_port=base_port, app=app, dev_accounts=4)
        net.start()
        try:
            net.wait_for_blocks(1, timeout=timeout)
        except ln.LocalnetError:
            net.stop()
            raise
    except ln.LocalnetError as exc:
        raise click.ClickException(str(exc)) from None
    height = max((s.height or 0) for s in net.status())
    click.echo(f"blocks are being produced (height {height}; new blocks come with transactions)")
    click.echo(_endpoints(net))


@localnet.command()
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output format.")
def status(output: str) -> None:
    """Per node: are its processes alive, its height and app hash.

    \b
    Example:
      $ gradchain localnet status -o json
    """
    net = _load(localnet_dir())
    rows = net.status()
    if output == "json":
        click.echo(json.dumps({"root": str(net.root), "chain_id": net.chain_id, "nodes": [asdict(r) for r in rows]}))
        return
    click.echo(f"localnet '{net.chain_id}' in {net.root}")
    click.echo(f"{'node':<6} {'rpc':<24} {'app pid':<9} {'node pid':<9} {'height':>7}  app hash")
    for r in rows:
        app_pid = "-" if not net.has_app_process else (str(r.app_pid) if r.app_alive else "dead")
        node_pid = str(r.node_pid) if r.node_alive else "dead"
        height = "-" if r.height is None else str(r.height)
        click.echo(f"node{r.index:<2} {r.rpc_url:<24} {app_pid:<9} {node_pid:<9} {height:>7}  {r.app_hash or '-'}")


@localnet.command()
def stop() -> None:
    """Stop every node and app (state is kept; `start` resumes).

    \b
    Example:
      $ gradchain localnet stop
    """
    root = localnet_dir()
    if not (root / ln.NETWORK_FILE).exists():
        click.echo(f"no localnet in {root}; nothing to stop")
        return
    _load(root).stop()
    click.echo(f"localnet in {root} stopped")


@localnet.command()
def reset() -> None:
    """Stop the localnet and delete it, keys and chain data included.

    \b
    Example:
      $ gradchain localnet reset
    """
    root = localnet_dir()
    if not root.exists():
        click.echo(f"no localnet in {root}; nothing to reset")
        return
    if not (root / ln.NETWORK_FILE).exists():
        raise click.ClickException(f"{root} holds no localnet (no {ln.NETWORK_FILE}); not deleting it, remove it yourself if you mean to")
    net = _load(root)
    net.stop()
    shutil.rmtree(root)
    click.echo(f"localnet in {root} stopped and deleted")
