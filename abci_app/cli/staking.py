"""`gradchain tx staking` and `gradchain query staking`: validators, delegations, trainer bonds.

The tx commands build one staking message each and hand it to the shared
`sign_and_broadcast`; the chain's staking module is the authority on every
rule, so a rejection comes back as `tx rejected (staking code N): <log>`.
Queries read /staking/<name>: single keys (provable with --prove) or lists.
"""

from __future__ import annotations

import base64
import binascii
import json
import tomllib
from pathlib import Path
from typing import Any

import click

from abci_app import crypto
from abci_app import tx as txlib
from abci_app.cli.common import AMOUNT, DENOM, Cli, CliError, abci_query, query_pages, resolve_address, shared_flags, signer_key
from abci_app.cli.query import Prover, proof_text, prove_option
from abci_app.cli.tx import sign_and_broadcast, tx_flags
from abci_app.rpc import AbciQueryResult, RpcClient

ED25519_TYPE = "tendermint/PubKeyEd25519"  # the `type` CometBFT writes for ed25519 keys
ED25519_PRIV_TYPE = "tendermint/PrivKeyEd25519"
PRIV_VALIDATOR_KEY = Path("config") / "priv_validator_key.json"
# `send a b -5` style: let a negative AMOUNT reach its type check instead of "no such option -5"
ARGS_MAY_LOOK_LIKE_OPTIONS = {"ignore_unknown_options": True}


# --- consensus keys -------------------------------------------------------------


def consensus_address(pubkey: bytes) -> str:
    """CometBFT's validator address, as its /validators prints it: sha256(pubkey)[:20], upper-case hex."""
    return crypto.address_bytes(pubkey).hex().upper()


def parse_pubkey(text: str) -> bytes:
    """A 32-byte ed25519 consensus key from base64 (priv_validator_key.json's `pub_key.value`),
    64 hex digits, or the JSON `cometbft show-validator` prints. Raises ValueError saying why not."""
    text = text.strip()
    if text.startswith("{"):
        try:
            key = json.loads(text)
        except ValueError:
            raise ValueError("not valid JSON") from None
        return _pubkey_from_json(key, "the JSON")
    if len(text) == 2 * crypto.PUBKEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64, hex or CometBFT's JSON form") from None
    if len(raw) != crypto.PUBKEY_BYTES:
        raise ValueError(f"{len(raw)} bytes, expected a {crypto.PUBKEY_BYTES}-byte ed25519 key")
    return raw


def _pubkey_from_json(key: dict, where: str) -> bytes:
    """{"type": "tendermint/PubKeyEd25519", "value": "<base64>"} -> the 32 key bytes."""
    if not isinstance(key, dict):
        raise ValueError(f"{where} has no key object")
    if key.get("type") != ED25519_TYPE:
        raise ValueError(f"{where} holds a {key.get('type') or 'untyped'} key; validators need {ED25519_TYPE}")
    value = key.get("value")
    if not isinstance(value, str):
        raise ValueError(f"{where} has no key value")
    return parse_pubkey(value)


def pubkey_from_home(cmthome: Path) -> bytes:
    """The consensus key of the CometBFT node at `cmthome` (its config/priv_validator_key.json)."""
    path = cmthome.expanduser() / PRIV_VALIDATOR_KEY
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"no CometBFT key at {path} (run `cometbft init --home {cmthome}` first, or pass --pubkey)") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    try:
        return _pubkey_from_json(data.get("pub_key") if isinstance(data, dict) else None, str(path))
    except ValueError as exc:
        raise CliError(f"bad consensus key in {path}: {exc}") from None


def consensus_key_from_home(cmthome: Path) -> crypto.PrivateKey:
    """The CometBFT node's consensus private key (config/priv_validator_key.json), checked against its pub_key."""
    path = cmthome.expanduser() / PRIV_VALIDATOR_KEY
    pubkey = pubkey_from_home(cmthome)
    data = json.loads(path.read_text())  # pubkey_from_home has read and parsed it already
    priv = data.get("priv_key")
    try:
        if not isinstance(priv, dict) or priv.get("type") != ED25519_PRIV_TYPE or not isinstance(priv.get("value"), str):
            raise ValueError(f"no {ED25519_PRIV_TYPE} priv_key")
        raw = base64.b64decode(priv["value"], validate=True)
        if len(raw) not in (32, 64):  # CometBFT writes seed || pubkey
            raise ValueError(f"priv_key is {len(raw)} bytes, expected 64")
        key = crypto.PrivateKey(raw[:32])
    except (binascii.Error, ValueError) as exc:
        raise CliError(f"bad consensus key in {path}: {exc}") from None
    if key.pubkey != pubkey:
        raise CliError(f"bad consensus key in {path}: priv_key does not belong to pub_key")
    return key


