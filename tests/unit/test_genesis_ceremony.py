"""The genesis ceremony (abci_app.node.ceremony and `gradchain genesis`): real `cometbft init` homes,
gentxs signed by operator keys, collect's checks, and a final genesis the app's InitChain accepts."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from abci_app import crypto
from abci_app import tx as txlib
from abci_app.cli.main import cli
from abci_app.localnet.config import COMETBFT
from abci_app.node import ceremony
from abci_app.node import home as nodehome
from abci_app.node.home import Layout, NodeError, Settings



@pytest.fixture(autouse=True)
def require_cometbft() -> None:
    """`node init` runs `cometbft init`: fail, never skip, when the binary is missing (`make test` builds it first)."""
    if not COMETBFT.exists():
        pytest.fail(f"CometBFT binary missing at {COMETBFT}: run `make install-go`", pytrace=False)

CHAIN_ID = "ceremony-1"
FUNDS = 50_000_000
BOND = 10_000_000  # 10 power units at the default power_unit


def operator(i: int) -> crypto.PrivateKey:
    return crypto.PrivateKey(bytes([i + 1]) * 32)


def init_home(root: Path, i: int) -> Path:
    home = root / f"v{i}"
    nodehome.init(home, Settings(moniker=f"v{i}", chain_id=CHAIN_ID, p2p=f"127.0.0.{i + 2}:26656", private_network=True), ipfs=False)
    return home


@pytest.fixture
def network(tmp_path: Path) -> list[Path]:
    """Three homes sharing the coordinator's draft genesis (v0's), every operator funded, every gentx in v0's gentx folder."""
    homes = [init_home(tmp_path, i) for i in range(3)]
    coordinator = Layout(homes[0]).genesis
    for i in range(3):
        ceremony.add_account(coordinator, operator(i).address, FUNDS)
    for i, home in enumerate(homes):
        if i:
            shutil.copyfile(coordinator, Layout(home).genesis)
        path = ceremony.make_gentx(home, operator(i), BOND, f"v{i}", f"127.0.0.{i + 2}:26656")
        if i:
            shutil.copy(path, Layout(homes[0]).gentx_dir)
    return homes


def gentx_files(home: Path) -> list[Path]:
    return sorted(Layout(home).gentx_dir.glob("*.json"))


