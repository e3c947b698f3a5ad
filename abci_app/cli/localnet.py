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
    if net.explorer_port:
        lines.append(f"explorer: {net.explorer_url}  (blocks, rounds and verdicts, validators, model versions, chat; "
                     f"logs {net.nodes[0].log_path('explorer')})")
    for node in net.nodes:
        app = f"app {node.app_port}  logs {node.home}/*.log" if net.has_app_process else f"logs {node.home}/cometbft.log"
        ipfs = f"  ipfs {node.ipfs_url}" if node.ipfs_api_port else ""
        lines.append(f"  node{node.index}  rpc {node.rpc_url}{ipfs}  p2p {node.p2p_port}  {app}")
    lines.append(f"keyring home: {net.keyring_home}  (keys: {', '.join(a.name for a in net.accounts)}; "
                 "keyring backend 'test': unencrypted dev keys)")
    if len(dev) >= 2:
        other = net.rpc_url(1 % len(net.nodes))
        lines += [
            "try:",
            f"  gradchain tx bank send {dev[0].name} {dev[1].address} 1000 --yes --home {net.keyring_home} --node {net.rpc_url(0)}",
            f"  gradchain query bank balance {dev[1].address} --node {other}",
            f"  gradchain status --node {net.rpc_url(0)}",
        ]
    if net.genesis_files and net.nodes[1 % len(net.nodes)].ipfs_api_port:
        other = net.nodes[1 % len(net.nodes)]
        lines += [
            f"  gradchain model list --node {net.rpc_url(0)}",
            f"  gradchain model pull --node {other.rpc_url} --ipfs {other.ipfs_url}",
            f"  gradchain chat --prompt \"{_chat_example(net)}\" --node {net.rpc_url(0)} --ipfs {net.nodes[0].ipfs_url}",
            f"  gradchain model eval --node {net.rpc_url(0)} --ipfs {net.nodes[0].ipfs_url}",
        ]
    lines.append("status: make localnet-status   stop: make localnet-stop   wipe: make localnet-reset")
    return "\n".join(lines)


def genesis_family(net: ln.Network) -> str | None:
    """The model family of the network's version 0 (from its checkpoint header), or None."""
    from abci_app.models import read_header_meta

    model = next((Path(f) for f in net.genesis_files if f.endswith(".safetensors")), None)
    try:
        return read_header_meta(model)["family"] if model is not None else None
    except (OSError, ValueError):
        return None


MODEL_FAMILIES = {ln.MODEL_SMOLLM2: "smollm2-lora", ln.MODEL_TINY: "tiny-gpt", ln.MODEL_TEST: "tiny-gpt"}


def _chat_example(net: ln.Network) -> str:
    """A prompt that shows what the genesis model can do: a question for a chat model, a verse opening for the KJV GPT."""
    return "What is the capital of France?" if genesis_family(net) == "smollm2-lora" else "In the beginning"


def model_mismatch(net: ln.Network, model: str) -> str | None:
    """A note when `--model` asks for another genesis model than the existing network has (it is chosen at creation)."""
    family = genesis_family(net)
    if family is None or MODEL_FAMILIES[model] == family:
        return None
    return (f"note: this localnet's version 0 is a {family} model; --model {model} applies when a localnet is created "
            f"(`make localnet-reset` first to switch)")


EXPLORER_PORT = 8080  # `gradchain explorer`'s default; a free port when another program holds it


def _give_explorer_port(net: ln.Network) -> bool:
    """Give a training localnet (our app with IPFS) that has no explorer port one, saved; whether it changed."""
    if net.explorer_port or not net.has_app_process or not net.has_ipfs:
        return False
    net.explorer_port = EXPLORER_PORT if not ln.port_in_use(EXPLORER_PORT) else ln.free_ports(1)[0]
    net.save()
    return True


@click.group()
def localnet() -> None:
    """Run a 4-validator network on this machine (loopback only)."""