def moniker_from_home(cmthome: Path) -> str | None:
    """The node's moniker in CMTHOME/config/config.toml, if it has one."""
    try:
        moniker = tomllib.loads((cmthome.expanduser() / "config" / "config.toml").read_text()).get("moniker")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return moniker if isinstance(moniker, str) and moniker else None


# --- tx staking -------------------------------------------------------------------


@click.group("staking")
def staking_tx() -> None:
    """Staking transactions: validators, delegations, trainer bonds."""


def _send(cli: Cli, from_: str, msg: Any, what: str, opts: dict, key: crypto.PrivateKey | None = None) -> None:
    """Sign `msg` with key FROM and broadcast it; `what` completes the confirmation line."""
    key = key or signer_key(cli.keyring, from_)
    sign_and_broadcast(cli, key, msg, f"{what} (signer {from_}, {key.address})", wait=not opts.pop("no_wait"), **opts)


@staking_tx.command("create-validator", context_settings=ARGS_MAY_LOOK_LIKE_OPTIONS)
@click.argument("from_", metavar="FROM")
@click.option("--pubkey-from-home", "cmthome", type=click.Path(file_okay=False, path_type=Path), required=True, metavar="CMTHOME",
              help="The CometBFT node's home: its consensus key (config/priv_validator_key.json) is bonded and signs the proof of possession.")
@click.option("--amount", type=AMOUNT, required=True, help="Self-bond in ugrad (at least the chain's min_self_bond).")
@click.option("--moniker", default=None, help="Display name: 1 to 64 printable ASCII characters [default: CMTHOME's moniker, else FROM].")
@tx_flags
@shared_flags()
def create_validator(cli: Cli, from_: str, cmthome: Path, amount: int, moniker: str | None, **opts: Any) -> None:
    """Make key FROM a validator operator, self-bonding --amount ugrad to the node's consensus key.

    The node's consensus key signs b"gradchain/pop/v1" || chain id || FROM's
    address (a proof of possession), so nobody else can bond that key first.
    CometBFT adds it to the validator set two blocks after the tx's block,
    with power amount / power_unit (see `gradchain query staking params`).

    \b
    Example:
      $ gradchain tx staking create-validator alice --pubkey-from-home ~/.cometbft --amount 1000000 --moniker node4 -y
    """
    from abci_app.modules.staking import pop_message

    consensus_key = consensus_key_from_home(cmthome)
    moniker = moniker or moniker_from_home(cmthome) or from_
    key = signer_key(cli.keyring, from_)
    with cli.client() as chain:
        chain_id = chain.chain_id
    pop = consensus_key.sign(pop_message(chain_id, key.address))
    msg = txlib.MsgCreateValidator(pubkey=consensus_key.pubkey, amount=amount, moniker=moniker, pubkey_signature=pop)
    what = f"create validator '{moniker}' with consensus address {consensus_address(consensus_key.pubkey)}, self-bond {amount} {DENOM}"
    _send(cli, from_, msg, what, opts, key=key)


@staking_tx.command("delegate", context_settings=ARGS_MAY_LOOK_LIKE_OPTIONS)
@click.argument("from_", metavar="FROM")
@click.argument("validator", metavar="VALIDATOR")
@click.argument("amount", metavar="AMOUNT", type=AMOUNT)
@tx_flags
@shared_flags()
def delegate(cli: Cli, from_: str, validator: str, amount: int, **opts: Any) -> None:
    """Bond AMOUNT ugrad of key FROM to VALIDATOR (operator address or key name).

    \b
    Example:
      $ gradchain tx staking delegate bob gc1qyp...k9s 5000 -y
    """
    operator = resolve_address(cli.keyring, validator)
    _send(cli, from_, txlib.MsgDelegate(validator=operator, amount=amount), f"delegate {amount} {DENOM} to {operator}", opts)


