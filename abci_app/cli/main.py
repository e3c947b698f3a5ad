"""The `gradchain` command: wires the command groups together and turns every failure into one line.

Users see `error: <what went wrong and what to do>` on stderr and a non-zero exit,
never a traceback (set GRADCHAIN_DEBUG=1 to get one).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from abci_app.cli.common import DEBUG_ENV, CliError
from abci_app.cli.explorer import explorer
from abci_app.cli.gov import gov_query, gov_tx
from abci_app.cli.keys import keys
from abci_app.cli.query import query, status
from abci_app.cli.model import chat, dataset, dataset_tx, model
from abci_app.cli.node import genesis, node
from abci_app.cli.staking import staking_query, staking_tx
from abci_app.cli.training import training_query
from abci_app.cli.tx import tx
from abci_app.cli.workers import train, validate
from abci_app.client import ChainError
from abci_app.crypto import AddressError
from abci_app.keyring import KeyringError
from abci_app.rpc import RpcError
from abci_app.tx import TxDecodeError

# Our own exception types: their message is already the one line a user should see.
USER_ERRORS = (CliError, KeyringError, AddressError, RpcError, ChainError, TxDecodeError)


def _fail(message: str, exit_code: int = 1) -> NoReturn:
    if os.environ.get(DEBUG_ENV):
        traceback.print_exc()
    click.echo("error: " + " ".join(message.split()), err=True)  # one line even if a chain log has newlines
    sys.exit(exit_code)


class RootGroup(click.Group):
    """The top-level group; its main() is where exceptions become `error:` lines.

    Overriding main() (rather than wrapping it) keeps click's CliRunner, which
    calls main(), seeing exactly what a user sees.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> NoReturn:
        try:
            rv = super().main(args, prog_name or "gradchain", complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help())  # a bare group is a request for help, as in the Cosmos SDK
            sys.exit(0)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            _fail(exc.format_message() + hint, exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("aborted")
        except USER_ERRORS as exc:
            _fail(str(exc))
        except Exception as exc:
            _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with {DEBUG_ENV}=1 for the traceback)")
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gradchain", prog_name="gradchain")
def cli() -> None:
    """GradientChain: a blockchain that trains a language model.

    \b
    Example:
      $ gradchain keys add alice && gradchain status
    """


tx.add_command(staking_tx)
tx.add_command(dataset_tx)
tx.add_command(gov_tx)
query.add_command(staking_query)
query.add_command(training_query)
query.add_command(gov_query)
cli.add_command(keys)
cli.add_command(tx)
cli.add_command(query)
cli.add_command(status)
cli.add_command(model)
cli.add_command(dataset)
cli.add_command(chat)
cli.add_command(train)
cli.add_command(validate)
cli.add_command(node)
cli.add_command(genesis)
cli.add_command(explorer)


def _add_localnet() -> None:
    """`gradchain localnet`, from its own module; a broken one must not take the other commands down."""
    try:
        from abci_app.cli.localnet import localnet
    except ModuleNotFoundError as exc:
        if exc.name == "abci_app.cli.localnet":
            return  # not written yet
        problem = f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    else:
        cli.add_command(localnet, "localnet")
        return

    @cli.command("localnet", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def unavailable() -> None:
        """Run a 4-validator network on loopback (unavailable: failed to load)."""
        raise CliError(f"localnet commands failed to load: {problem}")


_add_localnet()


def main(argv: Sequence[str] | None = None) -> NoReturn:
    cli.main(argv, prog_name="gradchain")


if __name__ == "__main__":
    main()
