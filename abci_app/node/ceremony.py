"""A new network's genesis, made by its first operators together (as Cosmos chains' gentx ceremony).

1. Each operator: `gradchain node init --moniker NAME`, `gradchain keys add OPERATOR`.
2. The coordinator funds every operator: `gradchain genesis add-account ADDRESS AMOUNT`, and sends
   the genesis.json to each operator.
3. Each operator, with that genesis in their home: `gradchain genesis gentx --from OPERATOR AMOUNT`,
   and sends back HOME/config/gentx/gentx-<node id>.json.
4. The coordinator: `gradchain genesis collect` (checks every gentx, writes the final genesis), then
   `gradchain genesis validate`, and sends the final genesis.json (and its sha256) to everyone.

A gentx is a signed transaction: MsgCreateValidator (the consensus key's proof
of possession included) signed by the operator's account key for the chain id,
nonce 0, with the node's peer addresses as its memo: `NODEID@HOST:PORT`, then,
when the node runs Kubo, a space and its `PEERID@MULTIADDR`. So a gentx binds
operator, consensus key, self-bond, CometBFT peer and Kubo peer under one
signature, cannot be replayed on another chain, and nobody relaying the file can
swap an address. Both are parsed strictly (collect writes them into config.toml
and Kubo's config, where one malformed entry stops the node). Collect orders the
validators by operator address, so everyone who collects the same gentxs gets the
same genesis, whatever the files are called. Collect does not execute it: the self-bond moves
from the operator's genesis balance into the staking genesis, and the same
validator, with the same power, goes into CometBFT's genesis validators.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from abci_app import crypto
from abci_app import tx as txlib
from abci_app.localnet.genesis import evidence_params
from abci_app.node.home import Layout, NodeError, host_port, load_settings, node_id, write_config

GENTX_VERSION = 2  # 2: the Kubo peer moved into the signed memo

_NODE_ID = re.compile(r"[0-9a-f]{40}")  # CometBFT's: hex of the node key's 20-byte address
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_KUBO_PEER_ID = re.compile(r"(12D3KooW|Qm)[1-9A-HJ-NP-Za-km-z]{40,50}")  # base58: an Ed25519 or RSA key's peer id


def read_genesis(path: Path) -> dict:
    try:
        genesis = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise NodeError(f"no genesis at {path} (run `gradchain node init` first, or pass --genesis)") from None
    except (OSError, ValueError) as exc:
        raise NodeError(f"{path} is not a readable genesis: {exc}") from None
    if not isinstance(genesis, dict) or not isinstance(genesis.get("chain_id"), str):
        raise NodeError(f"{path} is not a CometBFT genesis (no chain_id)")
    return genesis


def write_genesis(path: Path, genesis: dict) -> str:
    """Write `genesis` and return its sha256 (what operators compare out of band, and `node join --genesis-sha256`)."""
    text = json.dumps(genesis, indent=2) + "\n"
    Path(path).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _balances(genesis: dict) -> list[dict]:
    app_state = genesis.setdefault("app_state", {})
    if not isinstance(app_state, dict):
        raise NodeError("genesis app_state is not a JSON object")
    return app_state.setdefault("bank", {}).setdefault("balances", [])


def add_account(genesis_path: Path, address: str, amount: int) -> dict:
    """Fund `address` with `amount` ugrad in the genesis at `genesis_path`; an account is funded once."""
    address = crypto.parse_address(address)
    if amount <= 0:
        raise NodeError(f"amount must be positive, got {amount}")
    genesis = read_genesis(genesis_path)
    balances = _balances(genesis)
    if any(entry.get("address") == address for entry in balances):
        raise NodeError(f"{address} already has a genesis balance; each account is added once")
    balances.append({"address": address, "amount": amount})
    write_genesis(genesis_path, genesis)
    return {"address": address, "amount": amount}


def _staking_params(genesis: dict) -> tuple[int, int]:
    """(min_self_bond, power_unit) that this genesis' staking params give."""
    from abci_app.modules import staking

    defaults = staking.Params()
    params = genesis.get("app_state", {}).get("staking", {}).get("params", {})
    return int(params.get("min_self_bond", defaults.min_self_bond)), int(params.get("power_unit", defaults.power_unit))


