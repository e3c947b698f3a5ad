"""`gradchain query` and `gradchain status`: read chain state, optionally with a Merkle proof."""

from __future__ import annotations

import base64

import click

from abci_app.cli.common import DENOM, Cli, CliError, abci_query, decimal_value, query_int, resolve_address, shared_flags
from abci_app.rpc import AbciQueryResult, RpcClient

PROOF_OP_TYPE = "gradchain:mpt"


def proven_query(rpc: RpcClient, path: str, data: str) -> tuple[AbciQueryResult, str]:
    """Query at the latest height that already has a successor header, and verify the
    proof against that header's app hash (block H+1 commits the state after block H).

    Returns the result and the app hash (hex) it was verified against.
    """
    import rlp  # only --prove needs these; keep plain queries fast and independent of them

    from abci_app.state import verify_proof

    latest = rpc.latest_height()
    if latest < 2:
        raise CliError(f"chain is at height {latest}; a proof needs two blocks, try again after block 2")
    result = abci_query(rpc, path, data, height=latest - 1, prove=True)
    height = result.height or latest - 1
    op = next((op for op in result.proof_ops if op.get("type") == PROOF_OP_TYPE), None)
    if op is None:
        raise CliError(f"node returned no {PROOF_OP_TYPE} proof for {path} at height {height}")
    try:
        key = base64.b64decode(op.get("key") or "") or result.key
        nodes = rlp.decode(base64.b64decode(op.get("data") or ""))
    except (ValueError, rlp.DecodingError) as exc:
        raise CliError(f"malformed {PROOF_OP_TYPE} proof from the node: {exc}") from None
    app_hash = str(rpc.header(height + 1)["app_hash"])
    try:
        verified = verify_proof(bytes.fromhex(app_hash), key, result.value or None, nodes)
    except Exception as exc:  # a malformed proof is a failed proof, whatever the verifier raises
        raise CliError(f"proof verification failed against app hash {app_hash} at height {height}: {exc}") from None
    if verified is False:
        raise CliError(f"proof verification failed against app hash {app_hash} at height {height}: the node's answer is not in the committed state")
    return result, app_hash


@click.group()
def query() -> None:
    """Query chain state (balances, accounts)."""


@query.group()
def bank() -> None:
    """Bank queries."""


@bank.command("balance")
@click.argument("address", metavar="ADDR")
@click.option("--prove", is_flag=True, help="Check the answer with a Merkle proof against a committed app hash.")
@shared_flags()
def balance(cli: Cli, address: str, prove: bool) -> None:
    """Show the balance of ADDR (an address or a key name), in ugrad.

    \b
    Example:
      $ gradchain query bank balance alice --prove
    """
    address = resolve_address(cli.keyring, address)
    with cli.rpc() as rpc:
        if not prove:
            result = abci_query(rpc, "/bank/balance", address)
            amount = decimal_value(result, "/bank/balance")
            cli.emit({"address": address, "balance": amount, "height": result.height}, f"{amount} {DENOM}")
            return
        result, app_hash = proven_query(rpc, "/bank/balance", address)
    amount = decimal_value(result, "/bank/balance")
    data = {"address": address, "balance": amount, "height": result.height, "proof": {"verified": True, "app_hash": app_hash}}
    cli.emit(data, f"{amount} {DENOM}\nproof verified against app hash {app_hash} at height {result.height}")


@query.command("account")
@click.argument("address", metavar="ADDR")
@shared_flags()
def account(cli: Cli, address: str) -> None:
    """Show the nonce and balance of ADDR (an address or a key name).

    \b
    Example:
      $ gradchain query account gc1qyp...k9s -o json
    """
    address = resolve_address(cli.keyring, address)
    with cli.rpc() as rpc:
        nonce = query_int(rpc, "/auth/nonce", address)
        amount = query_int(rpc, "/bank/balance", address)
    data = {"address": address, "nonce": nonce, "balance": amount}
    cli.emit(data, f"address: {address}\nnonce:   {nonce}\nbalance: {amount} {DENOM}")


@click.command("status")
@shared_flags()
def status(cli: Cli) -> None:
    """Show the node's chain id, latest block and app hash, and the validator set.

    \b
    Example:
      $ gradchain status --node http://127.0.0.1:26657
    """
    with cli.rpc() as rpc:
        st = rpc.status()
        validators = rpc.validators()
    node, sync = st["node_info"], st["sync_info"]
    data = {
        "chain_id": node["network"],
        "moniker": node.get("moniker", ""),
        "node_id": node.get("id", ""),
        "latest_block_height": int(sync["latest_block_height"]),
        "latest_block_time": sync.get("latest_block_time", ""),
        "latest_app_hash": sync.get("latest_app_hash", ""),
        "catching_up": bool(sync.get("catching_up", False)),
        "validators": [{"address": v["address"], "voting_power": int(v["voting_power"])} for v in validators],
    }
    lines = [
        f"chain id:     {data['chain_id']}",
        f"node:         {data['moniker']} ({data['node_id']}){' catching up' if data['catching_up'] else ''}",
        f"latest block: {data['latest_block_height']} at {data['latest_block_time']}",
        f"app hash:     {data['latest_app_hash']}",
        f"validators:   {len(validators)}, total power {sum(v['voting_power'] for v in data['validators'])}",
        *(f"  {v['address']}  power {v['voting_power']}" for v in data["validators"]),
    ]
    cli.emit(data, "\n".join(lines))