@localnet.command()
@click.option("--validators", type=click.IntRange(1, 16), default=4, show_default=True, help="Validators, when creating a new localnet.")
@click.option("--base-port", type=int, default=ln.DEFAULT_BASE_PORT, show_default=True, help="node i uses base+10i (p2p), +1 (rpc), +2 (app).")
@click.option("--app", type=click.Choice([ln.APP_GRADCHAIN, ln.APP_KVSTORE]), default=ln.APP_GRADCHAIN, show_default=True,
              help="ABCI app: ours, or CometBFT's built-in kvstore (to debug the network itself).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for the first blocks.")
@click.option("--model", "model", type=click.Choice(ln.MODELS), default=ln.DEFAULT_MODEL, show_default=True, envvar="GRADCHAIN_MODEL",
              help="Genesis model (version 0), when creating: SmolLM2-135M-Instruct trained through LoRA, the tiny GPT "
                   "(trained once, minutes), or a seconds-long test GPT [env: GRADCHAIN_MODEL].")
def start(validators: int, base_port: int, app: str, timeout: float, model: str) -> None:
    """Create the localnet if needed, start whatever is stopped, wait for blocks.

    \b
    Example:
      $ gradchain localnet start
      $ gradchain localnet start --model tiny
    """
    root = localnet_dir()
    try:
        if (root / ln.NETWORK_FILE).exists():
            net = ln.load(root)
            _give_explorer_port(net)  # a localnet made before the explorer existed gets one too
            if net.is_running():
                net.start_explorer()  # unless it runs
                if note := model_mismatch(net, model):
                    click.echo(note, err=True)
                click.echo("localnet is already running")
                click.echo(_endpoints(net))
                return
            state = "some of its processes are down; restarting them" if net.any_running() else "it is stopped; starting it"
            click.echo(f"localnet in {root}: {state} ...")
            if note := model_mismatch(net, model):
                click.echo(note, err=True)
        else:
            click.echo(f"creating a {validators}-validator localnet in {root} ...")
            if app == ln.APP_GRADCHAIN:
                app_state = ln.localnet_app_state(model)
                model_path, corpus_path = ln.genesis_assets(model, echo=click.echo)
                metrics = ln.genesis_metrics(model_path, corpus_path, app_state["training"]["params"]["eval_prompts"], echo=click.echo)
                net = ln.create(
                    root, validators=validators, base_port=base_port, app=app, dev_accounts=4, app_state=app_state,
                    ipfs=True, genesis_model=model_path, corpus=corpus_path, workers=True, empty_blocks_interval="1s",
                    genesis_model_metrics=metrics,
                )
                _give_explorer_port(net)
            else:
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
    pace = "a block every second" if net.workers else "new blocks come with transactions"  # training localnets set create_empty_blocks_interval
    click.echo(f"blocks are being produced (height {height}; {pace})")
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
    click.echo(f"{'node':<6} {'rpc':<24} {'app pid':<9} {'node pid':<9} {'ipfs pid':<9} {'worker':<9} {'height':>7}  app hash")
    for r, node in zip(rows, net.nodes):
        app_pid = "-" if not net.has_app_process else (str(r.app_pid) if r.app_alive else "dead")
        node_pid = str(r.node_pid) if r.node_alive else "dead"
        ipfs_pid = "-" if not node.ipfs_api_port else str(r.ipfs_pid or "dead")
        worker_pid = "-" if not net.workers else str(r.worker_pid or "dead")
        height = "-" if r.height is None else str(r.height)
        click.echo(f"node{r.index:<2} {r.rpc_url:<24} {app_pid:<9} {node_pid:<9} {ipfs_pid:<9} {worker_pid:<9} {height:>7}  {r.app_hash or '-'}")


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


# --- add-node: join a fifth (sixth, ...) node, then bond it in as a validator ----------


