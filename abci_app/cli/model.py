"""`gradchain model`, `gradchain dataset`, `gradchain tx dataset` and `gradchain chat`: the model side.

Files come from the node's IPFS (Kubo) API and are checked against the CID
and sha256 the chain recorded before they enter the cache (<home>/cache).
`model eval` recomputes a version's held-out loss and prompt score and
compares them with the figures the chain recorded; `chat` talks to a version
(multi-turn through the chat template where the family has one).
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from abci_app import crypto
from abci_app import tx as txlib
from abci_app.cli.common import Cli, CliError, shared_flags, signer_key
from abci_app.cli.tx import confirm, send, tx_flags
from abci_app.client import ChainClient, ChainError
from abci_app.ipfs.cid import cid_of_file
from abci_app.ipfs.client import IpfsClient, IpfsError
from abci_app.ipfs.download import VerificationError, file_sha256
from abci_app.models import Cache, ModelError, Pulled, dataset_entry, version_entry

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
    return pull_entry(cli, version_entry(chain, version), ipfs_url, timeout)


def pull_entry(cli: Cli, entry: dict, ipfs_url: str, timeout: float) -> Pulled:
    """The verified checkpoint of a registry entry already queried."""
    return _fetch(f"pulling version {entry['id']}", entry, ipfs_url, lambda ipfs, progress: Cache(cli.home).pull_model(entry, ipfs, timeout=timeout, progress=progress))


def pull_dataset(cli: Cli, chain: ChainClient, ipfs_url: str, dataset_id: int, timeout: float) -> Pulled:
    """The verified file of a registered dataset, from the cache or IPFS."""
    entry = dataset_entry(chain, dataset_id)
    return _fetch(f"pulling dataset {dataset_id}", entry, ipfs_url,
                  lambda ipfs, progress: Cache(cli.home).pull_dataset_file(entry, ipfs, timeout=timeout, progress=progress))


def _fetch(label: str, entry: dict, ipfs_url: str, fetch: Callable[[IpfsClient, _Progress], Pulled]) -> Pulled:
    """`fetch` through the Kubo API at `ipfs_url`, with a progress line over the entry's bytes."""
    progress = _Progress(label, entry["bytes"])
    with IpfsClient(ipfs_url) as ipfs:
        pulled = fetch(ipfs, progress)
    progress.finish()
    return pulled


# --- model -----------------------------------------------------------------------


@click.group()
def model() -> None:
    """Registered model versions: list, inspect, pull, evaluate."""


_VERSION_HEADER = f"{'VERSION':>7}  {'PARENT':>6}  {'ROUND':>5}  {'FAMILY':<12}  {'SIZE MB':>8}  {'HELD-OUT':>9}  {'PROMPTS':>7}  CID"


def _loss_text(micro: int | None) -> str:
    return "-" if micro is None else f"{micro / 1e6:.4f}"


def _prompts_text(metrics: dict) -> str:
    """`correct/total` of the fixed prompt set, or `-` when the version was not scored."""
    correct, total = metrics.get("prompts_correct"), metrics.get("prompts_total")
    return "-" if correct is None or total is None else f"{correct}/{total}"


def _version_row(v: dict) -> str:
    metrics = v.get("metrics") or {}
    parent = "-" if v["parent"] is None else v["parent"]
    rnd = "-" if v.get("round") is None else v["round"]
    return (f"{v['id']:>7}  {parent!s:>6}  {rnd!s:>5}  {v['family']:<12}  {_mb(v['bytes']):>8}  "
            f"{_loss_text(metrics.get('held_out_loss_micro')):>9}  {_prompts_text(metrics):>7}  {v['cid']}")


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
        history = chain.query_pages("/registry/history")
    cli.emit(history, "\n".join([_VERSION_HEADER] + [_version_row(v) for v in history]) if history else "no model version is registered")


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
@click.option("--plot", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="Write a PNG of held-out loss (and prompt score) per version.")
@shared_flags()
@_model_errors
def history(cli: Cli, plot: Path | None) -> None:
    """Lineage of the model: version, parent, round, held-out loss, prompt score, notes.

    \b
    Example:
      $ gradchain model history --plot loss.png
    """
    with ChainClient(cli.node) as chain:
        versions = chain.query_pages("/registry/history")
    if plot is not None:
        _plot_history(versions, plot)
    text = "\n".join([_VERSION_HEADER] + [_version_row(v) + (f"  ({v['note']})" if v.get("note") else "") for v in versions])
    cli.emit(versions, text + (f"\nplot written to {plot}" if plot else ""))


