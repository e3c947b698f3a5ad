"""`gradchain node` (init, join, start, status, systemd) and `gradchain genesis` (add-account, gentx, collect, validate).

The operator's side of a network: abci_app.node does the work, these commands
parse flags and print. docs/operators.md walks through a 4-machine network.
"""

from __future__ import annotations

import functools
import getpass
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from abci_app.cli.common import AMOUNT, DENOM, Cli, CliError, shared_flags, signer_key
from abci_app.node import home as nodehome
from abci_app.node.home import NodeError, Settings


def _node_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Failures of the node machinery are the user's to act on: one `error:` line, as every CliError."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from abci_app.ipfs.client import IpfsError
        from abci_app.localnet.config import LocalnetError
        from abci_app.supervisor import SupervisorError

        try:
            return command(*args, **kwargs)
        except (NodeError, LocalnetError, IpfsError, SupervisorError) as exc:
            raise CliError(str(exc)) from None

    return wrapper


def _read_json_file(path: Path | None, what: str) -> dict | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(f"{what} {path} is not a JSON object")
    return data


# --- node ------------------------------------------------------------------------------


@click.group()
def node() -> None:
    """Run a node of a GradientChain network on this machine (see docs/operators.md)."""


@node.command("init")
@click.option("--moniker", required=True, help="This node's public name (1 to 64 printable ASCII characters).")
@click.option("--chain-id", default=nodehome.DEFAULT_CHAIN_ID, show_default=True, help="The network's chain id (a joining node takes the network's).")
@click.option("--listen", default=nodehome.DEFAULT_P2P, show_default=True, metavar="HOST:PORT", help="CometBFT p2p listen address.")
@click.option("--external", default="", metavar="HOST:PORT", help="The p2p address other nodes dial (public IP or DNS name) [default: --listen].")
@click.option("--rpc", default=nodehome.DEFAULT_RPC, show_default=True, metavar="HOST:PORT", help="CometBFT RPC listen address (keep it private, or behind a proxy).")
@click.option("--app", "app_addr", default=nodehome.DEFAULT_APP, show_default=True, metavar="HOST:PORT", help="The app's ABCI socket (CometBFT connects to it).")
@click.option("--prometheus", default=nodehome.DEFAULT_PROMETHEUS, show_default=True, metavar="HOST:PORT", help="CometBFT's Prometheus metrics.")
@click.option("--metrics", default=nodehome.DEFAULT_METRICS, show_default=True, metavar="HOST:PORT", help="The app's Prometheus metrics.")
@click.option("--worker-metrics", default=nodehome.DEFAULT_WORKER_METRICS, show_default=True, metavar="HOST:PORT", help="The worker's Prometheus metrics.")
@click.option("--ipfs-api", default=nodehome.DEFAULT_IPFS_API, show_default=True, metavar="HOST:PORT", help="Kubo's API (private).")
@click.option("--ipfs-gateway", default=nodehome.DEFAULT_IPFS_GATEWAY, show_default=True, metavar="HOST:PORT", help="Kubo's gateway (private).")
@click.option("--ipfs-swarm", default=nodehome.DEFAULT_IPFS_SWARM, show_default=True, metavar="HOST:PORT", help="Kubo's swarm listen address (open to the network's peers).")
@click.option("--swarm-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The network's IPFS swarm key, received from its operators [default: a fresh one, for a new network].")
@click.option("--no-ipfs", is_flag=True, help="No Kubo repo: a full node that serves no files.")
@click.option("--app-state", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="JSON app_state for a new network's draft genesis (module params) [default: every module's defaults].")
@click.option("--private-network", is_flag=True, help="Peers on private or loopback addresses, several per IP (LANs, tests).")
@click.option("--app-arg", "app_args", multiple=True, metavar="FLAG",
              help="Extra flag for the app process, repeatable (write --app-arg=--flag); kept in HOME/node.json.")
