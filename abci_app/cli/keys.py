"""`gradchain keys`: create, list, show, export and import keys in <home>/keyring."""

from __future__ import annotations

import json
from typing import IO

import click

from abci_app import crypto
from abci_app.cli.common import Cli, shared_flags
from abci_app.keyring import export_key, import_key


def _info(name: str, key: crypto.PrivateKey) -> dict:
    """What is safe to show about a key: never the seed."""
    return {"name": name, "address": key.address, "pubkey": key.pubkey.hex()}


def _text(info: dict) -> str:
    return "\n".join(f"{field + ':':<9}{info[field]}" for field in ("name", "address", "pubkey"))


@click.group()
def keys() -> None:
    """Manage local keys (plain files in <home>/keyring, mode 0600)."""


@keys.command("add")
@click.argument("name")
@shared_flags(node=False)
def add(cli: Cli, name: str) -> None:
    """Create a new key called NAME and print its address.

    \b
    Example:
      $ gradchain keys add alice
    """
    key = cli.keyring.add(name)
    cli.emit(_info(name, key), _text(_info(name, key)))
    click.echo(f"key stored in {cli.keyring.dir}; back it up with `gradchain keys export {name}`", err=True)


@keys.command("list")
@shared_flags(node=False)
def list_(cli: Cli) -> None:
    """List the keys in the keyring with their addresses.

    \b
    Example:
      $ gradchain keys list -o json
    """
    keyring = cli.keyring
    infos = [_info(name, keyring.get(name)) for name in keyring.names()]
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
    """Show the address and public key of key NAME.

    \b
    Example:
      $ gradchain keys show alice --address
    """
    key = cli.keyring.get(name)
    if address_only:
        click.echo(key.address)  # plain, so `$(gradchain keys show alice -a)` works in scripts
        return
    cli.emit(_info(name, key), _text(_info(name, key)))


@keys.command("export")
@click.argument("name")
@shared_flags(node=False)
def export(cli: Cli, name: str) -> None:
    """Print key NAME as JSON, private key included (for `keys import`).

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
    """Import a key exported with `keys export` from FILE ('-' for stdin) as NAME.

    \b
    Example:
      $ gradchain keys import alice alice.json
    """
    _, key = import_key(file.read())
    cli.keyring.add(name, key)
    cli.emit(_info(name, key), f"imported key '{name}' ({key.address})")