def make_gentx(home: Path, operator: crypto.PrivateKey, amount: int, moniker: str, peer_address: str) -> Path:
    """Sign this node's create-validator for the genesis in HOME; write it to HOME/config/gentx/ and return the path.

    `peer_address` is host:port where other validators reach this node's p2p port.
    """
    from abci_app.cli.staking import consensus_key_from_home
    from abci_app.modules.staking import pop_message

    home = Path(home).resolve()
    layout = Layout(home)
    genesis = read_genesis(layout.genesis)
    chain_id = genesis["chain_id"]
    min_self_bond, power_unit = _staking_params(genesis)
    if amount < max(min_self_bond, power_unit):
        raise NodeError(f"self-bond {amount} is below the genesis minimum {max(min_self_bond, power_unit)} (min_self_bond and power_unit)")
    funded = {entry.get("address"): entry.get("amount") for entry in _balances(genesis)}
    if funded.get(operator.address, 0) < amount:
        raise NodeError(f"{operator.address} has {funded.get(operator.address, 0)} ugrad in this genesis, less than the self-bond {amount}; "
                        "ask the coordinator to `genesis add-account` it first")
    consensus_key = consensus_key_from_home(home)
    pop = consensus_key.sign(pop_message(chain_id, operator.address))
    msg = txlib.MsgCreateValidator(pubkey=consensus_key.pubkey, amount=amount, moniker=moniker, pubkey_signature=pop)
    peer = f"{node_id(home)}@{peer_address}"
    ipfs_peer = _ipfs_peer(home, peer_address.rpartition(":")[0].removeprefix("[").removesuffix("]"))
    memo = f"{peer} {ipfs_peer}" if ipfs_peer else peer
    parse_memo(memo, "this gentx")  # refuse here what collect would refuse
    raw = txlib.build(operator, chain_id, 0, 0, msg, memo=memo)
    layout.gentx_dir.mkdir(parents=True, exist_ok=True)
    path = layout.gentx_dir / f"gentx-{node_id(home)}.json"
    # peer and ipfs_peer repeat the signed memo for readers; check_gentx trusts only the memo
    data = {"version": GENTX_VERSION, "chain_id": chain_id, "moniker": moniker, "operator": operator.address,
            "peer": peer, "ipfs_peer": ipfs_peer, "tx": base64.b64encode(raw).decode()}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _ipfs_peer(home: Path, host: str) -> str:
    """PEERID@MULTIADDR of this node's Kubo swarm, dialled at `host`; "" without a Kubo repo."""
    from abci_app.ipfs import node as kubo

    layout = Layout(home)
    if not (layout.ipfs_repo / "config").exists():
        return ""
    _, port = host_port(load_settings(home).ipfs_swarm, "ipfs swarm")
    try:
        protocol = "ip6" if ipaddress.ip_address(host).version == 6 else "ip4"
    except ValueError:
        protocol = "dns"
    return f"{kubo.peer_id(layout.ipfs_repo)}@/{protocol}/{host}/tcp/{port}"


@dataclass(frozen=True)
class Gentx:
    operator: str
    pubkey: bytes
    moniker: str
    self_bond: int
    peer: str  # node_id@host:port
    ipfs_peer: str = ""  # PEERID@MULTIADDR of its Kubo node, "" when it runs none