def test_collect_writes_a_genesis_whose_staking_and_cometbft_validators_agree(network: list[Path]) -> None:
    summary = ceremony.collect(network[0])
    genesis = json.loads(Layout(network[0]).genesis.read_text())
    staking = genesis["app_state"]["staking"]["validators"]
    assert sorted(v["operator"] for v in staking) == sorted(operator(i).address for i in range(3))
    assert all(v["self_bond"] == BOND for v in staking)
    assert sorted(v["pub_key"]["value"] for v in genesis["validators"]) == sorted(v["pubkey"] for v in staking)
    assert {v["power"] for v in genesis["validators"]} == {str(BOND // 1_000_000)}
    # the self-bond came out of each operator's balance: the supply is what add-account funded
    assert sorted(b["amount"] for b in genesis["app_state"]["bank"]["balances"]) == [FUNDS - BOND] * 3
    assert int(genesis["consensus_params"]["evidence"]["max_age_num_blocks"]) < 20
    checked = ceremony.validate_genesis(genesis)
    assert checked["validators"] == 3 and len(checked["initial_app_hash"]) == 64
    # the coordinator's node peers with the other two, at the addresses their gentxs signed
    peers = summary["persistent_peers"].split(",")
    assert sorted(p.split("@")[1] for p in peers) == ["127.0.0.3:26656", "127.0.0.4:26656"]
    assert f'persistent_peers = "{summary["persistent_peers"]}"' in Layout(network[0]).config_toml.read_text()


def test_every_operator_collecting_the_same_gentxs_gets_the_same_genesis(network: list[Path], tmp_path: Path) -> None:
    draft = Layout(network[0]).genesis.read_text()
    Layout(network[1]).genesis.write_text(draft)
    a = ceremony.collect(network[0])
    b = ceremony.collect(network[1], Layout(network[0]).gentx_dir)
    assert a["sha256"] == b["sha256"]
    assert a["persistent_peers"] != b["persistent_peers"]  # each leaves itself out


def _rewrite_tx(path: Path, change) -> None:
    data = json.loads(path.read_text())
    data["tx"] = base64.b64encode(change(base64.b64decode(data["tx"]))).decode()
    path.write_text(json.dumps(data))


def _resign(path: Path, key: crypto.PrivateKey, chain_id: str | None = None, **fields) -> None:
    """Replace the gentx in `path` by one with `fields` changed in its message, signed by `key`."""
    signed = txlib.decode(base64.b64decode(json.loads(path.read_text())["tx"]))
    msg = txlib.MsgCreateValidator()
    msg.CopyFrom(signed.msg)
    for name, value in fields.items():
        setattr(msg, name, value)
    raw = txlib.build(key, chain_id or signed.body.chain_id, 0, 0, msg, memo=signed.body.memo)
    _rewrite_tx(path, lambda _: raw)


@pytest.mark.parametrize("tamper, message", [
    (lambda path, homes: _rewrite_tx(path, lambda raw: raw[:-1] + bytes([raw[-1] ^ 1])), "signature does not verify"),
    (lambda path, homes: _resign(path, operator(2), chain_id="other-chain"), "signed for chain 'other-chain'"),
    (lambda path, homes: _resign(path, operator(7)), "proof of possession does not verify"),  # another operator re-signs someone's gentx
    (lambda path, homes: _resign(path, operator(2), amount=FUNDS + 1), "less than its self-bond"),
    (lambda path, homes: _resign(path, operator(2), amount=999_999), "below the minimum"),
    (lambda path, homes: shutil.copy(path, path.with_name("copy.json")), "has two gentxs"),
    (lambda path, homes: path.write_text("{not json"), "unreadable"),
])
def test_collect_refuses_a_bad_gentx_and_leaves_the_genesis_untouched(network: list[Path], tamper, message: str) -> None:
    path = next(p for p in gentx_files(network[0]) if json.loads(p.read_text())["operator"] == operator(2).address)
    tamper(path, network)
    before = Layout(network[0]).genesis.read_text()
    with pytest.raises(NodeError, match=message):
        ceremony.collect(network[0])
    assert Layout(network[0]).genesis.read_text() == before


def test_two_gentxs_for_one_consensus_key_are_refused(network: list[Path]) -> None:
    ceremony.add_account(Layout(network[0]).genesis, operator(5).address, FUNDS)
    first = next(p for p in gentx_files(network[0]) if json.loads(p.read_text())["operator"] == operator(0).address)
    shutil.move(first, first.with_name("v0-first.json"))  # a node's gentx file has one name: a second one replaces it
    ceremony.make_gentx(network[0], operator(5), BOND, "again", "127.0.0.2:26656")  # v0's consensus key, a second operator
    with pytest.raises(NodeError, match="is in two gentxs"):
        ceremony.collect(network[0])


def test_gentx_needs_the_self_bond_in_the_genesis_balance(tmp_path: Path) -> None:
    home = init_home(tmp_path, 0)
    with pytest.raises(NodeError, match="less than the self-bond"):
        ceremony.make_gentx(home, operator(0), BOND, "v0", "127.0.0.2:26656")


def test_add_account_funds_an_address_once(tmp_path: Path) -> None:
    home = init_home(tmp_path, 0)
    ceremony.add_account(Layout(home).genesis, operator(0).address, 5)
    with pytest.raises(NodeError, match="already has a genesis balance"):
        ceremony.add_account(Layout(home).genesis, operator(0).address, 5)


def test_validate_finds_cometbft_validators_that_disagree_with_staking(network: list[Path]) -> None:
    ceremony.collect(network[0])
    genesis = json.loads(Layout(network[0]).genesis.read_text())
    genesis["validators"][0]["power"] = "11"
    with pytest.raises(NodeError, match="differ"):
        ceremony.validate_genesis(genesis)
    genesis["validators"][0]["power"] = str(BOND // 1_000_000)
    genesis["app_state"]["bank"]["balances"][0]["amount"] = -1
    with pytest.raises(NodeError, match="genesis is invalid"):
        ceremony.validate_genesis(genesis)


def run(home: Path, *args: str):
    return CliRunner().invoke(cli, [*args, "--home", str(home)], env={"GRADCHAIN_KEYRING_BACKEND": "test"})


def test_the_genesis_commands_end_to_end(tmp_path: Path) -> None:
    homes = []
    for i in range(2):
        home = tmp_path / f"n{i}"
        result = run(home, "node", "init", "--moniker", f"n{i}", "--chain-id", CHAIN_ID, "--listen", f"127.0.0.{i + 2}:26656", "--no-ipfs", "-o", "json")
        assert result.exit_code == 0, result.output
        assert run(home, "keys", "add", "op").exit_code == 0
        homes.append(home)
    for home in homes:
        address = run(home, "keys", "show", "op", "--address").stdout.strip()
        result = run(homes[0], "genesis", "add-account", address, f"{FUNDS}ugrad", "-o", "json")
        assert result.exit_code == 0 and json.loads(result.stdout) == {"address": address, "amount": FUNDS}
    shutil.copyfile(Layout(homes[0]).genesis, Layout(homes[1]).genesis)
    for home in homes:
        result = run(home, "genesis", "gentx", str(BOND), "--from", "op", "-o", "json")
        assert result.exit_code == 0, result.output
        shutil.copy(json.loads(result.stdout)["gentx"], tmp_path)
    result = run(homes[0], "genesis", "collect", "--gentx-dir", str(tmp_path), "-o", "json")
    assert result.exit_code == 0, result.output
    collected = json.loads(result.stdout)
    result = run(homes[0], "genesis", "validate", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sha256"] == collected["sha256"]
    again = run(homes[0], "genesis", "collect", "--gentx-dir", str(tmp_path))
    assert again.exit_code == 1 and again.stderr.count("\n") == 1 and again.stderr.startswith("error: ") and "collect runs once" in again.stderr


def test_collect_peers_the_validators_kubo_nodes(tmp_path: Path) -> None:
    from abci_app.ipfs import node as kubo

    if not kubo.IPFS.exists():
        pytest.fail(f"Kubo binary missing at {kubo.IPFS}: run `make install`", pytrace=False)
    homes = []
    for i in range(2):
        home = tmp_path / f"k{i}"
        nodehome.init(home, Settings(moniker=f"k{i}", chain_id=CHAIN_ID, p2p=f"127.0.0.{i + 2}:26656", ipfs_swarm=f"0.0.0.0:{4101 + i}"))
        homes.append(home)
    coordinator = Layout(homes[0]).genesis
    for i in range(2):
        ceremony.add_account(coordinator, operator(i).address, FUNDS)
    shutil.copyfile(coordinator, Layout(homes[1]).genesis)
    for i, home in enumerate(homes):
        shutil.copy(ceremony.make_gentx(home, operator(i), BOND, f"k{i}", f"127.0.0.{i + 2}:26656"), tmp_path)
    ceremony.collect(homes[0], tmp_path)
    peering = json.loads((Layout(homes[0]).ipfs_repo / "config").read_text())["Peering"]["Peers"]
    assert peering == [{"ID": kubo.peer_id(Layout(homes[1]).ipfs_repo), "Addrs": ["/ip4/127.0.0.3/tcp/4102"]}]


# --- the signed memo is parsed strictly, and collect ignores file names (review 15: F6-F8) --

KUBO_PEER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo@/ip4/127.0.0.3/tcp/4001"


def _gentx_of(home: Path, i: int) -> Path:
    return next(p for p in gentx_files(home) if json.loads(p.read_text())["operator"] == operator(i).address)


def _resign_memo(path: Path, memo: str) -> None:
    """The founder itself signs `memo`, and the file's readable copies follow it."""
    data = json.loads(path.read_text())
    signed = txlib.decode(base64.b64decode(data["tx"]))
    data["tx"] = base64.b64encode(txlib.build(operator(2), signed.body.chain_id, 0, 0, signed.msg, memo=memo)).decode()
    peer, _, ipfs_peer = memo.partition(" ")
    data["peer"], data["ipfs_peer"] = peer, ipfs_peer
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("memo, message", [
    ("{id}@127.0.0.4:26656," + "e" * 40 + "@6.6.6.6:26656", "not HOST:PORT|not an IP address"),  # a second persistent peer
    ("z" * 40 + "@127.0.0.4:26656", "40 lowercase hex"),
    ("{ID}@127.0.0.4:26656", "40 lowercase hex"),
    ("{id}@127.0.0.4", "not HOST:PORT"),
    ("{id}@127.0.0.4:99999", "not HOST:PORT"),
    ("{id}@bad_host!:26656", "not an IP address or DNS name"),
    ("{id}@300.0.0.4:26656", "not an IP address or DNS name"),
    ("{id}@127.0.0.4:26656 " + KUBO_PEER + " " + KUBO_PEER, "is not 'NODEID@HOST:PORT"),
    ("{id}@127.0.0.4:26656 x@/garbage", "Kubo peer"),
    ("{id}@127.0.0.4:26656 " + KUBO_PEER.replace("/ip4/127.0.0.3", "/ip4/300.0.0.3"), "Kubo peer"),
    ("{id}@127.0.0.4:26656 " + KUBO_PEER.replace("/tcp/4001", "/tcp/4001/p2p/x"), "Kubo peer"),
])
def test_collect_refuses_a_memo_that_is_not_exactly_one_peer_each(network: list[Path], memo: str, message: str) -> None:
    path = _gentx_of(network[0], 2)
    node = json.loads(path.read_text())["peer"].partition("@")[0]
    _resign_memo(path, memo.format(id=node, ID=node.upper()))
    before = Layout(network[0]).genesis.read_text()
    with pytest.raises(NodeError, match=message):
        ceremony.collect(network[0])
    assert Layout(network[0]).genesis.read_text() == before
    assert "6.6.6.6" not in Layout(network[0]).config_toml.read_text()


def test_a_signed_kubo_peer_is_collected_and_an_edited_one_refused(network: list[Path]) -> None:
    path = _gentx_of(network[0], 2)
    _resign_memo(path, json.loads(path.read_text())["peer"] + " " + KUBO_PEER)
    chain_id = ceremony.read_genesis(Layout(network[0]).genesis)["chain_id"]
    gentx = ceremony.check_gentx(json.loads(path.read_text()), chain_id, str(path))
    assert gentx.ipfs_peer == KUBO_PEER
    data = json.loads(path.read_text())
    data["ipfs_peer"] = KUBO_PEER.replace("127.0.0.3", "6.6.6.6")  # a relay swaps it: the signature covers the memo only
    path.write_text(json.dumps(data))
    with pytest.raises(NodeError, match="differs from the signed memo"):
        ceremony.collect(network[0])


def test_an_unversioned_gentx_is_refused(network: list[Path]) -> None:
    path = _gentx_of(network[0], 1)
    data = json.loads(path.read_text())
    data["version"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(NodeError, match="gentx version 1, expected 2"):
        ceremony.collect(network[0])


def test_two_gentxs_for_one_node_id_are_refused(network: list[Path]) -> None:
    path = _gentx_of(network[0], 2)
    _resign_memo(path, json.loads(_gentx_of(network[0], 1).read_text())["peer"])
    with pytest.raises(NodeError, match="node id .* is in two gentxs"):
        ceremony.collect(network[0])


def test_collect_is_the_same_whatever_the_gentx_files_are_called(network: list[Path], tmp_path: Path) -> None:
    draft = Layout(network[0]).genesis.read_text()
    Layout(network[1]).genesis.write_text(draft)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for n, path in enumerate(reversed(gentx_files(network[0]))):  # names that sort the other way round
        shutil.copy(path, renamed / f"{n}.json")
    a = ceremony.collect(network[0])
    b = ceremony.collect(network[1], renamed)
    assert a["sha256"] == b["sha256"]
    operators = [v["operator"] for v in json.loads(Layout(network[0]).genesis.read_text())["app_state"]["staking"]["validators"]]
    assert operators == sorted(operators)


def test_a_joiner_uses_only_the_founders_gentxs(network: list[Path], tmp_path: Path) -> None:
    """Anyone can sign a gentx for a chain id: a joiner's --gentx-dir keeps those of genesis validators and names the rest."""
    from abci_app.node.join import founders_gentxs

    ceremony.collect(network[0])
    genesis = ceremony.read_genesis(Layout(network[0]).genesis)
    published = tmp_path / "published"
    published.mkdir()
    for path in gentx_files(network[0]):
        shutil.copy(path, published)
    stranger = init_home(tmp_path, 7)
    shutil.copyfile(Layout(network[1]).genesis, Layout(stranger).genesis)
    ceremony.add_account(Layout(stranger).genesis, operator(7).address, FUNDS)
    shutil.copy(ceremony.make_gentx(stranger, operator(7), BOND, "v7", "127.0.0.9:26656"), published / "zz-stranger.json")
    kept, skipped = founders_gentxs(published, genesis)
    assert sorted(g.operator for g in kept) == sorted(operator(i).address for i in range(3))
    assert len(skipped) == 1 and operator(7).address in skipped[0] and "not a validator" in skipped[0]
