"""`gradchain query` and `gradchain status`: read chain state, optionally with a Merkle proof."""

from __future__ import annotations

import base64

import click

from abci_app import tx as txlib
from abci_app.cli.common import DENOM, Cli, CliError, abci_query, decimal_value, query_int, resolve_address, shared_flags
from abci_app.rpc import AbciQueryResult, RpcClient, RpcError

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
    """Query chain state (balances, accounts, staking) and committed txs."""


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


class TxHashType(click.ParamType):
    """A tx hash as CometBFT prints it: 64 hex digits, optionally after 0x."""

    name = "hash"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().removeprefix("0x").removeprefix("0X")
        if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
            self.fail(f"'{value}' is not a tx hash (64 hex digits)", param, ctx)
        return text.upper()


def _decoded_tx(raw_b64: str) -> dict:
    """Signer, message and envelope of a committed tx; empty if it is not ours to decode."""
    try:
        signed = txlib.decode(base64.b64decode(raw_b64 or ""))
    except (ValueError, txlib.TxDecodeError):
        return {}
    fields = {f.name: (v.hex() if isinstance(v, bytes) else v) for f, v in signed.msg.ListFields()}
    body = signed.body
    return {"signer": signed.signer, "message": {"type": signed.msg_name, **fields}, "fee": body.fee, "nonce": body.nonce, "memo": body.memo}


@query.command("tx")
@click.argument("tx_hash", metavar="HASH", type=TxHashType())
@shared_flags()
def tx_(cli: Cli, tx_hash: str) -> None:
    """Show a committed tx by HASH: its message, result code and log, and events.

    A non-zero code is a tx the chain rejected (its fee was still charged);
    this command still exits 0 because it found the tx.

    \b
    Example:
      $ gradchain query tx 5B3F...9A2C -o json
    """
    with cli.rpc() as rpc:
        try:
            found = rpc.call("tx", hash="0x" + tx_hash)
        except RpcError as exc:
            if "not found" in str(exc):
                raise CliError(f"tx {tx_hash} not found on {rpc.node} (not in a block yet, or the node does not index txs)") from None
            raise
    result = found.get("tx_result") or {}
    events = [
        {"type": e.get("type", ""), "attributes": {a.get("key", ""): a.get("value", "") for a in e.get("attributes") or []}}
        for e in result.get("events") or []
    ]
    data = {
        "hash": found.get("hash", tx_hash), "height": int(found.get("height", 0)), "code": int(result.get("code", 0)),
        "codespace": result.get("codespace", ""), "log": result.get("log", ""), **_decoded_tx(found.get("tx", "")), "events": events,
    }
    outcome = f"{data['code']} ({data['codespace'] or 'runtime'})" if data["code"] else "0 (ok)"
    lines = [f"hash:    {data['hash']}", f"height:  {data['height']}", f"code:    {outcome}"]
    lines += [f"log:     {data['log']}"] if data["log"] else []
    if "signer" in data:
        message = " ".join(f"{k}={v}" for k, v in data["message"].items() if k != "type")
        lines += [f"signer:  {data['signer']}", f"message: {data['message']['type']} {message}".rstrip(),
                  f"fee:     {data['fee']} {DENOM}, nonce {data['nonce']}" + (f", memo {data['memo']!r}" if data["memo"] else "")]
    lines += ["events:"] + [f"  {e['type']}  " + " ".join(f"{k}={v}" for k, v in e["attributes"].items()) for e in events]
    cli.emit(data, "\n".join(lines))


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