def _plot_history(versions: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(v["id"], v.get("metrics") or {}) for v in versions]
    losses = [(i, m["held_out_loss_micro"] / 1e6) for i, m in metrics if "held_out_loss_micro" in m]
    scores = [(i, 100 * m["prompts_correct"] / m["prompts_total"]) for i, m in metrics if m.get("prompts_total")]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in losses], [p[1] for p in losses], marker="o", label="held-out loss")
    ax.set_xlabel("model version")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("GradientChain: held-out loss per version")
    ax.grid(alpha=0.3)
    if scores:  # the prompt score on a second axis
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in scores], [p[1] for p in scores], marker="s", color="tab:orange", label="prompts correct")
        ax2.set_ylabel("prompts correct (%)")
        ax2.set_ylim(0, 100)
        ax.set_title("GradientChain: held-out loss and prompt score per version")
        fig.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


MAX_LINEAGE = 10_000  # versions walked back; the parent chain of a registry ends at version 0 well before this


def lineage(chain: ChainClient, version: int | None, *, entry_of: Callable[[int | None], dict] | None = None,
            dataset_of: Callable[[int], dict] | None = None) -> dict:
    """Version `version` (latest when None) and its ancestors back to genesis: each one's accepted submissions,
    and every dataset and trainer on the path with its share of the accepted work (windows drawn).
    `entry_of`/`dataset_of` replace the node queries (the explorer's caches)."""
    entry_of = entry_of or (lambda v: version_entry(chain, v))
    dataset_of = dataset_of or (lambda d: dataset_entry(chain, d))
    path = [entry_of(version)]
    seen = {path[0]["id"]}
    while path[-1]["parent"] is not None and len(path) < MAX_LINEAGE:
        if path[-1]["parent"] in seen:
            raise ChainError(f"version {path[-1]['id']} names {path[-1]['parent']} as its parent, already on the path: the node's registry cycles")
        path.append(entry_of(path[-1]["parent"]))
        seen.add(path[-1]["id"])
    dataset_windows: dict[int, int] = {}
    trainers: dict[str, dict] = {}
    for v in path:
        for c in v.get("contributions") or []:
            drawn = sum(n for _, n in c["windows"])
            t = trainers.setdefault(c["trainer"], {"trainer": c["trainer"], "submissions": 0, "windows": 0, "versions": []})
            t["submissions"] += 1
            t["windows"] += drawn
            if v["id"] not in t["versions"]:
                t["versions"].append(v["id"])
            for d, n in c["windows"]:
                dataset_windows[d] = dataset_windows.get(d, 0) + n
    total = sum(dataset_windows.values())
    ids = sorted({d for v in path for d in v.get("dataset_ids") or []} | set(dataset_windows))
    records = {d: dataset_of(d) for d in ids}
    sets = [{"id": d, "name": records[d]["name"], "licence": records[d]["licence"], "owner": records[d].get("owner") or records[d].get("creator", ""),
             "cid": records[d]["cid"], "windows": dataset_windows.get(d, 0), "share": _share(dataset_windows.get(d, 0), total),
             "versions": [v["id"] for v in path if d in (v.get("dataset_ids") or [])]} for d in ids]
    people = sorted(trainers.values(), key=lambda t: (-t["windows"], t["trainer"]))
    for t in people:
        t["share"] = _share(t["windows"], total)
    return {"version": path[0]["id"], "path": path, "datasets": sets, "contributors": people, "total_windows": total}


def _share(part: int, total: int) -> float:
    return round(part / total, 6) if total else 0.0


