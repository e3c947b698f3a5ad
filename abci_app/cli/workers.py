"""`gradchain train` and `gradchain validate`: the off-chain daemons."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from abci_app.cli.common import Cli, CliError, shared_flags, signer_key
from abci_app.cli.model import _ipfs_option
from abci_app.client import ChainError, TxRejected
from abci_app.ipfs.client import IpfsError
from abci_app.models import ModelError

_worker_options = [
    click.option("--key", "key_name", required=True, help="Key that signs the worker's transactions."),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Worker directory; pulled files go to DIR/cache [default: HOME]."),
    click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="torch threads: trainers and validators must agree for bitwise recomputation."),
    click.option("--poll", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Seconds between looks at the chain."),
    click.option("--once", is_flag=True, help="Stop after one round's work is done."),
    click.option("--yes", "-y", is_flag=True, help="Sign transactions without asking (daemons always do)."),
    click.option("--metrics", default=None, metavar="HOST:PORT", help="Serve Prometheus metrics (verification seconds) at http://HOST:PORT/metrics."),
]


def worker_options(command: Any) -> Any:
    for option in reversed(_worker_options):
        command = option(command)
    return _ipfs_option(command)


def _run(cli: Cli, worker_cls: type, label: str, key_name: str, ipfs: str, cache_dir: Path | None, threads: int, poll: float, once: bool,
         metrics: str | None, **extra: Any) -> None:
    from abci_app.workers.base import run_loop

    if metrics:
        from abci_app.node import metrics as node_metrics

        node_metrics.serve(metrics)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll would drown the log
    key = signer_key(cli.keyring, key_name)
    worker = worker_cls(key, cli.node, ipfs, cache_dir or cli.home, threads=threads, **extra)
    click.echo(f"{label} {key.address} on {cli.node} (IPFS {ipfs}, kernel path {worker.kernel_path}, {threads} threads)", err=True)
    try:
        run_loop(lambda: worker.step(lambda line: click.echo(line, err=True)), poll, once, label, transient=(ChainError, IpfsError), fatal=(TxRejected,))
    except (ChainError, IpfsError, ModelError) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        worker.close()


@click.command()
@worker_options
@click.option("--cheat", type=click.Choice(["scale", "noise", "skip-steps"]), default=None, hidden=True,
              help="Submit a corrupted delta, or fake some steps (tests and demos).")
@click.option("--fake-fraction", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True, hidden=True,
              help="With --cheat skip-steps: the share of the k steps never computed.")
@shared_flags()
def train(cli: Cli, key_name: str, ipfs: str, cache_dir: Path | None, threads: int, poll: float, once: bool, yes: bool, metrics: str | None,
          cheat: str | None, fake_fraction: float) -> None:
    """Train on the chain's assigned batches and submit deltas, round after round.

    Needs a trainer bond (`gradchain tx staking bond-trainer`). With --once it
    exits after its submission of one round is decided.

    \b
    Example:
      $ gradchain train --key dev1 --once
    """
    from abci_app.workers.trainer import Trainer

    _run(cli, Trainer, "trainer", key_name, ipfs, cache_dir, threads, poll, once, metrics, cheat=cheat, fake_fraction_bps=round(fake_fraction * 10_000))


@click.command()
@worker_options
@shared_flags()
def validate(cli: Cli, key_name: str, ipfs: str, cache_dir: Path | None, threads: int, poll: float, once: bool, yes: bool,
             metrics: str | None) -> None:
    """Audit the submissions of our committees (recompute the sampled steps), commit and reveal
    the verdicts, judge fraud claims, and attest merges (one per validator).

    Restarts resume from chain state and HOME/audits: nothing is audited or sent twice.

    \b
    Example:
      $ gradchain validate --key validator0
    """
    from abci_app.workers.validator import Validator

    _run(cli, Validator, "validator", key_name, ipfs, cache_dir, threads, poll, once, metrics)