def _join_suggestion(net: ln.Network, node: ln.Node, operator: str | None, amount: int | None) -> dict | None:
    """The create-validator command for `node`: operator key, self-bond, power; None for an app without staking."""
    if not net.has_app_process:
        return None
    from abci_app.cli.common import CliError, query_pages
    from abci_app.rpc import RpcClient, RpcError

    try:
        with RpcClient(node.rpc_url) as rpc:
            params = json.loads(rpc.abci_query("/staking/params").value or b"null")
            if not isinstance(params, dict):  # an app without staking
                return None
            operators = {v["operator"] for v in query_pages(rpc, "/staking/validators")[0]}
    except (RpcError, CliError, ValueError, TypeError, KeyError) as exc:
        raise click.ClickException(f"node{node.index} runs, but its staking queries failed: {exc}") from None
    unit, minimum = int(params["power_unit"]), int(params["min_self_bond"])
    if operator is None:  # a funded dev key that operates no validator yet (a key operates at most one)
        free = [a.name for a in net.accounts if a.name.startswith("dev") and a.address not in operators]
        operator = free[0] if free else "YOUR_KEY"
    if amount is None:  # the genesis validators' bond: the minimum, in whole power units
        amount = -(-max(minimum, unit) // unit) * unit
    argv = ["gradchain", "tx", "staking", "create-validator", operator, "--pubkey-from-home", str(node.home),
            "--amount", str(amount), "--node", node.rpc_url, "--home", str(net.keyring_home), "-y"]
    return {"operator": operator, "amount": amount, "power": amount // unit, "power_unit": unit, "min_self_bond": minimum, "command": argv}


@localnet.command("add-node")
@click.option("--operator", default=None, metavar="KEY",
              help="Operator key for the suggested create-validator command [default: the first dev key that operates no validator].")
@click.option("--amount", type=click.IntRange(1), default=None, metavar="UGRAD",
              help="Self-bond for the suggested command [default: the genesis validators' bond, so the same power].")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for it to sync.")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output format.")
def add_node(operator: str | None, amount: int | None, timeout: float, output: str) -> None:
    """Add one more node to the running localnet: a full node that syncs the chain, not a validator yet.

    Prints its RPC endpoint, its CometBFT consensus pubkey and the
    `gradchain tx staking create-validator` command that bonds it in; CometBFT
    adds it to /validators two blocks after that tx, with power amount / power_unit.
    `localnet stop`, `start` and `status` include it from now on.

    \b
    Example:
      $ gradchain localnet add-node
    """
    net = _load(localnet_dir())
    click.echo(f"adding node{len(net.nodes)} to the localnet in {net.root} (syncing the chain) ...", err=True)
    try:
        node = net.add_node(timeout=timeout)
        pubkey = net.consensus_pubkey(node.index)
    except ln.LocalnetError as exc:
        raise click.ClickException(str(exc)) from None
    from abci_app.cli.staking import consensus_address, parse_pubkey

    height = net.node_status(node.index).height
    address = consensus_address(parse_pubkey(pubkey))
    join = _join_suggestion(net, node, operator, amount)
    if output == "json":
        click.echo(json.dumps({"index": node.index, "home": str(node.home), "node_id": node.node_id, "rpc_url": node.rpc_url,
                               "p2p_port": node.p2p_port, "app_port": node.app_port, "height": height,
                               "consensus_pubkey": pubkey, "consensus_address": address, "create_validator": join}))
        return
    logs = f"{node.home}/{{cometbft,app}}.log" if net.has_app_process else f"{node.home}/cometbft.log"
    lines = [
        f"node{node.index} is in sync at height {height} (a full node: not a validator until it bonds)",
        f"  rpc                {node.rpc_url}",
        f"  p2p / app ports    {node.p2p_port} / {node.app_port}   logs {logs}",
        f"  consensus pubkey   {pubkey}",
        f"  consensus address  {address}",
    ]
    if join is None:
        lines.append(f"the {net.app} app has no staking: this node stays a full node")
    else:
        lines += [
            f"make it a validator (min self-bond {join['min_self_bond']} ugrad; power = amount / {join['power_unit']}):",
            "  " + " ".join(join["command"]),
            f"it joins CometBFT's set two blocks after that tx, with power {join['power']}; check with",
            f"  gradchain query staking validators --node {node.rpc_url}",
            f"  curl -s {node.rpc_url}/validators",
        ]
    click.echo("\n".join(lines))