@shared_flags(node=False)
@_node_errors
def init(cli: Cli, moniker: str, chain_id: str, listen: str, external: str, rpc: str, app_addr: str, prometheus: str, metrics: str,
         worker_metrics: str, ipfs_api: str, ipfs_gateway: str, ipfs_swarm: str, swarm_key: Path | None, no_ipfs: bool, app_state: Path | None,
         private_network: bool, app_args: tuple[str, ...]) -> None:
    """Create a node in --home: consensus and node keys, CometBFT config, app home, Kubo repo.

    Keep HOME/config/priv_validator_key.json and node_key.json safe and backed
    up: the first is the validator's identity (two nodes signing with it get
    slashed for double signing), the second the node's p2p identity.

    \b
    Example:
      $ gradchain node init --moniker alice --home ~/.gradchain --listen 0.0.0.0:26656 --external 203.0.113.7:26656
    """
    settings = Settings(moniker=moniker, chain_id=chain_id, p2p=listen, external=external, rpc=rpc, app=app_addr, prometheus=prometheus,
                        metrics=metrics, worker_metrics=worker_metrics, ipfs_api=ipfs_api, ipfs_gateway=ipfs_gateway, ipfs_swarm=ipfs_swarm, private_network=private_network,
                        app_args=list(app_args))
    info = nodehome.init(cli.home, settings, _read_json_file(app_state, "app state"), swarm_key.read_bytes() if swarm_key else None, ipfs=not no_ipfs)
    cli.emit(info, "\n".join(f"{key + ':':<17}{value}" for key, value in info.items()))
    click.echo(f"back up {cli.home / 'config'}/priv_validator_key.json and node_key.json; never run two nodes with the same validator key", err=True)


@node.command("join")
@click.option("--peer", required=True, metavar="RPC_URL", help="A running node's RPC, e.g. http://203.0.113.7:26657.")
@click.option("--genesis-sha256", default=None, metavar="HEX", help="The genesis digest the network published (`genesis validate` prints it).")
@click.option("--trust-height", type=click.IntRange(min=1), default=None, help="State sync trust height [default: the peer's latest].")
@click.option("--trust-hash", default=None, metavar="HEX", help="Block hash at --trust-height, checked out of band.")
@click.option("--trust-period", default="168h0m0s", show_default=True, help="How old a trusted header may be.")
@click.option("--rpc-server", "rpc_servers", multiple=True, metavar="URL", help="RPC for state sync's light client (twice or more) [default: --peer twice].")
@click.option("--no-state-sync", is_flag=True, help="Replay every block from genesis instead of restoring a snapshot.")
@click.option("--swarm-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The network's IPFS swarm key, received out of band from its operators.")
@click.option("--ipfs-peer", "ipfs_peers", multiple=True, metavar="PEERID@MULTIADDR", help="A Kubo node of the network to peer with (repeatable).")
@click.option("--gentx-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The network's published gentx files: their Kubo peers become this node's IPFS peers.")
@shared_flags(node=False)
@_node_errors
def join(cli: Cli, peer: str, genesis_sha256: str | None, trust_height: int | None, trust_hash: str | None, trust_period: str,
         rpc_servers: tuple[str, ...], no_state_sync: bool, swarm_key: Path | None, ipfs_peers: tuple[str, ...], gentx_dir: Path | None) -> None:
    """Configure the fresh node in --home to join the network that PEER runs: genesis, peers, state sync, IPFS swarm.

    Once started, the node's Kubo joins the network's private swarm (swarm key
    and peers given here) and pins every file the chain uses.

    \b
    Example:
      $ gradchain node init --moniker carol --swarm-key swarm.key --external 198.51.100.4:26656
      $ gradchain node join --peer http://203.0.113.7:26657 --genesis-sha256 3f2a... --gentx-dir gentxs/
      $ gradchain node start
    """
    from abci_app.node import join as joining

    for text in ipfs_peers:  # a malformed flag fails before anything is written
        joining.parse_ipfs_peer(text)
    if swarm_key is not None:
        nodehome.check_swarm_key(swarm_key.read_bytes())
    has_kubo = (nodehome.Layout(cli.home).ipfs_repo / "config").exists()
    if (swarm_key is not None or ipfs_peers or gentx_dir is not None) and not has_kubo:
        raise CliError(f"{cli.home} has no Kubo repo (made with --no-ipfs): --swarm-key, --ipfs-peer and --gentx-dir configure it")
    generated = nodehome.load_settings(cli.home).generated_swarm_key_sha256
    own_key = has_kubo and swarm_key is None and bool(generated) and nodehome.swarm_key_sha256(cli.home) == generated
    if own_key and (ipfs_peers or gentx_dir is not None):
        # A fresh key makes a swarm of one: every handshake with the network's Kubo nodes would fail, every fetch time out.
        raise CliError("this node's IPFS swarm key is the one `node init` made for a new network: pass the network's with --swarm-key FILE")
    result = joining.join(cli.home, peer, genesis_sha256=genesis_sha256, trust_height=trust_height, trust_hash=trust_hash,
                          rpc_servers=list(rpc_servers) or None, trust_period=trust_period, state_sync=not no_state_sync)
    ipfs = []
    if swarm_key is not None or ipfs_peers or gentx_dir is not None:
        try:
            ipfs = joining.configure_ipfs(cli.home, swarm_key.read_bytes() if swarm_key else None, list(ipfs_peers), gentx_dir,
                                          report=lambda line: click.echo(f"warning: {line}", err=True))
        except nodehome.NodeError as exc:
            raise CliError(f"{exc} (genesis and config are written; fix this and run `node join` again)") from None
    data = result.as_dict() | {"ipfs_peers": ipfs} | ({"swarm_key_sha256": nodehome.swarm_key_sha256(cli.home)} if has_kubo else {})
    cli.emit(data, "\n".join(f"{key + ':':<18}{value}" for key, value in data.items()))
    if has_kubo and not ipfs:
        click.echo("warning: no IPFS peers given (--ipfs-peer or --gentx-dir): this node's Kubo will find no one to fetch the chain's files from", err=True)
    if own_key:
        click.echo("warning: this node's IPFS swarm key was made by `node init` for a new network: to join this one's swarm, "
                   "rerun `node join` with --swarm-key FILE (the network's)", err=True)
    if not no_state_sync and not result.trust_checked:
        click.echo(joining.TRUST_WARNING.format(height=result.trust_height, hash=result.trust_hash, peer=peer), err=True)
    if genesis_sha256 is None:
        click.echo(f"warning: genesis sha256 {result.genesis_sha256} was not checked; compare it with the network's published digest", err=True)