def _lineage_text(doc: dict) -> str:
    names = {d["id"]: d["name"] for d in doc["datasets"]}
    lines = [f"lineage of version {doc['version']}: {len(doc['path'])} versions back to genesis, {doc['total_windows']} accepted windows"]
    for v in doc["path"]:
        where = "genesis" if v["parent"] is None else f"parent {v['parent']}, round {v.get('round', '-')}"
        contributions = v.get("contributions") or []
        trained = ", ".join(names.get(d, str(d)) for d in v.get("dataset_ids") or []) or "-"
        lines.append(f"version {v['id']} ({where}): {v['cid']}  licence {v['licence'] or '-'}  data {trained}  "
                     f"{len(contributions)} accepted submissions")
        for c in contributions:
            drawn = ", ".join(f"{names.get(d, d)} {n}" for d, n in c["windows"]) or "-"
            lines.append(f"  submission {c['submission']} by {c['trainer']}: delta {c['cid']} sha256 {c['sha256'][:16]}…  "
                         f"windows {drawn}  seed {c['seed'][:16]}…")
    lines.append("datasets (share of the accepted windows):")
    for d in doc["datasets"]:
        lines.append(f"  {d['id']:>3} {d['name']:<20} {d['licence'][:30]:<30} owner {d['owner'] or '-'}  {d['windows']:>8} windows  {100 * d['share']:5.1f}%")
    lines.append("contributors (share of the accepted windows):" if doc["contributors"] else "contributors: none (no accepted submission on this path)")
    for t in doc["contributors"]:
        lines.append(f"  {t['trainer']}  {t['submissions']} submissions  {t['windows']:>8} windows  {100 * t['share']:5.1f}%")
    return "\n".join(lines)


@model.command("lineage")
@click.argument("version", type=click.IntRange(min=0), required=False)
@click.option("--plot", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="Write a PNG of the lineage graph: datasets and trainers feeding each version.")
@shared_flags()
@_model_errors
def lineage_(cli: Cli, version: int | None, plot: Path | None) -> None:
    """Trace VERSION [default: latest] back to genesis: the datasets (licences, owners) and the trainers
    behind it, each with its share of the accepted work, and every accepted submission's delta and seed.

    \b
    Example:
      $ gradchain model lineage 3
      $ gradchain model lineage 3 -o json
      $ gradchain model lineage 3 --plot lineage.png
    """
    with ChainClient(cli.node) as chain:
        doc = lineage(chain, version)
    if plot is not None:
        _plot_lineage(doc, plot)
    cli.emit(doc, _lineage_text(doc) + (f"\nplot written to {plot}" if plot else ""))


