"""`gradchain node join`: point a fresh node at a running network.

From one running node's RPC it takes the genesis (checked against
--genesis-sha256 when given), the chain id, persistent peers (that node and
its peers, at their advertised addresses) and, for state sync, a trust height
and hash from that node's /commit. Trusting one node's word on the hash is
exactly what the operator must check out of band (another operator, an
explorer): the command says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from abci_app.node.ceremony import write_genesis
from abci_app.node.home import Layout, NodeError, load_settings, save_settings, write_config
from abci_app.rpc import RpcClient, RpcError

MAX_PEERS = 10  # persistent peers taken from the peer's /net_info, besides the peer itself
DEFAULT_TRUST_PERIOD = "168h0m0s"  # CometBFT's default: a trusted header older than this is refused
TRUST_WARNING = ("warning: state sync trusts height {height} with hash {hash}, as told by {peer}; "
                 "check both with another operator or an explorer you trust before starting this node "
                 "(or pass --trust-height/--trust-hash that you checked)")


def genesis_digest(genesis: dict) -> str:
    """sha256 of the genesis in canonical JSON (sorted keys, no spaces): the same digest whether it was read
    from a file or from a node's /genesis, which formats it differently."""
    return hashlib.sha256(json.dumps(genesis, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fetch_genesis(client: RpcClient) -> dict:
    """The network's genesis from a node: /genesis, or /genesis_chunked when it is too big for one answer."""
    try:
        return client.call("genesis")["genesis"]
    except RpcError as exc:
        if "genesis_chunked" not in str(exc) and "too large" not in str(exc):
            raise
    first = client.call("genesis_chunked", chunk=0)
    chunks = [base64.b64decode(first["data"])]
    for index in range(1, int(first["total"])):
        chunks.append(base64.b64decode(client.call("genesis_chunked", chunk=index)["data"]))
    return json.loads(b"".join(chunks))


def _peer_address(node_info: dict, fallback_host: str) -> str | None:
    """id@host:port from a node_info (listen_addr is the external address when the node set one)."""
    node_id, listen = node_info.get("id"), node_info.get("listen_addr", "")
    if not node_id or not listen:
        return None
    host, _, port = listen.removeprefix("tcp://").rpartition(":")
    if host in ("0.0.0.0", "", "::", "[::]"):
        host = fallback_host
    return f"{node_id}@{host}:{port}"


def fetch_peers(client: RpcClient, peer_url: str) -> list[str]:
    """The peer itself (its host from the URL if it listens on a wildcard), then up to MAX_PEERS of its peers."""
    host = urlparse(peer_url).hostname or "127.0.0.1"
    peers = []
    me = _peer_address(client.status()["node_info"], host)
    if me:
        peers.append(me)
    for entry in client.call("net_info").get("peers", [])[:MAX_PEERS]:
        address = _peer_address(entry.get("node_info", {}), entry.get("remote_ip", host))
        if address and address not in peers:
            peers.append(address)
    return peers


def trust_point(client: RpcClient, height: int | None) -> tuple[int, str]:
    """(height, block hash) of a committed block: `height`, or the peer's latest."""
    if height is None:
        height = client.latest_height()
    if height < 1:
        raise NodeError("the peer has no committed block yet; wait for the network to make some")
    commit = client.commit(height)
    block_hash = commit["signed_header"]["commit"]["block_id"]["hash"]
    return height, block_hash


@dataclass
class JoinResult:
    chain_id: str
    genesis_sha256: str
    persistent_peers: list[str]
    rpc_servers: list[str]
    trust_height: int
    trust_hash: str
    trust_checked: bool  # the operator supplied both, rather than taking the peer's word

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def join(home: Path, peer: str, *, genesis_sha256: str | None = None, trust_height: int | None = None, trust_hash: str | None = None,
         rpc_servers: list[str] | None = None, trust_period: str = DEFAULT_TRUST_PERIOD, state_sync: bool = True) -> JoinResult:
    """Write genesis, peers and the [statesync] section of the fresh node at HOME from the running node at `peer`."""
    home = Path(home).resolve()
    settings = load_settings(home)
    layout = Layout(home)
    if (layout.home / "data" / "blockstore.db").exists():  # CometBFT creates it at its first start
        raise NodeError(f"{home} has synced blocks already; join a fresh home (`node init` in a new --home)")
    if trust_hash is not None and trust_height is None:
        raise NodeError("--trust-hash needs --trust-height: the hash of which block?")
    supplied = trust_hash is not None
    try:
        with RpcClient(peer, timeout=15.0) as client:
            genesis = fetch_genesis(client)
            digest = genesis_digest(genesis)
            if genesis_sha256 is not None and digest != genesis_sha256.lower():
                raise NodeError(f"the genesis from {peer} has sha256 {digest}, not {genesis_sha256}: wrong network or a lying node")
            peers = fetch_peers(client, peer)
            if trust_hash is None and state_sync:
                trust_height, trust_hash = trust_point(client, trust_height)
    except RpcError as exc:
        raise NodeError(f"cannot read the network from {peer}: {exc}") from None
    servers = rpc_servers or [peer, peer]
    if state_sync and len(servers) < 2:
        servers = servers * 2  # CometBFT wants two; the same node twice is allowed
    write_genesis(layout.genesis, genesis)
    values: dict[tuple[str, str], object] = {("p2p", "persistent_peers"): ",".join(peers), ("statesync", "enable"): state_sync}
    if state_sync:
        values |= {("statesync", "rpc_servers"): ",".join(servers), ("statesync", "trust_height"): int(trust_height),
                   ("statesync", "trust_hash"): trust_hash, ("statesync", "trust_period"): trust_period}
    write_config(home, values)
    settings.chain_id = genesis["chain_id"]
    save_settings(home, settings)
    return JoinResult(genesis["chain_id"], digest, peers, servers if state_sync else [], int(trust_height or 0), trust_hash or "", supplied)


def parse_ipfs_peer(text: str, where: str = "--ipfs-peer") -> tuple[str, str]:
    """'PEERID@/ip4|ip6|dns/HOST/tcp/PORT' -> (peer id, multiaddr); NodeError if Kubo could not parse it (it would not start)."""
    from abci_app.node.ceremony import check_kubo_peer

    peer_id, _, multiaddr = check_kubo_peer(text, where).partition("@")
    return peer_id, multiaddr


def founders_gentxs(gentx_dir: Path, genesis: dict) -> tuple[list, list[str]]:
    """The gentxs in `gentx_dir` whose (operator, consensus key) are validators of `genesis`, and a line for each other
    one: anyone can sign a gentx for a chain id, and only the founders' name Kubo peers worth dialling."""
    from abci_app.node.ceremony import read_gentxs

    founders = {(v.get("operator"), v.get("pubkey")) for v in genesis.get("app_state", {}).get("staking", {}).get("validators") or []
                if isinstance(v, dict)}
    kept, skipped = [], []
    for gentx in read_gentxs(gentx_dir, genesis["chain_id"]):
        if (gentx.operator, base64.b64encode(gentx.pubkey).decode()) in founders:
            kept.append(gentx)
        else:
            skipped.append(f"gentx of {gentx.moniker} ({gentx.operator}) is not a validator in this network's genesis: its Kubo peer is not used")
    return kept, skipped


def configure_ipfs(home: Path, swarm_key: bytes | None = None, peers: list[str] = (), gentx_dir: Path | None = None,
                   report: Callable[[str], None] = print) -> list[str]:
    """Put this node's Kubo in the network's private swarm: its swarm key (received out of band) and Peering.Peers
    from `peers` (PEERID@MULTIADDR) and the founders' gentx files in `gentx_dir` (each names its Kubo peer).
    Returns the peers set; NodeError when the node has no Kubo repo or a peer is malformed."""
    from abci_app.ipfs import node as kubo
    from abci_app.node.ceremony import read_genesis
    from abci_app.node.home import set_swarm_key

    home = Path(home).resolve()
    layout = Layout(home)
    if not (layout.ipfs_repo / "config").exists():
        raise NodeError(f"{home} has no Kubo repo (it was made with --no-ipfs): a swarm key or IPFS peers have nothing to configure")
    pairs = [parse_ipfs_peer(text) for text in peers]
    if gentx_dir is not None:
        gentxs, skipped = founders_gentxs(gentx_dir, read_genesis(layout.genesis))
        for line in skipped:
            report(line)
        pairs += [parse_ipfs_peer(gentx.ipfs_peer, "gentx") for gentx in gentxs if gentx.ipfs_peer]
    if swarm_key is not None:
        set_swarm_key(home, swarm_key)
    if pairs:
        mine = kubo.peer_id(layout.ipfs_repo)
        pairs = [pair for pair in dict.fromkeys(pairs) if pair[0] != mine]
        kubo.set_peering(layout.ipfs_repo, pairs)
    return [f"{peer_id}@{multiaddr}" for peer_id, multiaddr in pairs]