def _worker(validate: bool, key: str | None, train: str | None) -> tuple[str, str] | None:
    if validate and train:
        raise CliError("--validate and --train are different workers: run one per node")
    if validate:
        if not key:
            raise CliError("--validate needs --key: the operator key that signs the worker's verdicts")
        return ("validate", key)
    return ("train", train) if train else None


def _child_options(command):
    """What `node start` runs besides the app and CometBFT; `node systemd` passes the same flags on to it."""
    for option in reversed([
        click.option("--validate", is_flag=True, help="Also run the validator worker (`gradchain validate`), signing with --key."),
        click.option("--key", default=None, help="Operator key for --validate."),
        click.option("--train", default=None, metavar="KEY", help="Also run a trainer (`gradchain train`), signing with KEY."),
        click.option("--no-ipfs", is_flag=True, help="Run no Kubo node (a full node that serves no files; no worker)."),
    ]):
        command = option(command)
    return command


@node.command("start")
@_child_options
@shared_flags(node=False)
@_node_errors
def start(cli: Cli, validate: bool, key: str | None, train: str | None, no_ipfs: bool) -> None:
    """Run the node in the foreground: app, CometBFT, Kubo (and a worker), restarted when they crash.

    One line per child state change; logs in HOME/logs/<child>.log, rotated by
    size. SIGTERM or Ctrl-C stops every child cleanly.

    \b
    Example:
      $ gradchain node start --home ~/.gradchain --validate --key operator
    """
    from abci_app.node import run

    worker = _worker(validate, key, train)
    flags = []
    if cli.keyring_backend:
        flags += ["--keyring-backend", cli.keyring_backend]
    if cli.passphrase_file:
        flags += ["--passphrase-file", str(cli.passphrase_file)]
    run.start(cli.home, ipfs=not no_ipfs, worker=worker, worker_flags=flags, echo=lambda line: click.echo(line, err=cli.output == "json"))


@node.command("pin-sync")
@click.option("--poll", type=click.FloatRange(min=0.5), default=10.0, show_default=True, help="Seconds between passes over the files the chain uses.")
@click.option("--once", is_flag=True, help="One pass, then exit.")
@click.option("--max-file-bytes", type=click.IntRange(min=1), default=None,
              help="Skip larger files [default: node.json's pin_max_file_bytes, else 8 GiB].")
