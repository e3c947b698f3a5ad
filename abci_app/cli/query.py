"""`gradchain query` and `gradchain status`: read chain state, optionally with a Merkle proof."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from abci_app import light
from abci_app import tx as txlib
from abci_app.cli.common import DENOM, Cli, CliError, abci_query, decimal_value, query_int, resolve_address, shared_flags
from abci_app.rpc import AbciQueryResult, RpcClient, RpcError

PROOF_OP_TYPE = "gradchain:mpt"
GENESIS_LOCATIONS = ("config/genesis.json", "node0/config/genesis.json")  # under --home: a node's home, or a localnet's root


@dataclass(frozen=True)
class TrustRoot:
    """What the user trusts for --prove: a genesis file, or one header hash obtained out of band."""

    genesis: Path | None = None
    height: int | None = None
    hash: str | None = None


@dataclass(frozen=True)
class Prover:
    """`--prove` as given: where the light-client state lives, and the root of trust."""

    home: Path
    trust: TrustRoot

    def query(self, rpc: RpcClient, path: str, data: str) -> tuple[AbciQueryResult, dict]:
        return proven_query(rpc, path, data, self.home, self.trust)


def prove_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--prove and its root of trust (--trust-genesis, or --trust-height with --trust-hash). The command gets
    `prove`: a Prover, or None without --prove. Put it under @shared_flags(), which hands it the Cli."""

    @functools.wraps(command)
    def wrapper(cli: Cli, *args: Any, prove: bool, trust_genesis: str | None, trust_height: int | None, trust_hash: str | None,
                **kwargs: Any) -> Any:
        if (trust_height is None) != (trust_hash is None):
            raise click.UsageError("--trust-height and --trust-hash go together")
        if trust_genesis and trust_height is not None:
            raise click.UsageError("trust either a genesis file or a header, not both")
        if not prove and (trust_genesis or trust_height is not None):
            raise click.UsageError("--trust-genesis, --trust-height and --trust-hash only apply with --prove")
        trust = TrustRoot(Path(trust_genesis).expanduser() if trust_genesis else None, trust_height, trust_hash)
        return command(cli, *args, prove=Prover(cli.home, trust) if prove else None, **kwargs)

    for option in reversed([
        click.option("--prove", is_flag=True, help="Check the answer with a Merkle proof against an app hash signed by validators you trust."),
        click.option("--trust-genesis", default=None, metavar="FILE",
                     help="For --prove: the chain's genesis.json, whose validators you trust "
                          "[default: HOME/config/genesis.json, else HOME/node0/config/genesis.json, a localnet's]."),
        click.option("--trust-height", type=click.IntRange(1), default=None, metavar="H",
                     help="For --prove: trust the header at height H (with --trust-hash) instead of a genesis file."),
        click.option("--trust-hash", default=None, metavar="HEX", help="With --trust-height: that header's hash, obtained out of band."),
    ]):
        wrapper = option(wrapper)
    return wrapper


