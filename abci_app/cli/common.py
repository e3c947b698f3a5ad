"""What every command shares: the --home/--node/--output flags, output, argument parsing, errors.

The flags are declared once here (like the Cosmos SDK's persistent flags) and
added to each leaf command by `shared_flags`, which hands the command a `Cli`.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from abci_app import crypto, paging
from abci_app.client import ChainClient, result_code
from abci_app.keyring import BACKEND_ENV, BACKENDS, NAME_PATTERN, Keyring, KeyringError, passphrase_source
from abci_app.rpc import DEFAULT_NODE, AbciQueryResult, RpcClient

DEFAULT_HOME = "~/.gradchain"
DENOM = "ugrad"  # the smallest unit; every amount on chain is an integer of it
DEBUG_ENV = "GRADCHAIN_DEBUG"


class CliError(Exception):
    """A failure the user can act on; main() prints it as one `error: ...` line."""


@dataclass(frozen=True)
class Cli:
    """The shared flags of one invocation."""

    home: Path
    node: str
    output: str  # "text" or "json"
    keyring_backend: str | None = None  # None: $GRADCHAIN_KEYRING_BACKEND, the keyring dir's marker, or `file`
    passphrase_file: Path | None = None

    @functools.cached_property
    def keyring(self) -> Keyring:
        """One per invocation, so a command asks for a passphrase (and warns) once."""
        prompt = _terminal_prompt if is_terminal() else None
        return Keyring(self.home, self.keyring_backend, passphrase_source(self.passphrase_file, prompt))

    def rpc(self) -> RpcClient:
        return RpcClient(self.node)

    def client(self) -> ChainClient:
        return ChainClient(self.node)

    def emit(self, data: Any, text: str) -> None:
        """Print `text`, or `data` as one JSON document with --output json."""
        click.echo(json.dumps(data) if self.output == "json" else text)


def is_terminal() -> bool:
    """Whether a person can answer prompts (tests patch this)."""
    return sys.stdin.isatty()


def _terminal_prompt(question: str, confirm: bool) -> str:
    """Hidden input; the prompt goes to stderr so stdout stays clean for -o json."""
    return click.prompt(question, hide_input=True, confirmation_prompt=confirm, err=True)


# --- shared flags ------------------------------------------------------------

_home = click.option(
    "--home", envvar="GRADCHAIN_HOME", default=DEFAULT_HOME, show_default=True, metavar="DIR",
    help="Directory with the keyring (DIR/keyring) [env: GRADCHAIN_HOME].",
)
_node = click.option(
    "--node", envvar="GRADCHAIN_NODE", default=DEFAULT_NODE, show_default=True, metavar="URL",
    help="CometBFT RPC endpoint [env: GRADCHAIN_NODE].",
)
_output = click.option(
    "--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output format.",
)
_keyring_backend = click.option(
    "--keyring-backend", type=click.Choice(BACKENDS), envvar=BACKEND_ENV, default=None,
    help="'file' (encrypted, the default) or 'test' (unencrypted, localnets only; a localnet's keyring is marked so) "
         f"[env: {BACKEND_ENV}].",
)
_passphrase_file = click.option(
    "--passphrase-file", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
    help="Read the keyring passphrase from FILE's first line (else $GRADCHAIN_KEYRING_PASSPHRASE, else a prompt).",
)


def shared_flags(node: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add --home, --output, the keyring flags (and --node unless the command never talks to a node); pass a `Cli` first."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*, home: str, output: str, keyring_backend: str | None, passphrase_file: Path | None,
                    node: str = DEFAULT_NODE, **kwargs: Any) -> Any:
            return command(Cli(Path(home).expanduser(), node, output, keyring_backend, passphrase_file), **kwargs)

        flags = [_home, _node, _output] if node else [_home, _output]
        flags += [_keyring_backend, _passphrase_file]
        for flag in reversed(flags):
            wrapper = flag(wrapper)
        return wrapper

    return decorate


# --- argument types ----------------------------------------------------------


class AmountType(click.ParamType):
    """An integer number of ugrad, written `1000` or `1000ugrad`; never a float."""

    name = "amount"

    def __init__(self, minimum: int = 1):
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        match = re.fullmatch(r"([0-9]+)([A-Za-z]*)", text)
        if not match:
            self.fail(f"'{text}' is not a whole number of {DENOM} (no signs, decimals or exponents)", param, ctx)
        if match[2] and match[2] != DENOM:
            self.fail(f"unknown denomination '{match[2]}' in '{text}': amounts are integers of {DENOM}", param, ctx)
        amount = int(match[1])
        if amount < self.minimum:
            self.fail(f"'{text}' must be at least {self.minimum} {DENOM}", param, ctx)
        return amount


AMOUNT = AmountType(minimum=1)
FEE = AmountType(minimum=0)


# --- keys and addresses ------------------------------------------------------


def _address_problem(text: str) -> str | None:
    """Why `text` is not a valid address, if it was evidently meant as one; None otherwise."""
    try:
        crypto.parse_address(text)
        return None
    except crypto.AddressError as exc:
        reason = str(exc)
    try:
        crypto.bech32_decode(text)
        return reason  # well-formed bech32: another chain's prefix, or the wrong length
    except crypto.AddressError:
        pass
    meant_as_address = text.lower().startswith(crypto.ADDRESS_HRP + "1") or (len(text) >= 30 and "1" in text)
    return reason if meant_as_address else None


def resolve_address(keyring: Keyring, text: str) -> str:
    """An address given directly, or the address of a key in the keyring."""
    if crypto.is_address(text):
        return crypto.parse_address(text)
    if NAME_PATTERN.match(text) and text in keyring.names():
        return keyring.address(text)  # from the clear part of the key file: no passphrase
    problem = _address_problem(text)
    if problem:
        raise crypto.AddressError(f"invalid address '{text}': {problem}")
    raise KeyringError(f"'{text}' is neither an address nor a key in {keyring.dir} (see `gradchain keys list`)")


def signer_key(keyring: Keyring, text: str) -> crypto.PrivateKey:
    """The key to sign with, named by key name or by its address."""
    if crypto.is_address(text):
        address = crypto.parse_address(text)
        for name in keyring.names():
            if keyring.address(name) == address:  # only the matching key is decrypted
                return keyring.get(name)
        raise KeyringError(f"no key for address {address} in {keyring.dir} (see `gradchain keys list`)")
    return keyring.get(text)


# --- queries -----------------------------------------------------------------


def abci_query(rpc: RpcClient, path: str, data: str = "", height: int = 0, prove: bool = False) -> AbciQueryResult:
    """An ABCI query whose non-zero code becomes a CliError carrying the app's log."""
    result = rpc.abci_query(path, data.encode(), height=height, prove=prove)
    if result.code != 0:
        raise CliError(f"query {path} failed {result_code(result.codespace, result.code)}: {result.log or 'no log'}")
    return result


def query_pages(rpc: RpcClient, path: str, arg: str = "", after: str = "") -> tuple[list, int]:
    """Every entry of a paged list view (abci_app.paging) from cursor `after` on, and the height its last page was read at."""
    height = 0

    def fetch(data: str) -> bytes:
        nonlocal height
        result = abci_query(rpc, path, data)
        height = result.height
        return result.value
    try:
        return paging.walk(fetch, arg, after), height
    except ValueError as exc:
        raise CliError(f"query {path}: {exc}") from None


def decimal_value(result: AbciQueryResult, path: str) -> int:
    """The value of a query that answers in decimal ASCII (balances, nonces)."""
    try:
        return int(result.value.decode() or "0")
    except (UnicodeDecodeError, ValueError):
        raise CliError(f"query {path} returned {result.value[:32]!r}, not a decimal number") from None


def query_int(rpc: RpcClient, path: str, data: str = "") -> int:
    return decimal_value(abci_query(rpc, path, data), path)