def parse_memo(memo: str, where: str) -> tuple[str, str]:
    """(CometBFT peer, Kubo peer or "") from a gentx memo 'NODEID@HOST:PORT[ PEERID@/ip4|ip6|dns/HOST/tcp/PORT]';
    NodeError unless each part is exactly that (no second peer, no stray characters)."""
    parts = memo.split(" ")
    if not 1 <= len(parts) <= 2:
        raise NodeError(f"{where}: the memo '{memo}' is not 'NODEID@HOST:PORT[ PEERID@MULTIADDR]'")
    node, at, address = parts[0].partition("@")
    if not at or not _NODE_ID.fullmatch(node):
        raise NodeError(f"{where}: '{parts[0]}' does not start with a node id of 40 lowercase hex characters and '@'")
    host, _ = host_port(address, f"{where}: peer address")
    if not _valid_host(host.removeprefix("[").removesuffix("]") if host.startswith("[") else host, allow_ip6=host.startswith("[")):
        raise NodeError(f"{where}: peer host '{host}' is not an IP address or DNS name")
    if len(parts) == 1:
        return parts[0], ""
    return parts[0], check_kubo_peer(parts[1], where)


def check_kubo_peer(text: str, where: str) -> str:
    """'PEERID@/ip4|ip6|dns/HOST/tcp/PORT', checked: Kubo does not start on a Peering entry it cannot parse."""
    peer_id, at, multiaddr = text.partition("@")
    fields = multiaddr.split("/")
    bad = NodeError(f"{where}: Kubo peer '{text}' is not PEERID@/ip4|ip6|dns/HOST/tcp/PORT")
    if not at or not _KUBO_PEER_ID.fullmatch(peer_id) or len(fields) != 5 or fields[0] or fields[3] != "tcp":
        raise bad
    _, protocol, host, _, port = fields
    if protocol not in ("ip4", "ip6", "dns") or not port.isdigit() or not 0 < int(port) < 65536 or port != str(int(port)):
        raise bad
    if protocol == "dns":
        ok = _is_dns_name(host)
    else:
        try:
            ok = ipaddress.ip_address(host).version == (4 if protocol == "ip4" else 6)
        except ValueError:
            ok = False
    if not ok:
        raise bad
    return text


def _valid_host(host: str, allow_ip6: bool) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return not allow_ip6 and _is_dns_name(host)
    return address.version == (6 if allow_ip6 else 4)


def _is_dns_name(host: str) -> bool:
    """Letters, digits and hyphens in dot-separated labels; an all-digit last label is a broken IP, not a name."""
    return _HOSTNAME.fullmatch(host) is not None and not host.rsplit(".", 1)[-1].isdigit()


def check_gentx(data: object, chain_id: str, where: str) -> Gentx:
    """A gentx file's content, verified: signed by its operator for `chain_id`, a create-validator whose
    consensus key proves possession; NodeError naming `where` otherwise."""
    from abci_app.modules import staking

    if not isinstance(data, dict) or not isinstance(data.get("tx"), str):
        raise NodeError(f"{where}: not a gentx (no \"tx\")")
    if data.get("version") != GENTX_VERSION:
        raise NodeError(f"{where}: gentx version {data.get('version')!r}, expected {GENTX_VERSION} (remake it with `gradchain genesis gentx`)")
    try:
        signed = txlib.decode(base64.b64decode(data["tx"], validate=True))
    except (ValueError, txlib.TxDecodeError) as exc:
        raise NodeError(f"{where}: undecodable tx: {exc}") from None
    body = signed.body
    if body.chain_id != chain_id:
        raise NodeError(f"{where}: signed for chain '{body.chain_id}', this genesis is '{chain_id}'")
    if not signed.signature_valid():
        raise NodeError(f"{where}: the operator's signature does not verify")
    if signed.msg_name != "create_validator":
        raise NodeError(f"{where}: carries {signed.msg_name}, not a create-validator")
    if body.nonce != 0 or body.fee != 0:
        raise NodeError(f"{where}: a gentx has nonce 0 and fee 0")
    msg = signed.msg
    if len(msg.pubkey) != crypto.PUBKEY_BYTES:
        raise NodeError(f"{where}: the consensus pubkey is {len(msg.pubkey)} bytes, expected {crypto.PUBKEY_BYTES}")
    if not crypto.verify(msg.pubkey, staking.pop_message(chain_id, signed.signer), msg.pubkey_signature):
        raise NodeError(f"{where}: the consensus key's proof of possession does not verify")
    if not 1 <= len(msg.moniker) <= staking.MAX_MONIKER or not msg.moniker.isprintable() or not msg.moniker.isascii():
        raise NodeError(f"{where}: moniker must be 1 to {staking.MAX_MONIKER} printable ASCII characters")
    peer, ipfs_peer = parse_memo(body.memo, where)
    if (data.get("peer"), data.get("ipfs_peer") or "") != (peer, ipfs_peer):
        raise NodeError(f"{where}: its peer or ipfs_peer differs from the signed memo '{body.memo}' (the file was edited)")
    return Gentx(signed.signer, bytes(msg.pubkey), msg.moniker, msg.amount, peer, ipfs_peer)