def proven_key(path: str, data: str) -> bytes:
    """The state key a provable query reads, built here exactly as the app builds it: never taken from the node."""
    from abci_app import runtime

    build = runtime.key_builder(path)
    if build is None:
        raise CliError(f"query {path} reads no single state key, so it cannot be proven")
    try:
        return build(data.encode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CliError(f"bad argument for {path}: {exc}") from None


def _trusted_state(home: Path, rpc: RpcClient, trust: TrustRoot) -> light.TrustedState:
    """The root the user gave (or the default genesis file), advanced to the latest header stored for it."""
    if trust.height is not None:
        try:
            trusted_hash = bytes.fromhex(str(trust.hash).removeprefix("0x"))
        except ValueError:
            trusted_hash = b""
        if len(trusted_hash) != light.HASH_BYTES:
            raise CliError(f"--trust-hash {trust.hash} is not a header hash (64 hex digits)")
        signed = light.parse_signed_header(rpc.commit(trust.height), rpc.validator_set(trust.height))
        root = light.header_state(signed, trusted_hash)
    else:
        genesis = trust.genesis or next((home / p for p in GENESIS_LOCATIONS if (home / p).is_file()), None)
        if genesis is None:
            raise CliError(f"--prove needs a root of trust: no genesis file in {home} ({' or '.join(GENESIS_LOCATIONS)}); "
                           "pass --trust-genesis FILE or --trust-height H --trust-hash HEX")
        root = light.genesis_state(genesis)
    return light.load_state(home, root)


def _show_key(key: bytes) -> str:
    """bank/balance/<hex>: the readable prefix of a state key up to its last '/', then the rest in hex."""
    printable = next((i for i, b in enumerate(key) if not 0x20 < b < 0x7F), len(key))
    if printable == len(key):
        return key.decode()
    cut = key.rfind(b"/", 0, printable) + 1
    return key[:cut].decode() + key[cut:].hex()


def proven_query(rpc: RpcClient, path: str, data: str, home: Path, trust: TrustRoot) -> tuple[AbciQueryResult, dict]:
    """Query at the latest height H that has a successor header, then check, trusting nothing the node says:
    the key is ours (from path and argument), header H+1 (which commits the state after H) is signed by
    validators the user's root vouches for (light-client rules), and the proof leads from its app hash to the value.

    Returns the result and what was verified (for -o json; `proof_text` says it in words).
    """
    import rlp  # only --prove needs these; keep plain queries fast and independent of them

    from abci_app.state import verify_proof

    key = proven_key(path, data)
    try:
        client = light.LightClient(rpc, _trusted_state(home, rpc, trust))
        header_height = max(rpc.latest_height(), client.state.height)
        if header_height < 2:
            raise CliError(f"chain is at height {header_height}; a proof needs two blocks, try again after block 2")
        height = header_height - 1
        result = abci_query(rpc, path, data, height=height, prove=True)
        if result.height != height:
            raise CliError(f"asked for state at height {height}, the node answered for height {result.height}")
        op = next((op for op in result.proof_ops if op.get("type") == PROOF_OP_TYPE), None)
        if op is None:
            raise CliError(f"node returned no {PROOF_OP_TYPE} proof for {path} at height {height}")
        try:
            op_key = base64.b64decode(op.get("key") or "", validate=True)
            nodes = rlp.decode(base64.b64decode(op.get("data") or "", validate=True))
        except (ValueError, rlp.DecodingError) as exc:
            raise CliError(f"malformed {PROOF_OP_TYPE} proof from the node: {exc}") from None
        for what, answered in (("proof", op_key), ("answer", result.key)):
            if answered and answered != key:
                raise CliError(f"the node's {what} is for key {_show_key(answered)}, not {_show_key(key)} ({path} {data})")
        verified = client.verify_to(header_height)
        light.save_state(home, client.state)
    except light.LightError as exc:
        raise CliError(f"header verification failed: {exc}") from None
    header = verified.signed.header
    app_hash = header.app_hash.hex().upper()
    try:
        proven = verify_proof(header.app_hash, key, result.value or None, nodes)
    except Exception:  # a malformed proof is a failed proof, whatever the verifier raises
        proven = False
    if proven is not True:
        raise CliError(f"proof verification failed against app hash {app_hash} of verified header {header_height}: "
                       "the node's answer is not in the committed state")
    state, own, trusted = client.state, verified.own, verified.trusted
    if not verified.path:
        trusted_set = "the header verified earlier and stored under HOME/light"
    elif verified.adjacent:
        trusted_set = f"the set trusted header {verified.trusted_height} named next"
    elif verified.trusted_height == 0:
        trusted_set = "the genesis validators"
    else:
        trusted_set = f"the validators of trusted header {verified.trusted_height}"
    report = {
        "verified": True,
        "chain_id": state.chain_id,
        "key": key.hex(),
        "key_from": {"path": path, "data": data},
        "height": height,
        "app_hash": app_hash,
        "header": {"height": header_height, "hash": verified.hash.hex().upper(), "time": str(header.time)},
        "signed": {"power": own.signed_power, "total_power": own.total_power, "signatures": own.signatures, "validators": own.validators},
        "trusted": {"set": trusted_set, "power": trusted.signed_power, "total_power": trusted.total_power,
                    "signatures": trusted.signatures, "validators": trusted.validators, "verified_heights": list(verified.path)},
        "trust_root": state.root,
        "trust_root_text": state.describe_root(),
    }
    return result, report


def proof_text(report: dict) -> str:
    """What --prove verified, in words (the report of proven_query)."""
    signed, trusted, header = report["signed"], report["trusted"], report["header"]
    key = bytes.fromhex(report["key"])
    path = trusted["verified_heights"]
    return "\n".join([
        f"proof verified against app hash {report['app_hash']} at height {report['height']}: key {_show_key(key)} "
        f"(built here from {' '.join(filter(None, report['key_from'].values()))}) holds the value shown",
        f"header {header['height']} (hash {header['hash']}) carries that app hash; {signed['signatures']} of {signed['validators']} "
        f"validators holding {signed['power']} of {signed['total_power']} power signed it",
        f"trusted: {trusted['power']} of {trusted['total_power']} power of {trusted['set']} signed"
        + (f" (verified through heights {', '.join(map(str, path))})" if len(path) > 1 else ""),
        f"root of trust: {report['trust_root_text']}, chain {report['chain_id']}",
    ])


@click.group()
def query() -> None:
    """Query chain state (balances, accounts, staking) and committed txs."""


@query.group()
def bank() -> None:
    """Bank queries."""


@bank.command("balance")
@click.argument("address", metavar="ADDR")
@shared_flags()
@prove_option
def balance(cli: Cli, address: str, prove: Prover | None) -> None:
    """Show the balance of ADDR (an address or a key name), in ugrad.

    With --prove the node is not trusted: the state key is built here from ADDR,
    the header carrying the app hash must be signed by validators your root of
    trust vouches for (the genesis file, or --trust-height/--trust-hash), and
    the Merkle proof must lead from that app hash to the balance. The latest
    verified header is kept in HOME/light/ so later proofs start from it.

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
        result, report = prove.query(rpc, "/bank/balance", address)
    amount = decimal_value(result, "/bank/balance")
    cli.emit({"address": address, "balance": amount, "height": result.height, "proof": report}, f"{amount} {DENOM}\n{proof_text(report)}")


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


def decoded_tx(raw_b64: str) -> dict:
    """Signer, message and envelope of a committed tx; empty if it is not ours to decode."""
    try:
        signed = txlib.decode(base64.b64decode(raw_b64 or ""))
    except (ValueError, txlib.TxDecodeError):
        return {}
    fields = {f.name: (v.hex() if isinstance(v, bytes) else v) for f, v in signed.msg.ListFields()}
    body = signed.body
    return {"signer": signed.signer, "message": {"type": signed.msg_name, **fields}, "fee": body.fee, "nonce": body.nonce, "memo": body.memo}


def tx_document(rpc: RpcClient, tx_hash: str) -> dict:
    """A committed tx by hash (64 hex digits): height, result code, codespace and log, the decoded
    signer and message, and its events; CliError when the node has no such tx."""
    try:
        found = rpc.call("tx", hash="0x" + tx_hash)
    except RpcError as exc:
        if "not found" in str(exc):
            raise CliError(f"tx {tx_hash} not found on {rpc.node} (not in a block yet, or the node does not index txs)") from None
        raise
    result = found.get("tx_result") or {}
    return {
        "hash": found.get("hash", tx_hash), "height": int(found.get("height", 0)), "code": int(result.get("code", 0)),
        "codespace": result.get("codespace", ""), "log": result.get("log", ""), **decoded_tx(found.get("tx", "")),
        "events": events_document(result.get("events")),
    }


def events_document(events: list[dict] | None) -> list[dict]:
    """CometBFT's events ([{type, attributes: [{key, value}]}]) as [{type, attributes: {key: value}}]."""
    return [{"type": e.get("type", ""), "attributes": {a.get("key", ""): a.get("value", "") for a in e.get("attributes") or []}}
            for e in events or []]


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
        data = tx_document(rpc, tx_hash)
    outcome = f"{data['code']} ({data['codespace'] or 'runtime'})" if data["code"] else "0 (ok)"
    lines = [f"hash:    {data['hash']}", f"height:  {data['height']}", f"code:    {outcome}"]
    lines += [f"log:     {data['log']}"] if data["log"] else []
    if "signer" in data:
        message = " ".join(f"{k}={v}" for k, v in data["message"].items() if k != "type")
        lines += [f"signer:  {data['signer']}", f"message: {data['message']['type']} {message}".rstrip(),
                  f"fee:     {data['fee']} {DENOM}, nonce {data['nonce']}" + (f", memo {data['memo']!r}" if data["memo"] else "")]
    lines += ["events:"] + [f"  {e['type']}  " + " ".join(f"{k}={v}" for k, v in e["attributes"].items()) for e in data["events"]]
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