@staking_tx.command("undelegate", context_settings=ARGS_MAY_LOOK_LIKE_OPTIONS)
@click.argument("from_", metavar="FROM")
@click.argument("validator", metavar="VALIDATOR")
@click.argument("amount", metavar="AMOUNT", type=AMOUNT)
@tx_flags
@shared_flags()
def undelegate(cli: Cli, from_: str, validator: str, amount: int, **opts: Any) -> None:
    """Unbond AMOUNT ugrad that key FROM delegated to VALIDATOR; it returns after the unbonding period.

    \b
    Example:
      $ gradchain tx staking undelegate bob gc1qyp...k9s 5000 -y
    """
    operator = resolve_address(cli.keyring, validator)
    _send(cli, from_, txlib.MsgUndelegate(validator=operator, amount=amount), f"undelegate {amount} {DENOM} from {operator}", opts)


@staking_tx.command("withdraw-rewards")
@click.argument("from_", metavar="FROM")
@click.argument("validator", metavar="VALIDATOR")
@tx_flags
@shared_flags()
def withdraw_rewards(cli: Cli, from_: str, validator: str, **opts: Any) -> None:
    """Pay key FROM the rewards its delegation to VALIDATOR has earned (see `query staking delegations`).

    Rewards are also paid whenever the delegation changes (delegate, undelegate).

    \b
    Example:
      $ gradchain tx staking withdraw-rewards bob gc1qyp...k9s -y
    """
    operator = resolve_address(cli.keyring, validator)
    _send(cli, from_, txlib.MsgWithdrawRewards(validator=operator), f"withdraw rewards from {operator}", opts)


@staking_tx.command("edit-validator")
@click.argument("from_", metavar="FROM")
@click.option("--moniker", required=True, help="The new display name (1 to 64 printable characters).")
@tx_flags
@shared_flags()
def edit_validator(cli: Cli, from_: str, moniker: str, **opts: Any) -> None:
    """Change the moniker of the validator that key FROM operates.

    \b
    Example:
      $ gradchain tx staking edit-validator alice --moniker "alice's node" -y
    """
    _send(cli, from_, txlib.MsgEditValidator(moniker=moniker), f"set validator moniker to '{moniker}'", opts)


@staking_tx.command("unjail")
@click.argument("from_", metavar="FROM")
@tx_flags
@shared_flags()
def unjail(cli: Cli, from_: str, **opts: Any) -> None:
    """Let the jailed validator that key FROM operates sign again (after its jail time).

    \b
    Example:
      $ gradchain tx staking unjail alice -y
    """
    _send(cli, from_, txlib.MsgUnjail(), "unjail validator", opts)


@staking_tx.command("bond-trainer", context_settings=ARGS_MAY_LOOK_LIKE_OPTIONS)
@click.argument("from_", metavar="FROM")
@click.argument("amount", metavar="AMOUNT", type=AMOUNT)
@tx_flags
@shared_flags()
def bond_trainer(cli: Cli, from_: str, amount: int, **opts: Any) -> None:
    """Put up AMOUNT ugrad of key FROM as trainer collateral (slashed for bad training work).

    \b
    Example:
      $ gradchain tx staking bond-trainer carol 10000 -y
    """
    _send(cli, from_, txlib.MsgBondTrainer(amount=amount), f"bond {amount} {DENOM} as trainer collateral", opts)


@staking_tx.command("unbond-trainer", context_settings=ARGS_MAY_LOOK_LIKE_OPTIONS)
@click.argument("from_", metavar="FROM")
@click.argument("amount", metavar="AMOUNT", type=AMOUNT)
@tx_flags
@shared_flags()
def unbond_trainer(cli: Cli, from_: str, amount: int, **opts: Any) -> None:
    """Start returning AMOUNT ugrad of key FROM's trainer collateral (after the trainer unbonding period).

    Only the unlocked part can be unbonded: an undecided submission locks the
    bond it was made with until it is accepted, rejected or expires.

    \b
    Example:
      $ gradchain tx staking unbond-trainer carol 10000 -y
    """
    _send(cli, from_, txlib.MsgUnbondTrainer(amount=amount), f"unbond {amount} {DENOM} of trainer collateral", opts)


# --- query staking ----------------------------------------------------------------


def _json(result: AbciQueryResult, path: str) -> Any:
    try:
        return json.loads(result.value)
    except (UnicodeDecodeError, ValueError):
        raise CliError(f"query {path} returned {result.value[:32]!r}, not JSON") from None