def _plot_lineage(doc: dict, path: Path) -> None:
    """Versions left (genesis) to right; datasets above and trainers below, an edge to each version they fed,
    as thick as the windows it drew."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = list(reversed(doc["path"]))
    x_of = {v["id"]: i for i, v in enumerate(versions)}
    width = max(len(versions), len(doc["datasets"]), len(doc["contributors"]), 2)
    fig, ax = plt.subplots(figsize=(min(2 + 1.6 * width, 40), 5))

    def spread(n: int) -> list[float]:  # n nodes evenly under the versions' span
        last = len(versions) - 1
        return [i * last / (n - 1) if n > 1 else last / 2 for i in range(n)]

    heaviest = max([n for v in versions for c in v.get("contributions") or [] for _, n in c["windows"]] + [1])
    for v in versions:
        if v["parent"] in x_of:
            ax.annotate("", xy=(x_of[v["id"]], 0), xytext=(x_of[v["parent"]], 0), arrowprops={"arrowstyle": "->", "lw": 1.5})
        ax.scatter([x_of[v["id"]]], [0], s=500, color="tab:blue", zorder=3)
        ax.text(x_of[v["id"]], 0, f"v{v['id']}", ha="center", va="center", color="white", fontsize=8, zorder=4)
    for d, x in zip(doc["datasets"], spread(len(doc["datasets"]))):
        ax.scatter([x], [1], s=300, marker="s", color="tab:green", zorder=3)
        ax.text(x, 1.12, f"{d['name']}\n{d['licence'][:20]}\n{100 * d['share']:.0f}%", ha="center", va="bottom", fontsize=7)
        for v in versions:
            drawn = sum(n for c in v.get("contributions") or [] for dd, n in c["windows"] if dd == d["id"])
            if drawn or (v["parent"] is None and d["id"] in (v.get("dataset_ids") or [])):
                ax.plot([x, x_of[v["id"]]], [1, 0], color="tab:green", alpha=0.5, lw=0.5 + 4 * drawn / heaviest)
    for t, x in zip(doc["contributors"], spread(len(doc["contributors"]))):
        ax.scatter([x], [-1], s=300, marker="^", color="tab:orange", zorder=3)
        ax.text(x, -1.12, f"{t['trainer'][:10]}…\n{100 * t['share']:.0f}%", ha="center", va="top", fontsize=7)
        for v in versions:
            drawn = sum(sum(n for _, n in c["windows"]) for c in v.get("contributions") or [] if c["trainer"] == t["trainer"])
            if drawn:
                ax.plot([x, x_of[v["id"]]], [-1, 0], color="tab:orange", alpha=0.5, lw=0.5 + 4 * drawn / heaviest)
    ax.set_ylim(-1.8, 1.8)
    ax.set_xlim(-1, max(len(versions), 2))
    ax.axis("off")
    ax.set_title(f"GradientChain: lineage of version {doc['version']} (datasets above, trainers below)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


LOSS_AGREEMENT_PPM = 100  # a held-out loss within 1e-4 (relative) of the chain's agrees: the 4 decimals printed


def _agreement(figures: dict[str, int], on_chain: dict[str, int]) -> dict[str, bool]:
    """For each figure the chain also records: does ours agree with it?"""
    out: dict[str, bool] = {}
    ours, theirs = figures.get("held_out_loss_micro"), on_chain.get("held_out_loss_micro")
    if ours is not None and theirs is not None:
        out["held_out_loss_micro"] = abs(ours - theirs) * 1_000_000 <= LOSS_AGREEMENT_PPM * max(theirs, 1)
    if "prompts_correct" in figures and "prompts_correct" in on_chain and on_chain.get("prompts_total") == figures["prompts_total"]:
        out["prompts"] = figures["prompts_correct"] == on_chain["prompts_correct"]  # only like with like: the same prompts
    return out


def _verdict(agrees: bool | None, chain_text: str, exact: bool = False) -> str:
    if agrees is None:
        return "not recorded on chain"
    if agrees:
        return f"chain says {chain_text}: agrees" + (" exactly" if exact else "")
    return f"chain says {chain_text}: DISAGREES"


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


class _PromptProgress:
    """Per-prompt progress on stderr: a line per answer with --verbose, else a counter overwritten in place on a terminal."""

    def __init__(self, total: int, verbose: bool):
        self.total, self.verbose, self.done = total, verbose, 0
        self.counter = not verbose and _stderr_is_terminal()

    def start(self) -> None:
        if self.counter:
            click.echo(f"\rprompt 0/{self.total}", err=True, nl=False)

    def __call__(self, prompt: Any, answer: str, ok: bool) -> None:
        self.done += 1
        if self.verbose:
            short = " ".join(answer.split())
            short = short if len(short) <= 60 else short[:59] + "…"
            click.echo(f"{'✓' if ok else '✗'} {prompt.question}  → {short}", err=True)
        elif self.counter:
            click.echo(f"\rprompt {self.done}/{self.total}", err=True, nl=False)

    def finish(self) -> None:
        if self.counter:
            click.echo("\r" + " " * len(f"prompt {self.total}/{self.total}") + "\r", err=True, nl=False)  # clear the counter


@model.command("eval")
@click.option("--version", "version", type=click.IntRange(min=0), default=None, help="Version id [default: latest].")
@click.option("--dataset", "dataset_id", type=click.IntRange(min=0), default=None,
              help="Dataset id for the held-out loss [default: the version's first dataset].")
@click.option("--no-prompts", is_flag=True, help="Skip the 25 fixed prompts (held-out loss only).")
@click.option("--prompts", "n_prompts", type=click.IntRange(min=1, max=25), default=None,
              help="Score the first N fixed prompts [default: as many as the chain scored for this version, else 25].")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Torch threads; the held-out loss matches validators' bits only with their 2.")
@click.option("--verbose", "-v", is_flag=True, help="Print each prompt's verdict (✓/✗), question and answer on stderr.")
@_ipfs_option
@_timeout_option
@shared_flags()
@_model_errors
def eval_(cli: Cli, version: int | None, dataset_id: int | None, no_prompts: bool, n_prompts: int | None, threads: int,
          verbose: bool, ipfs: str, timeout: float) -> None:
    """Evaluate a version yourself: held-out loss and the fixed prompt set, checked against the chain's figures.

    \b
    Example:
      $ gradchain model eval --version 1 -v
    """
    from abci_app.ml import determinism
    from abci_app.ml.evaluate import PROMPTS, evaluate
    from abci_app.ml.family import load_model

    with ChainClient(cli.node) as chain:
        entry = version_entry(chain, version)
        ds_id = dataset_id if dataset_id is not None else next(iter(entry.get("dataset_ids") or []), None)
        if ds_id is None and no_prompts:
            raise CliError(f"nothing to evaluate: version {entry['id']} names no dataset and --no-prompts was given (pass --dataset ID)")
        pulled = pull_entry(cli, entry, ipfs, timeout)
        data_path = pull_dataset(cli, chain, ipfs, ds_id, timeout).path if ds_id is not None else None
    determinism.pin(threads)
    family, loaded = load_model(pulled.path, expect_config_hash=entry["config_hash"])
    data = family.dataset(loaded, data_path) if data_path is not None else None
    on_chain = {k: v for k, v in (entry.get("metrics") or {}).items() if isinstance(v, int)}
    count = 0 if no_prompts else n_prompts or on_chain.get("prompts_total") or len(PROMPTS)
    progress = _PromptProgress(count, verbose)
    if count:
        progress.start()
    try:
        figures = evaluate(family, loaded, data, prompts=count, on_answer=progress)
    except ValueError as exc:  # e.g. a held-out split too short for one evaluation window
        raise CliError(f"cannot evaluate version {entry['id']} on dataset {ds_id}: {exc}") from None
    finally:
        progress.finish()

    agrees = _agreement(figures, on_chain)
    if cli.output == "json":
        cli.emit({"version": entry["id"], "cid": entry["cid"], "family": entry["family"], "dataset": ds_id, "threads": threads,
                  **figures, "metrics": on_chain, "agrees": agrees}, "")
        return
    lines = [f"version {entry['id']} ({entry['family']}), cid {entry['cid']}"]
    if "held_out_loss_micro" in figures:
        ours, theirs = figures["held_out_loss_micro"], on_chain.get("held_out_loss_micro")
        lines.append(f"held-out loss  {_loss_text(ours)} nats/token over {figures['held_out_tokens']} tokens of dataset {ds_id}"
                     f"  ({_verdict(agrees.get('held_out_loss_micro'), _loss_text(theirs), ours == theirs)})")
        if threads != determinism.DEFAULT_THREADS and theirs is not None and ours != theirs:
            n = determinism.DEFAULT_THREADS
            lines.append(f"               (validators use {n} threads: --threads {n} reproduces their bits)")
    else:
        lines.append(f"held-out loss  skipped: version {entry['id']} names no dataset (pass --dataset ID)")
    if "prompts_total" in figures:
        other = "prompts_total" in on_chain and "prompts" not in agrees
        verdict = f"chain scored {_prompts_text(on_chain)}: other prompts" if other else _verdict(agrees.get("prompts"), _prompts_text(on_chain))
        lines.append(f"prompts        {figures['prompts_correct']}/{figures['prompts_total']} correct  ({verdict})")
    else:
        lines.append("prompts        skipped (--no-prompts)")
    cli.emit(None, "\n".join(lines))


# --- dataset ---------------------------------------------------------------------


@click.group()
def dataset() -> None:
    """Registered datasets: list, inspect (register one with `gradchain tx dataset add`)."""


@dataset.command("list")
@shared_flags()
@_model_errors
def dataset_list(cli: Cli) -> None:
    """List registered datasets with their market state: sampling weight (0 = not admitted: no round
    draws from it), royalty, and what the owner has earned for the windows drawn in accepted submissions.

    \b
    Example:
      $ gradchain dataset list
    """
    with ChainClient(cli.node) as chain:
        items = chain.query_pages("/datasets/list")
    header = f"{'ID':>3}  {'NAME':<20}  {'WEIGHT':>7}  {'ROYALTY':>7}  {'EARNED':>12}  {'WINDOWS':>9}  {'BYTES':>12}  {'LICENCE':<20}  {'OWNER':<41}  CID"
    rows = [f"{d['id']:>3}  {d['name']:<20}  {d.get('weight', 0):>7}  {d.get('royalty_bps', 0) / 100:>6.2f}%  {d.get('earned', 0):>12}  "
            f"{d.get('windows', 0):>9}  {d['bytes']:>12}  {d['licence'][:20]:<20}  {d.get('owner') or d['creator']:<41}  {d['cid']}" for d in items]
    cli.emit(items, "\n".join([header] + rows) if items else "no dataset is registered")


@dataset.command("show")
@click.argument("dataset_id", type=click.IntRange(min=0))
@shared_flags()
@_model_errors
def dataset_show(cli: Cli, dataset_id: int) -> None:
    """Show one dataset's provenance record and its market state (owner, weight, earnings), as `dataset list` does.

    \b
    Example:
      $ gradchain dataset show 0
    """
    with ChainClient(cli.node) as chain:
        entry = dataset_entry(chain, dataset_id)
        earnings = chain.query_json("/datasets/earnings", str(dataset_id)) or {"earned": 0, "windows": 0, "submissions": 0}
        entry |= {"owner": entry.get("owner") or entry["creator"], "weight": chain.query_int("/datasets/weight", str(dataset_id))} | earnings
    cli.emit(entry, "\n".join(f"{k}: {v}" for k, v in entry.items()))


@click.group("dataset")
def dataset_tx() -> None:
    """Dataset transactions: register a dataset."""


@dataset_tx.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "from_", required=True, help="Key that signs the registration.")
@click.option("--name", required=True, help="Dataset name.")
@click.option("--licence", required=True, help="Licence, e.g. public-domain or CC-BY-4.0.")
@click.option("--owner", default="", help="Address paid the royalties [default: the signer].")
@click.option("--royalty-bps", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Royalty in basis points of an accepted reward, by the share of its windows drawn from this dataset "
                   "(at most datasets.params.max_royalty_bps).")
@_ipfs_option
@tx_flags
@shared_flags()
@_model_errors
def dataset_add(cli: Cli, file: Path, from_: str, name: str, licence: str, owner: str, royalty_bps: int, ipfs: str,
                fee: int | None, memo: str, nonce: int | None, no_wait: bool, yes: bool) -> None:
    """Add FILE to IPFS and register it (bytes-level tokenizer: tokens = bytes).

    Shows the file's CID and sha256 and asks first (unless --yes); then adds
    it to IPFS and sends the registration. A registered dataset is not yet
    trained on: a governance proposal admits it with a sampling weight
    (MsgSetDatasetWeight).

    \b
    Example:
      $ gradchain tx dataset add corpus.txt --from dev0 --name my-corpus --licence CC0-1.0 --royalty-bps 500 -y
    """
    key = signer_key(cli.keyring, from_)
    if owner and not crypto.is_address(owner):
        raise CliError(f"invalid --owner {owner[:80]!r}: expected an address (gc1…)")
    digest, size, cid = file_sha256(file), file.stat().st_size, cid_of_file(file)
    msg = txlib.MsgRegisterDataset(name=name, cid=cid, sha256=digest, licence=licence, bytes=size, tokens=size, tokenizer="bytes",
                                   owner=owner, royalty_bps=royalty_bps)
    summary = (f"register {file} as dataset '{name}' ({size} bytes, licence {licence}, cid {cid}), owner {owner or key.address}, "
               f"royalty {royalty_bps} bps, signer {from_} ({key.address})")
    with cli.client() as chain:
        nonce, fee = confirm(chain, key, msg, summary, fee=fee, memo=memo, nonce=nonce, yes=yes)
        with IpfsClient(ipfs) as client:  # only once confirmed: a declined registration publishes nothing
            added = client.add(file)
        if added != cid:
            raise CliError(f"IPFS node {ipfs} returned CID {added} for {file}, whose CID is {cid}: not registered")
        result = send(cli, chain, key, msg, fee=fee, nonce=nonce, memo=memo, wait=not no_wait)
    where = f"at height {result.height}" if result.height is not None else "(in the mempool; not waiting for a block)"
    cli.emit({"cid": cid, "sha256": digest, "bytes": size, "hash": result.hash, "height": result.height},
             f"added {file} to IPFS as {cid}\nregistered in tx {result.hash} {where}")


def _hidden_alias(command: click.Command, new_path: str) -> click.Command:
    """`command` under its old name, left out of help listings. The old command never asked
    for confirmation, so the alias does not either (--yes by default): scripts keep working."""
    alias = copy.copy(command)
    alias.hidden = True
    alias.help = f"Deprecated alias of `{new_path}` (which asks before signing; this name does not).\n\n{inspect.cleandoc(command.help or '')}"
    alias.params = [copy.copy(param) for param in command.params]
    for param in alias.params:
        if param.name == "yes":
            param.default = True
    return alias


dataset.add_command(_hidden_alias(dataset_add, "gradchain tx dataset add"), "add")


# --- chat ------------------------------------------------------------------------

CHAT_COMMANDS = """commands:
  /reset   forget the conversation (a --system message stays)
  /exit    leave (also /quit, or Ctrl-D)
  /help    this list
