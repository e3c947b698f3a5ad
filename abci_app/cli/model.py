"""`gradchain model`, `gradchain dataset` and `gradchain chat`: the model side.

Files come from the node's IPFS (Kubo) API and are checked against the CID
and sha256 the chain recorded before they enter the cache (<home>/cache).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from abci_app import tx as txlib
from abci_app.cli.common import Cli, CliError, shared_flags, signer_key
from abci_app.client import ChainClient, ChainError
from abci_app.ipfs.client import IpfsClient, IpfsError
from abci_app.ipfs.download import VerificationError, file_sha256
from abci_app.models import Cache, ModelError, Pulled, version_entry

DEFAULT_IPFS = "http://127.0.0.1:26659"  # Kubo API of localnet node 0, as --node defaults to its RPC

_ipfs_option = click.option(
    "--ipfs", envvar="GRADCHAIN_IPFS", default=DEFAULT_IPFS, show_default=True, metavar="URL",
    help="Kubo RPC API of the IPFS node to fetch from [env: GRADCHAIN_IPFS].",
)
_timeout_option = click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="Seconds to wait for IPFS to find the content.")


def _model_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the model layer's exceptions into one-line CLI errors."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ModelError, ChainError, IpfsError, VerificationError) as exc:
            raise CliError(str(exc)) from None

    return wrapper


class _Progress:
    """A progress line on stderr with bytes and bytes/s (quiet when stderr is not a terminal)."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done, self.start = label, total, 0, time.monotonic()
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            rate = self.done / max(now - self.start, 1e-6)
            pct = 100 * self.done // max(self.total, 1)
            click.echo(f"\r{self.label} {_mb(self.done)}/{_mb(self.total)} MB {pct:3d}% {_mb(rate)} MB/s", err=True, nl=False)

    def finish(self) -> None:
        if self.enabled and self.done:
            click.echo("", err=True)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def pull(cli: Cli, chain: ChainClient, ipfs_url: str, version: int | None, timeout: float) -> Pulled:
    """The verified checkpoint of `version` (latest when None), from the cache or IPFS."""
    entry = version_entry(chain, version)
    progress = _Progress(f"pulling version {entry['id']}", entry["bytes"])
    with IpfsClient(ipfs_url) as ipfs:
        pulled = Cache(cli.home).pull_model(entry, ipfs, timeout=timeout, progress=progress)
    progress.finish()
    return pulled


# --- model -----------------------------------------------------------------------


@click.group()
def model() -> None:
    """Registered model versions: list, inspect, pull."""


def _version_row(v: dict) -> str:
    loss = v.get("metrics", {}).get("held_out_loss_micro")
    loss_text = f"{loss / 1e6:.4f}" if loss is not None else "-"
    parent = "-" if v["parent"] is None else v["parent"]
    rnd = "-" if v.get("round") is None else v["round"]
    return f"{v['id']:>7}  {parent!s:>6}  {rnd!s:>5}  {v['family']:<12}  {_mb(v['bytes']):>8}  {loss_text:>9}  {v['cid']}"


@model.command("list")
@shared_flags()
@_model_errors
def list_(cli: Cli) -> None:
    """List every registered version, oldest first.

    \b
    Example:
      $ gradchain model list --node http://127.0.0.1:26657
    """
    with ChainClient(cli.node) as chain:
        history = chain.query_json("/registry/history") or []
    header = f"{'VERSION':>7}  {'PARENT':>6}  {'ROUND':>5}  {'FAMILY':<12}  {'SIZE MB':>8}  {'HELD-OUT':>9}  CID"
    cli.emit(history, "\n".join([header] + [_version_row(v) for v in history]) if history else "no model version is registered")


@model.command()
@click.option("--version", "version", type=click.IntRange(min=0), default=None, help="Version id [default: latest].")
@shared_flags()
@_model_errors
def show(cli: Cli, version: int | None) -> None:
    """Show one version's registry entry (CID, sha256, config, lineage).

    \b
    Example:
      $ gradchain model show --version 0
    """
    with ChainClient(cli.node) as chain:
        entry = version_entry(chain, version)
    lines = [f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in entry.items() if k != "config_json"]
    lines.append(f"config: {entry['config_json']}")
    cli.emit(entry, "\n".join(lines))


@model.command("pull")
@click.option("--version", "version", type=click.IntRange(min=0), default=None, help="Version id [default: latest].")
@_ipfs_option
@_timeout_option
@shared_flags()
@_model_errors
def pull_(cli: Cli, version: int | None, ipfs: str, timeout: float) -> None:
    """Download a version from IPFS, verify CID, sha256 and config against the chain, and cache it.

    \b
    Example:
      $ gradchain model pull --ipfs http://127.0.0.1:5001
    """
    with ChainClient(cli.node) as chain:
        pulled = pull(cli, chain, ipfs, version, timeout)
    entry = pulled.entry
    state = "already cached" if pulled.cached else "downloaded and verified"
    cli.emit(
        {"version": entry["id"], "path": str(pulled.path), "cid": entry["cid"], "sha256": entry["sha256"], "cached": pulled.cached},
        f"version {entry['id']} {state}: {pulled.path}\ncid {entry['cid']}\nsha256 {entry['sha256']}",
    )