def _view(rpc: RpcClient, name: str, data: str = "") -> tuple[list[dict], int]:
    """A paged list query of the latest state, every page: (entries, height of the last page)."""
    return query_pages(rpc, f"/staking/{name}", data)


def _single(rpc: RpcClient, name: str, data: str, prove: Prover | None) -> tuple[AbciQueryResult, dict]:
    """A single-key query at the latest height, or proven against an app hash signed by trusted validators."""
    path = f"/staking/{name}"
    if not prove:
        return abci_query(rpc, path, data), {}
    result, report = prove.query(rpc, path, data)
    return result, {"proof": report}


def _proof_line(extra: dict, height: int) -> list[str]:
    return [proof_text(extra["proof"])] if extra else []


def _params(rpc: RpcClient, height: int = 0) -> dict:
    result = abci_query(rpc, "/staking/params", height=height)
    params = _json(result, "/staking/params") if result.value else None
    if not isinstance(params, dict):
        raise CliError(f"node {rpc.node} has no staking params (is it a gradchain node?)")
    return params


def _with_consensus(validator: dict) -> dict:
    """A validator as the chain stores it, plus CometBFT's name for it."""
    try:
        address = consensus_address(bytes.fromhex(validator["pubkey"]))
    except (KeyError, TypeError, ValueError):
        address = ""
    return {**validator, "consensus_address": address}


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    cells = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _jailed(validator: dict) -> str:
    until = validator.get("jailed_until") or 0
    return str(until) if until else "-"


def _echo_empty(cli: Cli, data: Any, message: str) -> None:
    """With nothing to list: the document with its empty list (json), or a note on stderr (text)."""
    if cli.output == "json":
        cli.emit(data, "")
    else:
        click.echo(message, err=True)


@click.group("staking")
def staking_query() -> None:
    """Staking queries: validators, delegations, unbondings, trainer bonds, params."""


@staking_query.command("validators")
@shared_flags()
def validators(cli: Cli) -> None:
    """List validators by power, with the consensus address CometBFT's /validators shows.

    Power is tokens / power_unit, 0 while jailed; `jailed until` is the height
    from which `gradchain tx staking unjail` is accepted.

    \b
    Example:
      $ gradchain query staking validators -o json
    """
    with cli.rpc() as rpc:
        entries, height = _view(rpc, "validators")
    listed = sorted((_with_consensus(v) for v in entries), key=lambda v: (-int(v.get("power", 0)), v["consensus_address"]))
    data = {"height": height, "validators": listed}
    if not listed:
        return _echo_empty(cli, data, f"no validators at height {height}")
    header = ("OPERATOR", "MONIKER", "TOKENS", "POWER", "JAILED UNTIL", "CONSENSUS ADDRESS")
    rows = [(v["operator"], v["moniker"], v["tokens"], v["power"], _jailed(v), v["consensus_address"]) for v in listed]
    cli.emit(data, _table(header, rows))