Ctrl-C stops an answer while it streams."""


class Conversation:
    """One chat session with a loaded model.

    Families with a `chat` method (a chat template) get the whole conversation
    every turn: the system message, then the alternating user and assistant
    turns. When that would not leave `max_new_tokens` of the model's context
    for the answer, the oldest turns are dropped (the system message stays).
    Families without one (tiny-gpt) continue each message as plain text,
    without history. Turn n samples with seed + n, so a conversation replays
    the same with the same seed.
    """

    def __init__(self, family: Any, loaded: Any, params: Any, system: str | None = None):
        self.family, self.loaded, self.params, self.system = family, loaded, params, system
        self.templated = callable(getattr(family, "chat", None))
        self.history: list[dict[str, str]] = []  # user, assistant, user, ... (never the system message)
        self.turn = 0
        self.dropped = 0  # turns the last reply dropped to fit the context

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history

    def reset(self) -> None:
        self.history.clear()
        self.turn = 0

    def reply(self, text: str) -> Iterator[str]:
        """The answer to one user message, as streamed text pieces (close the iterator if you stop early)."""
        params = replace(self.params, seed=self.params.seed + self.turn)
        if not self.templated:
            self.turn += 1
            return iter(self.family.generate(self.loaded, text, params))
        self.history.append({"role": "user", "content": text})
        try:
            self.dropped = self._fit()
        except CliError:
            self.history.pop()
            raise
        self.turn += 1
        return self._stream(params)

    def _stream(self, params: Any) -> Iterator[str]:
        pieces: list[str] = []
        try:
            for piece in self.family.chat(self.loaded, self.messages(), params):
                pieces.append(piece)
                yield piece
        finally:  # also when stopped early: the partial answer is what the user saw
            self.history.append({"role": "assistant", "content": "".join(pieces)})

    def _fit(self) -> int:
        """Drop the oldest user/assistant turns until the prompt leaves room for the answer; how many were dropped."""
        context = self.family.context_length(self.loaded) if hasattr(self.family, "context_length") else None
        if context is None:
            return 0
        budget = context - self.params.max_new_tokens
        dropped = 0
        size = _prompt_tokens(self.loaded, self.messages())
        while size is not None and size > budget and len(self.history) > 1:
            del self.history[:2]  # the oldest user message and its answer
            dropped += 1
            size = _prompt_tokens(self.loaded, self.messages())
        if size is not None and size > budget:
            what = "the message and the --system message are" if self.system else "the message is"
            raise CliError(f"{what} {size} tokens; with --max-tokens {self.params.max_new_tokens} the model's "
                           f"{context}-token context has room for {max(budget, 0)}: shorten it or lower --max-tokens")
        return dropped


def _prompt_tokens(loaded: Any, messages: list[dict[str, str]]) -> int | None:
    """Tokens of the conversation through the chat template (None when the tokenizer cannot tell)."""
    tokenizer = getattr(loaded, "tokenizer", None)
    if hasattr(tokenizer, "chat_ids"):
        return len(tokenizer.chat_ids(messages))
    if hasattr(tokenizer, "encode"):
        return sum(len(tokenizer.encode(m["content"])) + 8 for m in messages) + 8  # a margin for the template's markers
    return None


def _say(conversation: Conversation, text: str) -> None:
    """Stream one answer to stdout; Ctrl-C stops it (the partial answer stays in the history)."""
    stream = conversation.reply(text)
    if conversation.dropped:
        turns = f"{conversation.dropped} oldest turn{'s' if conversation.dropped > 1 else ''}"
        click.echo(f"(dropped the {turns} to fit the model's context)", err=True)
    try:
        for piece in stream:
            click.echo(piece, nl=False)
    except KeyboardInterrupt:
        click.echo("\n(stopped)", err=True, nl=False)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    click.echo()


def _repl(conversation: Conversation, entry: dict) -> None:
    mode = ("multi-turn, with the model's chat template" if conversation.templated
            else "no chat template: each line is continued as plain text")
    click.echo(f"GradientChain chat: version {entry['id']} ({entry['family']}), cid {entry['cid']}\n"
               f"{mode}; /help for commands, /exit to quit", err=True)
    while True:
        try:
            text = click.prompt("you", prompt_suffix="> ", err=True).strip()
        except (EOFError, click.Abort):
            click.echo("", err=True)
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/help":
            click.echo(CHAT_COMMANDS, err=True)
        elif text == "/reset":
            conversation.reset()
            click.echo("(conversation reset)", err=True)
        elif text.startswith("/") and " " not in text:
            click.echo(f"unknown command {text}: /help lists them", err=True)
        elif text:
            try:
                _say(conversation, text)
            except CliError as exc:
                click.echo(f"error: {exc}", err=True)


@click.command()
@click.option("--version", "version", type=click.IntRange(min=0), default=None, help="Version id [default: latest].")
@click.option("--prompt", default=None, help="Answer this one message and exit (for scripts); without it, an interactive session.")
@click.option("--system", default=None, help="A system message to start the conversation with (models with a chat template).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.8, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=click.IntRange(min=1), default=None)
@click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=None)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed: the same seed gives the same answer.")
@_ipfs_option
@_timeout_option
@shared_flags()
@_model_errors
def chat(cli: Cli, version: int | None, prompt: str | None, system: str | None, max_tokens: int, temperature: float,
         top_k: int | None, top_p: float | None, seed: int, ipfs: str, timeout: float) -> None:
    """Talk to a registered model version (pulled and verified first).

    Models with a chat template (smollm2-lora) answer as an assistant and
    remember the conversation; the others (tiny-gpt) continue each line as text.
    In the interactive session: /reset, /exit, /help.

    \b
    Example:
      $ gradchain chat --prompt "What is the capital of France?" --max-tokens 40
    """
    from abci_app.ml import determinism
    from abci_app.ml.family import load_model
    from abci_app.ml.generate import SamplingParams

    if prompt is None and cli.output == "json":
        raise CliError("-o json needs --prompt (the interactive session streams text)")
    if prompt is not None and not prompt.strip():
        raise CliError("--prompt is empty: give the message to answer")
    if system is not None and not system.strip():
        raise CliError("--system is empty: leave it out or give the system message")
    with ChainClient(cli.node) as chain:
        pulled = pull(cli, chain, ipfs, version, timeout)
    entry = pulled.entry
    determinism.pin(1)  # chat need not match validators' bits; one thread is faster on a busy machine (docs/ml.md)
    family, loaded = load_model(pulled.path, expect_config_hash=entry["config_hash"])
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    conversation = Conversation(family, loaded, params, system)
    if system is not None and not conversation.templated:
        raise CliError(f"--system needs a model with a chat template; version {entry['id']} ({entry['family']}) only continues text")
    if prompt is None:
        _repl(conversation, entry)
        return
    if cli.output != "json":
        _say(conversation, prompt)
        click.echo(f"(version {entry['id']} ({entry['family']}), cid {entry['cid']})", err=True)  # stdout keeps only the answer
        return
    answer = "".join(conversation.reply(prompt))
    out = {"version": entry["id"], "cid": entry["cid"], "prompt": prompt, "completion": answer}
    cli.emit(out | ({"system": system} if system is not None else {}), "")
