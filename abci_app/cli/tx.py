"""`gradchain tx`: build, sign, broadcast and follow transactions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from google.protobuf.message import Message

from abci_app import crypto
from abci_app import tx as txlib
from abci_app.cli.common import AMOUNT, DENOM, FEE, Cli, CliError, resolve_address, shared_flags, signer_key
from abci_app.client import ChainClient, TxRejected
from abci_app.rpc import TxResult


def sign_and_broadcast(
    cli: Cli, key: crypto.PrivateKey, msg: Message, summary: str, *,
    fee: int | None, memo: str, nonce: int | None, wait: bool, yes: bool,
) -> None:
    """The common tail of every `tx` command: confirm, send, report."""
    with cli.client() as chain:
        nonce, fee = confirm(chain, key, msg, summary, fee=fee, memo=memo, nonce=nonce, yes=yes)
        result = send(cli, chain, key, msg, fee=fee, nonce=nonce, memo=memo, wait=wait)
    report(cli, result)


def confirm(chain: ChainClient, key: crypto.PrivateKey, msg: Message, summary: str, *,
            fee: int | None, memo: str, nonce: int | None, yes: bool) -> tuple[int, int]:
    """The (nonce, fee) to sign with: the account's next nonce and the fee the chain needs, unless given.
    Shows them with `summary` and asks first, unless --yes."""
    nonce = chain.nonce(key.address) if nonce is None else nonce
    fee = chain.fee_needed(key, msg, nonce, memo) if fee is None else fee
    if not yes:
        click.echo(f"{summary}\nfee {fee} {DENOM}, nonce {nonce}, chain {chain.chain_id}", err=True)
        if not click.confirm("confirm transaction before signing and broadcasting", err=True):
            raise CliError("transaction not sent (answer 'y' to the prompt, or pass --yes)")
    return nonce, fee


def send(cli: Cli, chain: ChainClient, key: crypto.PrivateKey, msg: Message, *,
         fee: int, nonce: int, memo: str, wait: bool) -> TxResult:
    """chain.send; a tx that failed in its block is also reported on stdout with -o json, then raised."""
    try:
        return chain.send(key, msg, fee=fee, nonce=nonce, memo=memo, wait=wait)
    except TxRejected as exc:
        if exc.height is not None and cli.output == "json":
            cli.emit({"hash": exc.hash, "height": exc.height, "code": exc.code, "codespace": exc.codespace, "log": exc.log}, "")
        raise


def report(cli: Cli, result: TxResult) -> None:
    """The hash and height of a sent tx (height null with --no-wait)."""
    if result.height is None:
        cli.emit({"hash": result.hash, "height": None, "code": 0}, f"hash:   {result.hash}\n(in the mempool; not waiting for a block)")
        return
    data = {"hash": result.hash, "height": result.height, "code": result.code, "codespace": result.codespace, "log": result.log}
    cli.emit(data, f"hash:   {result.hash}\nheight: {result.height}\ncode:   0")


# --- commands ----------------------------------------------------------------

_TX_OPTIONS = [
    click.option("--fee", "--fees", "fee", type=FEE, default=None, help="Fee in ugrad [default: what the chain needs: bank min_fee, plus byte_fee for large writes]."),
    click.option("--memo", default="", help="Note stored with the transaction."),
    click.option("--nonce", type=click.IntRange(min=0), default=None, help="Override the account nonce (for txs queued behind others)."),
    click.option("--no-wait", is_flag=True, help="Return once the mempool accepts it, without waiting for a block."),
    click.option("--yes", "-y", is_flag=True, help="Skip the confirmation prompt."),
]


def tx_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """The flags every transaction command takes, declared once."""
    for option in reversed(_TX_OPTIONS):
        command = option(command)
    return command


@click.group()
def tx() -> None:
    """Sign and broadcast transactions."""


@tx.group()
def bank() -> None:
    """Bank transactions (token transfers)."""


# ignore_unknown_options so that `send a b -5` reports a bad amount, not "no such option -5"
@bank.command("send", context_settings={"ignore_unknown_options": True})
@click.argument("from_", metavar="FROM")
@click.argument("to", metavar="TO")
@click.argument("amount", metavar="AMOUNT", type=AMOUNT)
@tx_flags
@shared_flags()
def bank_send(cli: Cli, from_: str, to: str, amount: int, fee: int | None, memo: str, nonce: int | None, no_wait: bool, yes: bool) -> None:
    """Send AMOUNT ugrad from key FROM to TO (an address or a key name).

    Waits until the tx is in a block and prints its hash and height; exits
    non-zero with the chain's log if it is rejected.

    \b
    Example:
      $ gradchain tx bank send alice gc1qyp...k9s 1000 --yes
    """
    key = signer_key(cli.keyring, from_)
    recipient = resolve_address(cli.keyring, to)
    summary = f"send {amount} {DENOM} from {from_} ({key.address}) to {recipient}"
    msg = txlib.MsgSend(recipient=recipient, amount=amount)
    sign_and_broadcast(cli, key, msg, summary, fee=fee, memo=memo, nonce=nonce, wait=not no_wait, yes=yes)
