"""`gradchain explorer`: serve the web explorer and chat page of one node (abci_app/explorer, docs/explorer.md)."""

from __future__ import annotations

import logging

import click

from abci_app.cli.common import Cli, CliError, shared_flags
from abci_app.cli.model import DEFAULT_IPFS
from abci_app.ports import port_in_use

DEFAULT_PORT = 8080


@click.command("explorer")
@click.option("--ipfs", envvar="GRADCHAIN_IPFS", default=DEFAULT_IPFS, show_default=True, metavar="URL",
              help="Kubo RPC API the chat pulls model versions from [env: GRADCHAIN_IPFS].")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="Port to serve on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback: this machine only).")
@click.option("--no-preload", is_flag=True, help="Pull and load the chat model on the first message instead of at startup.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Another name visitors reach the explorer by (a Host header it answers; repeatable). --host, localhost and 127.0.0.1 always are.")
@click.option("--public-node", metavar="URL", help="The node URL pages may show (default: --node if it is a loopback address, else none).")
@click.option("--public-ipfs", metavar="URL", help="The IPFS URL pages may show (default: --ipfs if it is a loopback address, else none).")
@shared_flags()
def explorer(cli: Cli, ipfs: str, port: int, host: str, no_preload: bool, allow_hosts: tuple[str, ...],
             public_node: str | None, public_ipfs: str | None) -> None:
    """Serve a web explorer of the chain at --node: blocks, txs, accounts, validators with their verification
    record, training rounds with every verdict, model versions with their loss chart, datasets, proposals
    and params, and a chat page that streams answers from a registered version (pulled into HOME/cache
    and checked against the registry entry --node reports: the explorer trusts its node). Every page has a
    JSON twin under /api (e.g. /api/home, /api/rounds/0). The line saying where it serves (JSON with
    -o json) goes to stdout; the log to stderr.

    \b
    Example:
      $ gradchain explorer --node http://127.0.0.1:26657 --ipfs http://127.0.0.1:26659 --port 8080
    """
    import uvicorn

    from abci_app.explorer.server import create_app

    if port_in_use(port):
        raise CliError(f"port {port} is in use by another program; pass --port")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per RPC call would bury what matters
    app = create_app(cli.node, ipfs, cli.home, preload_chat=not no_preload, allowed_hosts=(host, *allow_hosts),
                     public_node=public_node, public_ipfs=public_ipfs)
    url = f"http://{host}:{port}"
    cli.emit({"url": url, "node": cli.node, "ipfs": ipfs}, f"explorer of {cli.node} at {url} (ipfs {ipfs}); Ctrl-C stops it")
    uvicorn.run(app, host=host, port=port, log_level="warning")
