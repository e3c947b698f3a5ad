"""`gradchain keys`: create, recover, list, show, export and import keys in <home>/keyring.

The keyring is encrypted (`file` backend) unless it is a localnet's or
--keyring-backend test says otherwise; see abci_app.keyring.
"""

from __future__ import annotations

import json
import sys
from typing import IO

import click

from abci_app.cli import common
from abci_app.cli.common import Cli, shared_flags
from abci_app.keyring import HD_PATH_TEXT, KeyInfo, export_key, key_from_mnemonic, new_mnemonic

MNEMONIC_WARNING = (
    "**Important** write this mnemonic phrase down and keep it safe: it is the only way to recover "
    "this key if you lose the key file or forget its passphrase. It is not shown again."
)


def _info(info: KeyInfo) -> dict:
    """What is safe to show about a key: never the seed."""
    return {"name": info.name, "address": info.address, "pubkey": info.pubkey}


def _text(info: dict) -> str:
    return "\n".join(f"{field + ':':<9}{info[field]}" for field in ("name", "address", "pubkey"))


def _read_mnemonic() -> str:
    """From a hidden prompt at a terminal, else the first line of stdin (scripts)."""
    if common.is_terminal():
        return click.prompt("Enter your BIP-39 mnemonic", hide_input=True, err=True)
    return sys.stdin.readline()


@click.group()
def keys() -> None:
    """Manage local keys in <home>/keyring (encrypted with a passphrase; a localnet's dev keys are plain)."""


@keys.command("add")
@click.argument("name")
@click.option("--recover", is_flag=True, help="Recreate the key from its BIP-39 mnemonic (prompted, or the first line of stdin).")
@shared_flags(node=False)
def add(cli: Cli, name: str, recover: bool) -> None:
    """Create a new key called NAME from a fresh 24-word mnemonic, and print its address.

    The mnemonic is printed once, on stderr (in the JSON with -o json): write
    it down. An encrypted keyring asks for a passphrase twice at a terminal;
    scripts set GRADCHAIN_KEYRING_PASSPHRASE or pass --passphrase-file.

    \b
    Example:
      $ gradchain keys add alice
      $ gradchain keys add alice2 --recover < words.txt
    """
    keyring = cli.keyring
    keyring.check_new_name(name)  # a bad or taken name fails before any question
    mnemonic = None if recover else new_mnemonic()
    keyring.add(name, key_from_mnemonic(_read_mnemonic() if recover else mnemonic))
    info = _info(keyring.info(name))
    if mnemonic is None:
        cli.emit(info, _text(info))
        click.echo(f"key recovered from its mnemonic ({HD_PATH_TEXT}) and stored in {keyring.dir}", err=True)
        return
    cli.emit(info | {"mnemonic": mnemonic}, _text(info))
    click.echo(f"key stored in {keyring.dir} (backend '{keyring.backend}')", err=True)
    if cli.output == "json":
        click.echo(MNEMONIC_WARNING.replace("this mnemonic phrase", "the \"mnemonic\" in this output"), err=True)
    else:
        click.echo(f"\n{MNEMONIC_WARNING}\n\n{mnemonic}\n", err=True)


@keys.command("list")
@shared_flags(node=False)
def list_(cli: Cli) -> None:
    """List the keys in the keyring with their addresses (no passphrase needed).

    \b
    Example:
      $ gradchain keys list -o json
    """
    keyring = cli.keyring
    infos = [_info(keyring.info(name)) for name in keyring.names()]
    if not infos and cli.output == "text":
        click.echo(f"no keys in {keyring.dir} (create one with `gradchain keys add NAME`)", err=True)
        return
    width = max((len(info["name"]) for info in infos), default=4)
    cli.emit(infos, "\n".join(f"{info['name']:<{width}}  {info['address']}" for info in infos))


@keys.command("show")
@click.argument("name")
@click.option("--address", "-a", "address_only", is_flag=True, help="Print only the address.")
@shared_flags(node=False)
def show(cli: Cli, name: str, address_only: bool) -> None:
    """Show the address and public key of key NAME (no passphrase needed).

    \b
    Example:
      $ gradchain keys show alice --address
    """
    info = _info(cli.keyring.info(name))
    if address_only:
        click.echo(info["address"])  # plain, so `$(gradchain keys show alice -a)` works in scripts
        return
    cli.emit(info, _text(info))


@keys.command("export")
@click.argument("name")
@shared_flags(node=False)
def export(cli: Cli, name: str) -> None:
    """Print key NAME as JSON, private key included and unencrypted (for `keys import`); asks its passphrase.

    \b
    Example:
      $ gradchain keys export alice > alice.json
    """
    key = cli.keyring.get(name)
    click.echo(f"warning: this output contains the private key of '{name}'; anyone who has it can spend its funds", err=True)
    click.echo(json.dumps(export_key(name, key), indent=2, sort_keys=True))


@keys.command("import")
@click.argument("name")
@click.argument("file", type=click.File("r"))
@shared_flags(node=False)
def import_(cli: Cli, name: str, file: IO[str]) -> None:
    """Import key NAME from FILE ('-' for stdin): `keys export` output or an encrypted key file of a keyring.

    \b
    Example:
      $ gradchain keys import alice alice.json
    """
    key = cli.keyring.import_text(name, file.read())
    cli.emit(_info(cli.keyring.info(name)), f"imported key '{name}' ({key.address})")
