"""`gradchain tx`: build, sign, broadcast and follow transactions."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from google.protobuf.message import Message

from abci_app import crypto
from abci_app import tx as txlib
from abci_app.cli.common import AMOUNT, DENOM, FEE, Cli, CliError, query_int, resolve_address, result_code, shared_flags, signer_key
from abci_app.client import fee_for
from abci_app.rpc import RpcClient, RpcError

FALLBACK_MIN_FEE = 1  # when the node does not publish /app/params


def min_fee(rpc: RpcClient) -> int:
    """The chain's bank.min_fee from /app/params, or FALLBACK_MIN_FEE if it is not published."""
    try:
        result = rpc.abci_query("/app/params")
        return int(json.loads(result.value)["bank"]["min_fee"]) if result.code == 0 else FALLBACK_MIN_FEE
    except (RpcError, ValueError, KeyError, TypeError):
        return FALLBACK_MIN_FEE


def sign_and_broadcast(
    cli: Cli, key: crypto.PrivateKey, msg: Message, summary: str, *,
    fee: int | None, memo: str, nonce: int | None, wait: bool, yes: bool,
) -> None:
    """The common tail of every `tx` command: nonce, fee, confirm, sign, broadcast, wait, report."""
    with cli.rpc() as rpc:
        chain_id = rpc.chain_id()
        nonce = query_int(rpc, "/auth/nonce", key.address) if nonce is None else nonce
        if fee is None:  # the chain's min_fee, plus its byte fee when the message writes much state
            fee = fee_for(rpc, min_fee(rpc), lambda f: txlib.build_unsigned(key.pubkey, chain_id, nonce, f, msg, memo=memo))
        if not yes:
            click.echo(f"{summary}\nfee {fee} {DENOM}, nonce {nonce}, chain {chain_id}", err=True)
            if not click.confirm("confirm transaction before signing and broadcasting", err=True):
                raise CliError("transaction not sent (answer 'y' to the prompt, or pass --yes)")
        raw = txlib.build(key, chain_id, nonce, fee, msg, memo=memo)
        sent = rpc.broadcast_tx_sync(raw)
        if sent.code != 0:
            raise CliError(f"tx rejected {result_code(sent.codespace, sent.code)}: {sent.log or 'no log'}")
        if not wait:
            cli.emit({"hash": sent.hash, "height": None, "code": 0}, f"hash:   {sent.hash}\n(in the mempool; not waiting for a block)")
            return
        result = rpc.wait_for_tx(sent.hash)
    report = {"hash": result.hash, "height": result.height, "code": result.code, "codespace": result.codespace, "log": result.log}
    if result.code != 0:
        if cli.output == "json":
            cli.emit(report, "")
        raise CliError(
            f"tx rejected {result_code(result.codespace, result.code)}: {result.log or 'no log'}"
            f" (tx {result.hash} in block {result.height}; the fee was charged)"
        )
    cli.emit(report, f"hash:   {result.hash}\nheight: {result.height}\ncode:   0")


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
def send(cli: Cli, from_: str, to: str, amount: int, fee: int | None, memo: str, nonce: int | None, no_wait: bool, yes: bool) -> None:
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