def read_gentxs(folder: Path, chain_id: str) -> list[Gentx]:
    """The checked gentxs in `folder`, ordered by operator address: the order does not depend on file names."""
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise NodeError(f"no gentx files in {folder} (each validator runs `gradchain genesis gentx` and sends theirs)")
    gentxs = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise NodeError(f"{path}: unreadable: {exc}") from None
        gentxs.append(check_gentx(data, chain_id, str(path)))
    return sorted(gentxs, key=lambda gentx: (gentx.operator, gentx.pubkey))


def collect(home: Path, gentx_dir: Path | None = None) -> dict:
    """Check every gentx against the genesis in HOME and write the final genesis; returns a summary.

    Each operator must hold its self-bond in its genesis balance (it moves into
    the bonded stake, so the supply stays what add-account funded); no operator
    and no consensus key may appear twice. The node's own config.toml gets every
    other validator as a persistent peer.
    """
    home = Path(home).resolve()
    layout = Layout(home)
    genesis = read_genesis(layout.genesis)
    chain_id = genesis["chain_id"]
    app_state = genesis.setdefault("app_state", {})
    staking_state = app_state.setdefault("staking", {})
    if staking_state.get("validators"):
        raise NodeError(f"{layout.genesis} already lists staking validators: collect runs once, on the draft genesis")
    gentxs = read_gentxs(gentx_dir or layout.gentx_dir, chain_id)
    min_self_bond, power_unit = _staking_params(genesis)
    balances = _balances(genesis)
    by_address = {entry.get("address"): entry for entry in balances}
    operators: set[str] = set()
    pubkeys: set[bytes] = set()
    node_ids: set[str] = set()
    for gentx in gentxs:
        if gentx.operator in operators:
            raise NodeError(f"operator {gentx.operator} has two gentxs")
        if gentx.pubkey in pubkeys:
            raise NodeError(f"consensus key {base64.b64encode(gentx.pubkey).decode()} is in two gentxs")
        node = gentx.peer.partition("@")[0]
        if node in node_ids:
            raise NodeError(f"node id {node} is in two gentxs (each validator runs its own node)")
        node_ids.add(node)
        if gentx.self_bond < max(min_self_bond, power_unit):
            raise NodeError(f"{gentx.moniker}: self-bond {gentx.self_bond} is below the minimum {max(min_self_bond, power_unit)}")
        entry = by_address.get(gentx.operator)
        if entry is None or entry.get("amount", 0) < gentx.self_bond:
            held = 0 if entry is None else entry.get("amount", 0)
            raise NodeError(f"{gentx.moniker}: operator {gentx.operator} holds {held} ugrad in genesis, less than its self-bond {gentx.self_bond}")
        operators.add(gentx.operator)
        pubkeys.add(gentx.pubkey)
    for gentx in gentxs:  # every check passed: now move the self-bonds
        by_address[gentx.operator]["amount"] -= gentx.self_bond
    app_state["bank"]["balances"] = [entry for entry in balances if entry["amount"] > 0]  # bank genesis refuses zero balances
    staking_state["validators"] = [
        {"operator": g.operator, "pubkey": base64.b64encode(g.pubkey).decode(), "moniker": g.moniker, "self_bond": g.self_bond} for g in gentxs
    ]
    genesis["validators"] = [
        {"address": crypto.address_bytes(g.pubkey).hex().upper(), "pub_key": {"type": "tendermint/PubKeyEd25519", "value": base64.b64encode(g.pubkey).decode()},
         "power": str(g.self_bond // power_unit), "name": g.moniker} for g in gentxs
    ]
    if genesis.get("initial_height") in (None, 0, "0"):
        genesis["initial_height"] = "1"  # what CometBFT makes of 0: the file then reads as nodes serve it (same digest)
    consensus = genesis.setdefault("consensus_params", {})
    consensus["evidence"] = evidence_params(app_state, consensus.get("evidence"))
    validate_genesis(genesis)
    sha = write_genesis(layout.genesis, genesis)
    me = node_id(home)
    peers = ",".join(g.peer for g in gentxs if not g.peer.startswith(me + "@"))
    write_config(home, {("p2p", "persistent_peers"): peers})
    if (layout.ipfs_repo / "config").exists():  # this node's Kubo peers with the other validators' (Peering.Peers)
        from abci_app.ipfs import node as kubo

        mine = kubo.peer_id(layout.ipfs_repo)
        others = [tuple(g.ipfs_peer.split("@", 1)) for g in gentxs if g.ipfs_peer and not g.ipfs_peer.startswith(mine + "@")]
        kubo.set_peering(layout.ipfs_repo, others)
    return {"chain_id": chain_id, "validators": [{"moniker": g.moniker, "operator": g.operator, "self_bond": g.self_bond} for g in gentxs],
            "persistent_peers": peers, "genesis": str(layout.genesis), "sha256": sha}


def validate_genesis(genesis: dict) -> dict:
    """Run the app's own InitChain checks on `genesis` in a throwaway store, and check CometBFT's
    validators are the staking validators with the same power; returns a summary, NodeError if not."""
    from abci_app import runtime
    from abci_app.context import Context
    from abci_app.modules import staking
    from abci_app.state import Store

    app_state = genesis.get("app_state") or {}
    if not isinstance(app_state, dict):
        raise NodeError("genesis app_state is not a JSON object")
    with tempfile.TemporaryDirectory(prefix="gradchain-genesis-") as tmp:
        store = Store(Path(tmp) / "state.sqlite")
        try:
            state = store.begin_block()
            ctx = Context(state, genesis["chain_id"], 0, 0)
            runtime.genesis(ctx, app_state)
            max_age = genesis.get("consensus_params", {}).get("evidence", {}).get("max_age_num_blocks")
            if max_age is not None:
                staking.check_evidence_age(state, int(max_age))
            app_hash = state.app_hash().hex().upper()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise NodeError(f"genesis is invalid: {exc}") from None
        finally:
            store.close()
    from_app = {u.pubkey: u.power for u in ctx.validator_updates}
    from_cometbft = {}
    for validator in genesis.get("validators") or []:
        try:
            from_cometbft[base64.b64decode(validator["pub_key"]["value"])] = int(validator["power"])
        except (KeyError, TypeError, ValueError) as exc:
            raise NodeError(f"genesis validator entry {validator!r} is malformed: {exc}") from None
    if from_app and from_cometbft != from_app:
        raise NodeError("genesis validators and staking validators differ (keys or power); rerun `gradchain genesis collect` on a draft genesis")
    if not from_app and not from_cometbft:
        raise NodeError("genesis has no validators (collect the gentxs first)")
    return {"chain_id": genesis["chain_id"], "validators": len(from_app or from_cometbft), "initial_app_hash": app_hash}