@staking_query.command("validator")
@click.argument("operator", metavar="OPERATOR")
@shared_flags()
@prove_option
def validator(cli: Cli, operator: str, prove: Prover | None) -> None:
    """Show one validator by OPERATOR address (or the key name of its operator).

    \b
    Example:
      $ gradchain query staking validator gc1qyp...k9s --prove
    """
    operator = resolve_address(cli.keyring, operator)
    with cli.rpc() as rpc:
        result, extra = _single(rpc, "validator", operator, prove)
        if not result.value:
            raise CliError(f"{operator} operates no validator at height {result.height} (see `gradchain query staking validators`)")
        found = _with_consensus(_json(result, "/staking/validator"))
        power_unit = int(_params(rpc, result.height if prove else 0)["power_unit"])
    jailed = bool(found.get("jailed_until"))
    data = {**found, "power": 0 if jailed else int(found["tokens"]) // power_unit, "height": result.height, **extra}
    fields = ["operator", "moniker", "tokens", "power", "jailed_until", "consensus_address", "pubkey"]
    lines = [f"{name + ':':<19}{data[name] if name != 'jailed_until' else _jailed(data)}" for name in fields]
    cli.emit(data, "\n".join(lines + _proof_line(extra, result.height)))


@staking_query.command("delegations")
@click.argument("delegator", metavar="DELEGATOR")
@shared_flags()
def delegations(cli: Cli, delegator: str) -> None:
    """List what DELEGATOR (an address or key name) has bonded, per validator, with its unpaid rewards.

    Rewards are paid by `gradchain tx staking withdraw-rewards` or when the delegation changes.

    \b
    Example:
      $ gradchain query staking delegations bob
    """
    delegator = resolve_address(cli.keyring, delegator)
    with cli.rpc() as rpc:
        entries, height = _view(rpc, "delegations", delegator)
    data = {"delegator": delegator, "height": height, "delegations": entries}
    if not entries:
        return _echo_empty(cli, data, f"{delegator} has no delegations at height {height}")
    rows = [(e["validator"], f"{e['amount']} {DENOM}", f"{e.get('rewards', 0)} {DENOM}") for e in entries]
    total = sum(int(e["amount"]) for e in entries)
    cli.emit(data, _table(("VALIDATOR", "AMOUNT", "REWARDS"), rows) + f"\ntotal {total} {DENOM}")


@staking_query.command("unbondings")
@click.argument("owner", metavar="[OWNER]", required=False)
@shared_flags()
def unbondings(cli: Cli, owner: str | None) -> None:
    """List pending undelegations, of OWNER or of everyone (trainer unbonds: `trainer-bond`).

    \b
    Example:
      $ gradchain query staking unbondings bob -o json
    """
    owner = resolve_address(cli.keyring, owner) if owner else None
    with cli.rpc() as rpc:
        entries, height = _view(rpc, "unbondings", owner or "")
    data = {"owner": owner, "height": height, "unbondings": entries}
    if not entries:
        return _echo_empty(cli, data, f"no pending unbondings{' of ' + owner if owner else ''} at height {height}")
    header = ("OWNER", "KIND", "VALIDATOR", "AMOUNT", "COMPLETES AT")
    rows = [(e["owner"], e["kind"], e.get("validator") or "-", f"{e['amount']} {DENOM}", e["completion_height"]) for e in entries]
    cli.emit(data, _table(header, rows))


@staking_query.command("trainer-bond")
@click.argument("address", metavar="ADDR")
@shared_flags()
@prove_option
def trainer_bond(cli: Cli, address: str, prove: Prover | None) -> None:
    """Show the trainer collateral of ADDR (an address or key name): bonded, locked, unbonding, in ugrad.

    Trainer bonds belong to the training module (/training/trainer_bond). The
    locked part backs an undecided submission and cannot be unbonded yet.

    \b
    Example:
      $ gradchain query staking trainer-bond carol --prove
    """
    address = resolve_address(cli.keyring, address)
    path = "/training/trainer_bond"
    with cli.rpc() as rpc:
        if prove:
            result, report = prove.query(rpc, path, address)
            extra = {"proof": report}
        else:
            result, extra = abci_query(rpc, path, address), {}
    found = _json(result, path) if result.value else {}
    if not isinstance(found, dict) or not all(isinstance(found.get(k, 0), int) for k in ("bonded", "locked", "unbonding")):
        raise CliError(f"query {path} returned {result.value[:64]!r}, expected {{bonded, locked, unbonding}}")
    bonded, locked, unbonding = (found.get(k, 0) for k in ("bonded", "locked", "unbonding"))
    data = {"address": address, "trainer_bond": bonded, "locked": locked, "unbonding": unbonding, "height": result.height, **extra}
    lines = [f"{bonded} {DENOM} bonded", f"{locked} {DENOM} locked by an undecided submission", f"{unbonding} {DENOM} unbonding"]
    cli.emit(data, "\n".join(lines + _proof_line(extra, result.height)))


@staking_query.command("params")
@shared_flags()
@prove_option
def params(cli: Cli, prove: Prover | None) -> None:
    """Show the staking parameters (power unit, min self-bond, unbonding and jail periods, slashing).

    \b
    Example:
      $ gradchain query staking params -o json
    """
    with cli.rpc() as rpc:
        result, extra = _single(rpc, "params", "", prove)
    found = _json(result, "/staking/params") if result.value else None
    if not isinstance(found, dict):
        raise CliError(f"node {cli.node} has no staking params (is it a gradchain node?)")
    width = max(map(len, found), default=0) + 2
    lines = [f"{name + ':':<{width}}{value}" for name, value in sorted(found.items())]
    cli.emit({**found, **extra} if extra else found, "\n".join(lines + _proof_line(extra, result.height)))