@model.command()
@click.option("--plot", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None, help="Write a PNG of held-out loss per version.")
@shared_flags()
@_model_errors
def history(cli: Cli, plot: Path | None) -> None:
    """Lineage of the model: version, parent, round, held-out loss, accepted submissions.

    \b
    Example:
      $ gradchain model history --plot loss.png
    """
    with ChainClient(cli.node) as chain:
        versions = chain.query_json("/registry/history") or []
    if plot is not None:
        _plot_history(versions, plot)
    header = f"{'VERSION':>7}  {'PARENT':>6}  {'ROUND':>5}  {'FAMILY':<12}  {'SIZE MB':>8}  {'HELD-OUT':>9}  CID"
    text = "\n".join([header] + [_version_row(v) + (f"  ({v['note']})" if v.get("note") else "") for v in versions])
    cli.emit(versions, text + (f"\nplot written to {plot}" if plot else ""))


def _plot_history(versions: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(v["id"], v["metrics"]["held_out_loss_micro"] / 1e6) for v in versions if "held_out_loss_micro" in v.get("metrics", {})]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    ax.set_xlabel("model version")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("GradientChain: held-out loss per version")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- dataset ---------------------------------------------------------------------


@click.group()
def dataset() -> None:
    """Registered datasets: list, inspect, add."""


@dataset.command("list")
@shared_flags()
@_model_errors
def dataset_list(cli: Cli) -> None:
    """List registered datasets.

    \b
    Example:
      $ gradchain dataset list
    """
    with ChainClient(cli.node) as chain:
        items = chain.query_json("/datasets/list") or []
    rows = [f"{d['id']:>3}  {d['name']:<20}  {d['bytes']:>12}  {d['licence'][:30]:<30}  {d['cid']}" for d in items]
    cli.emit(items, "\n".join([f"{'ID':>3}  {'NAME':<20}  {'BYTES':>12}  {'LICENCE':<30}  CID"] + rows) if items else "no dataset is registered")


@dataset.command("show")
@click.argument("dataset_id", type=click.IntRange(min=0))
@shared_flags()
@_model_errors
def dataset_show(cli: Cli, dataset_id: int) -> None:
    """Show one dataset's provenance record.

    \b
    Example:
      $ gradchain dataset show 0
    """
    with ChainClient(cli.node) as chain:
        entry = chain.query_json("/datasets/dataset", str(dataset_id))
    if entry is None:
        raise CliError(f"dataset {dataset_id} does not exist (see `gradchain dataset list`)")
    cli.emit(entry, "\n".join(f"{k}: {v}" for k, v in entry.items()))


@dataset.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "from_", required=True, help="Key that signs the registration.")
@click.option("--name", required=True, help="Dataset name.")
@click.option("--licence", required=True, help="Licence, e.g. public-domain or CC-BY-4.0.")
@_ipfs_option
@shared_flags()
@_model_errors
def dataset_add(cli: Cli, file: Path, from_: str, name: str, licence: str, ipfs: str) -> None:
    """Add FILE to IPFS and register it (bytes-level tokenizer: tokens = bytes).

    \b
    Example:
      $ gradchain dataset add corpus.txt --from dev0 --name my-corpus --licence CC0-1.0
    """
    key = signer_key(cli.keyring, from_)
    digest, size = file_sha256(file), file.stat().st_size
    with IpfsClient(ipfs) as client:
        cid = client.add(file)
    msg = txlib.MsgRegisterDataset(name=name, cid=cid, sha256=digest, licence=licence, bytes=size, tokens=size, tokenizer="bytes")
    with ChainClient(cli.node) as chain:
        result = chain.send(key, msg)
    cli.emit({"cid": cid, "sha256": digest, "bytes": size, "hash": result.hash, "height": result.height},
             f"added {file} to IPFS as {cid}\nregistered in tx {result.hash} at height {result.height}")


# --- chat ------------------------------------------------------------------------


@click.command()
@click.option("--version", "version", type=click.IntRange(min=0), default=None, help="Version id [default: latest].")
@click.option("--prompt", default=None, help="Answer this one prompt and exit (for scripts); without it, an interactive session.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.8, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=click.IntRange(min=1), default=None)
@click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=None)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed: the same seed gives the same answer.")
@_ipfs_option
@_timeout_option
@shared_flags()
@_model_errors
def chat(cli: Cli, version: int | None, prompt: str | None, max_tokens: int, temperature: float, top_k: int | None,
         top_p: float | None, seed: int, ipfs: str, timeout: float) -> None:
    """Talk to a registered model version (pulled and verified first).

    \b
    Example:
      $ gradchain chat --prompt "In the beginning" --max-tokens 80
    """
    from abci_app.ml import determinism
    from abci_app.ml.family import load_model
    from abci_app.ml.generate import SamplingParams

    with ChainClient(cli.node) as chain:
        pulled = pull(cli, chain, ipfs, version, timeout)
    determinism.pin(1)  # chat need not match validators' bits; one thread is faster on a busy machine (docs/ml.md)
    family, loaded = load_model(pulled.path, expect_config_hash=pulled.entry["config_hash"])
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    entry = pulled.entry
    if prompt is not None:
        stream = cli.output != "json"
        pieces = []
        for piece in family.generate(loaded, prompt, params):
            pieces.append(piece)
            if stream:
                click.echo(piece, nl=False)
        if stream:
            click.echo()
        else:
            cli.emit({"version": entry["id"], "cid": entry["cid"], "prompt": prompt, "completion": "".join(pieces)}, "")
        return
    click.echo(f"GradientChain chat: version {entry['id']} ({entry['family']}), cid {entry['cid']}\n/exit to quit", err=True)
    turn = 0
    while True:
        try:
            text = click.prompt("you", prompt_suffix="> ", err=True)
        except (EOFError, click.Abort):
            click.echo("", err=True)
            return
        if text.strip() in ("/exit", "/quit"):
            return
        for piece in family.generate(loaded, text, SamplingParams(**{**params.__dict__, "seed": seed + turn})):
            click.echo(piece, nl=False)
        click.echo()
        turn += 1