@click.option("--free-floor-bytes", type=click.IntRange(min=0), default=None,
              help="Skip a file that would leave less free disk under --home [default: node.json's pin_free_floor_bytes, else 2 GiB].")
@shared_flags(node=False)
@_node_errors
def pin_sync(cli: Cli, poll: float, once: bool, max_file_bytes: int | None, free_floor_bytes: int | None) -> None:
    """Fetch, verify and pin on this node's Kubo every file the chain uses: each model version's checkpoint, its
    accepted deltas, and the datasets admitted or trained on (a dataset only registered is not fetched).

    `node start` runs it as its "pins" child; HOME/pins.json remembers what is
    pinned, refused (bytes that do not match the chain's CID or sha256: never
    tried again) and failing (retried with back-off), and `node status` shows the counts.

    \b
    Example:
      $ gradchain node pin-sync --home ~/.gradchain --once
    """
    from abci_app.node import pins

    pins.run(cli.home, poll=poll, once=once, report=lambda line: click.echo(line, err=cli.output == "json"),
             max_file_bytes=max_file_bytes, free_floor=free_floor_bytes)


@node.command("status")
@shared_flags(node=False)
@_node_errors
def status(cli: Cli) -> None:
    """Each child of the node in --home (pid, up, restarts), its height, catching up, peers and voting power.

    \b
    Example:
      $ gradchain node status -o json
    """
    from abci_app.node import run

    info = run.status(cli.home)
    lines = [f"supervisor    {'pid ' + str(info['supervisor_pid']) if info['supervisor_pid'] else 'not running'}"]
    for child in info["children"]:
        lines.append(f"{child['name']:<12}  {'up' if child['up'] else 'down':<4}  pid {child['pid'] or '-':<7}  restarts {child['restarts']}")
    for key in ("height", "catching_up", "peers", "voting_power"):
        lines.append(f"{key:<14}{'-' if info[key] is None else info[key]}")
    pins = info["pins"]
    lines.append(f"{'pinned':<14}" + ("-" if pins is None else f"{pins['pinned']} of {pins['wanted']} files the chain uses, {pins['failing']} failing, "
                                                               f"{pins.get('refused', 0)} refused, {pins.get('skipped', 0)} skipped"))
    cli.emit(info, "\n".join(lines))


@node.command("systemd")
@click.option("--user", default=None, help="The user the service runs as [default: the current user].")
@click.option("--write", "write_to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the unit to this file (e.g. /etc/systemd/system/gradchain.service) instead of printing it.")
@_child_options
@shared_flags(node=False)
@_node_errors
def systemd(cli: Cli, user: str | None, write_to: Path | None, validate: bool, key: str | None, train: str | None, no_ipfs: bool) -> None:
    """Print (or --write) a systemd unit that runs `gradchain node start` for --home.

    An encrypted keyring's passphrase for a worker goes in a file only that user
    reads: add --passphrase-file FILE.

    \b
    Example:
      $ gradchain node systemd --home /var/lib/gradchain --user gradchain --write /etc/systemd/system/gradchain.service
      $ sudo systemctl daemon-reload && sudo systemctl enable --now gradchain
    """
    from abci_app.node import run

    nodehome.load_settings(cli.home)  # a unit for a home without a node would only fail at boot
    worker = _worker(validate, key, train)
    args = []
    if worker is not None:
        args += ["--validate", "--key", worker[1]] if worker[0] == "validate" else ["--train", worker[1]]
    if no_ipfs:
        args.append("--no-ipfs")
    if cli.passphrase_file:
        args += ["--passphrase-file", str(cli.passphrase_file.resolve())]
    unit = run.systemd_unit(cli.home, user or getpass.getuser(), args)
    if write_to is None:
        click.echo(unit, nl=False)
        return
    write_to.write_text(unit)
    cli.emit({"unit": str(write_to)}, f"wrote {write_to}; then: systemctl daemon-reload && systemctl enable --now {write_to.stem}")


# --- genesis -----------------------------------------------------------------------------


@click.group()
def genesis() -> None:
    """Make a new network's genesis together: add-account, gentx, collect, validate (see docs/operators.md)."""


def _genesis_path(cli: Cli, path: Path | None) -> Path:
    return path or nodehome.Layout(cli.home).genesis


_genesis_option = click.option("--genesis", "genesis_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                               help="The genesis file [default: HOME/config/genesis.json].")


@genesis.command("add-account")
@click.argument("address")
@click.argument("amount", type=AMOUNT)
@_genesis_option
@shared_flags(node=False)
@_node_errors
def add_account(cli: Cli, address: str, amount: int, genesis_file: Path | None) -> None:
    """Fund ADDRESS (or a key name in the keyring) with AMOUNT ugrad in the draft genesis.

    \b
    Example:
      $ gradchain genesis add-account gc1qy...  1000000000000
    """
    from abci_app.cli.common import resolve_address
    from abci_app.node import ceremony

    entry = ceremony.add_account(_genesis_path(cli, genesis_file), resolve_address(cli.keyring, address), amount)
    cli.emit(entry, f"added {entry['address']} with {entry['amount']} {DENOM}")


@genesis.command("gentx")
@click.argument("amount", type=AMOUNT)
@click.option("--from", "from_", required=True, metavar="KEY", help="The operator key: signs the gentx and pays the self-bond from its genesis balance.")
@click.option("--moniker", default=None, help="Validator name [default: the node's moniker].")
@click.option("--peer-address", default=None, metavar="HOST:PORT", help="Where other validators dial this node [default: --external of `node init`, else --listen].")
@shared_flags(node=False)
@_node_errors
def gentx(cli: Cli, amount: int, from_: str, moniker: str | None, peer_address: str | None) -> None:
    """Sign this node's create-validator with self-bond AMOUNT for the draft genesis in --home; send the file to the coordinator.

    \b
    Example:
      $ gradchain genesis gentx 10000000 --from operator --moniker alice
    """
    from abci_app.node import ceremony

    settings = nodehome.load_settings(cli.home)
    address = peer_address or settings.external or settings.p2p
    host, port = nodehome.host_port(address, "--peer-address")
    if host in ("0.0.0.0", "::"):
        raise CliError(f"the p2p address {address} listens everywhere; pass --peer-address with the host other validators dial")
    key = signer_key(cli.keyring, from_)
    path = ceremony.make_gentx(cli.home, key, amount, moniker or settings.moniker, f"{host}:{port}")
    cli.emit({"gentx": str(path)}, f"wrote {path}: send it to the network's coordinator")


@genesis.command("collect")
@click.option("--gentx-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Folder of gentx files [default: HOME/config/gentx].")
@shared_flags(node=False)
@_node_errors
def collect(cli: Cli, gentx_dir: Path | None) -> None:
    """Check every gentx and write the final genesis: staking validators, CometBFT validators and peers, consistent.

    \b
    Example:
      $ cp gentx-*.json ~/.gradchain/config/gentx/
      $ gradchain genesis collect
    """
    from abci_app.node import ceremony, join

    summary = ceremony.collect(cli.home, gentx_dir)
    summary["sha256"] = join.genesis_digest(ceremony.read_genesis(nodehome.Layout(cli.home).genesis))
    names = ", ".join(f"{v['moniker']} ({v['self_bond']} {DENOM})" for v in summary["validators"])
    cli.emit(summary, f"wrote {summary['genesis']} with {len(summary['validators'])} validators: {names}\ngenesis sha256 {summary['sha256']}")


@genesis.command("validate")
@_genesis_option
@shared_flags(node=False)
@_node_errors
def validate(cli: Cli, genesis_file: Path | None) -> None:
    """Run the app's genesis checks (InitChain on a scratch store) without starting anything; print its digest.

    \b
    Example:
      $ gradchain genesis validate --genesis genesis.json
    """
    from abci_app.node import ceremony, join

    document = ceremony.read_genesis(_genesis_path(cli, genesis_file))
    summary = ceremony.validate_genesis(document) | {"sha256": join.genesis_digest(document)}
    cli.emit(summary, f"genesis of {summary['chain_id']} is valid: {summary['validators']} validators, initial app hash "
                      f"{summary['initial_app_hash']}\ngenesis sha256 {summary['sha256']}")
