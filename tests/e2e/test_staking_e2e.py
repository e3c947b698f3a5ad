"""Staking against real CometBFT: a fifth node joins as a validator, is jailed for downtime, unjails, leaves.

One 4-validator network for the module, with staking params that keep it
short: power_unit 100000 (genesis validators have power 10), jailed after 6
missed signatures in 12 heights, 4 blocks in jail. The tests run in order and
build on each other (the joiner's life cycle):

1. `Network.add_node` starts a fifth node that syncs the chain;
2. its funded operator sends `gradchain tx staking create-validator` (the CLI,
   as a user would): CometBFT lists it in /validators two heights later with
   power bond // power_unit, and its signatures show up in commits;
3. stopped, it misses signatures in every block (each miss is a state change,
   so the chain keeps making blocks on its own until the jail), is jailed and
   drops out of /validators, while the other four go on;
4. restarted and past its jail time, `tx staking unjail` brings it back with its power;
5. undelegating its whole stake removes it from /validators.

Wherever a test looks, `gradchain query staking validators -o json` (the
app's state after block H) must equal CometBFT's /validators at H+2, where
CometBFT applies the updates of block H.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from abci_app import localnet
from abci_app.cli.common import query_pages
from abci_app.cli.staking import consensus_address, parse_pubkey
from abci_app.keyring import Keyring
from abci_app.localnet import Network
from tests.e2e.conftest import require_cometbft, serve
from tests.e2e.helpers import Transfer, gradchain, header_app_hashes, json_out, latest_heights, poke, send_transfers, wait_until

pytestmark = pytest.mark.e2e


POWER_UNIT = 100_000
DOWNTIME_WINDOW = 12
DOWNTIME_MAX_MISSED = 6
JAIL_BLOCKS = 4
APP_STATE = {
    "staking": {
        "params": {
            "power_unit": POWER_UNIT,  # genesis bond 1_000_000 (min_self_bond) -> power 10 each
            "downtime_window": DOWNTIME_WINDOW,
            "downtime_max_missed": DOWNTIME_MAX_MISSED,
            "jail_blocks": JAIL_BLOCKS,
            "unbonding_blocks": 3,
        }
    },
    "gov": {"params": {"voting_blocks": 3, "expedited_voting_blocks": 1}},  # a vote lasts at most an unbonding
}
GENESIS_POWER = 1_000_000 // POWER_UNIT
# Not a multiple of the unit: power is the floor, 12. With the four genesis
# validators at 10 each, stopping the joiner leaves 40 of 52 (> 2/3) online;
# the 0.1% downtime slash (1234) leaves 1_233_333: still power 12 and above min_self_bond.
BOND = 1_234_567
OPERATOR = "joiner"
JOINER = 4  # node index of the fifth node


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """This module's own 4-validator network (short downtime window and jail); all of its nodes stopped afterwards.

    Named like conftest's fixture, so its failure hook attaches every node's log tail (the fifth included).
    """
    require_cometbft()
    root: Path = tmp_path_factory.mktemp("staking-net")
    # serve() stops every node in net.nodes, the added one included
    yield from serve(localnet.create(root, validators=4, chain_id="gradchain-staking-e2e", app_state=APP_STATE))


@dataclass(frozen=True)
class Joiner:
    index: int
    home: Path  # its CometBFT home: --pubkey-from-home
    operator: str  # the operator account's address
    address: str  # its consensus address, as CometBFT's /validators prints it


@pytest.fixture(scope="module")
def joiner(network: Network) -> Joiner:
    """The fifth node, synced and running, and a funded operator key for it (not yet a validator)."""
    started = time.monotonic()
    node = network.add_node(timeout=120)
    assert node.index == JOINER
    print(f"\nadd_node: node{node.index} synced in {time.monotonic() - started:.1f}s")
    keyring = Keyring(network.keyring_home)
    key = keyring.get(OPERATOR) if OPERATOR in keyring.names() else keyring.add(OPERATOR)
    send_transfers(network, [Transfer("faucet", key.address, 10 * BOND)], nodes=[0])
    address = consensus_address(parse_pubkey(network.consensus_pubkey(node.index)))
    return Joiner(node.index, node.home, key.address, address)


# --- helpers ----------------------------------------------------------------------------


def assert_enters_set(net: Network, joiner: Joiner, height: int, power: int) -> int:
    """Block `height` put the joiner in the set: CometBFT applies it at height + 2 (not before), with `power`;
    the app's and CometBFT's sets agree on 5 validators; returns the height of the first commit it signed."""
    advance_to(net, height + 1)
    assert joiner.address not in comet_validators(net, height + 1)
    assert comet_validators(net, height + 2).get(joiner.address) == power
    validators = assert_sets_match(net)
    assert validators[joiner.address] == power and len(validators) == 5
    return wait_for_signature(net, joiner.address, height + 2)


def latest(net: Network, node: int = 0) -> int:
    with net.client(node) as client:
        return client.latest_height()


def advance_to(net: Network, height: int, node: int = 0, limit: int = 20) -> int:
    """Send transfers until `node` has committed `height` (an idle chain makes blocks only for txs)."""
    for _ in range(limit):
        current = latest(net, node)
        if current >= height:
            return current
        poke(net, node)
    raise AssertionError(f"height {height} not reached after {limit} transfers (at {latest(net, node)})")


def comet_validators(net: Network, height: int, node: int = 0) -> dict[str, int]:
    """CometBFT's validator set at `height`: consensus address -> voting power."""
    with net.client(node) as client:
        return {v["address"]: int(v["voting_power"]) for v in client.validators(height)}


def app_validators(net: Network, node: int = 0) -> tuple[int, dict[str, int], list[dict]]:
    """`gradchain query staking validators -o json`: (its height, address -> power of the active ones, all entries)."""
    data = json_out(gradchain(net, "query", "staking", "validators", "-o", "json", node=node))
    active = {v["consensus_address"]: int(v["power"]) for v in data["validators"] if not v["jailed_until"] and int(v["power"]) > 0}
    return int(data["height"]), active, data["validators"]


def assert_sets_match(net: Network, node: int = 0) -> dict[str, int]:
    """The CLI's validators after block H equal CometBFT's /validators at H+2; returns that set.

    /validators serves heights up to latest+1, so H+2 needs block H+1: one
    transfer makes it if the chain is idle.
    """
    height, app_set, _ = app_validators(net, node)
    advance_to(net, height + 1, node)
    comet = comet_validators(net, height + 2, node)
    assert comet == app_set, f"app state after block {height} {app_set} != CometBFT /validators at {height + 2} {comet}"
    print(f"validator sets match: app after {height} == CometBFT at {height + 2}: {sorted(comet.values())}")
    return comet


def app_validator(net: Network, operator: str, node: int = 0) -> dict | None:
    _, _, entries = app_validators(net, node)
    return next((v for v in entries if v["operator"] == operator), None)


def signed_at(net: Network, address: str, height: int, node: int = 0) -> bool:
    """Whether `address` signed the commit of block `height` (block_id_flag 2: a vote for the block)."""
    with net.client(node) as client:
        signatures = client.call("commit", height=height)["signed_header"]["commit"]["signatures"]
    return any(s.get("validator_address") == address and int(s.get("block_id_flag", 0)) == 2 for s in signatures)


def wait_for_signature(net: Network, address: str, from_height: int, node: int = 0, timeout: float = 90.0) -> int:
    """The first height >= from_height whose commit `address` signed, sending a transfer about once a second.

    Bounded by time, not blocks: a node just restarted on a loaded machine
    can need some seconds to reconnect to its peers and get its precommits
    in before the proposer moves on, and blocks come sub-second here.
    """
    checked = from_height
    deadline = time.monotonic() + timeout
    while True:
        top = advance_to(net, checked, node)
        for height in range(checked, top + 1):
            if signed_at(net, address, height, node):
                return height
        checked = top + 1
        if time.monotonic() > deadline:
            raise AssertionError(f"{address} signed no commit in heights {from_height}..{checked - 1} ({timeout:.0f}s)")
        time.sleep(1.0)


def tx_height(result: subprocess.CompletedProcess) -> int:
    data = json_out(result)
    assert data["code"] == 0, data
    return int(data["height"])


# --- tests --------------------------------------------------------------------------------


def test_fifth_node_syncs(network: Network, joiner: Joiner) -> None:
    assert len(network.nodes) == 5 and localnet.load(network.root).nodes[JOINER].rpc_url == network.rpc_url(JOINER)
    assert {s.index for s in localnet.load(network.root).status() if s.node_alive and s.app_alive} == set(range(5))
    height = advance_to(network, latest(network) + 1)  # a block made after it joined: it follows the chain live
    network.wait_for_blocks(height, timeout=30)
    hashes = header_app_hashes(network, height)
    assert len(set(hashes.values())) == 1, hashes
    # a full node so far: not in CometBFT's set, nor in staking's
    validators = assert_sets_match(network)
    assert len(validators) == 4 and set(validators.values()) == {GENESIS_POWER} and joiner.address not in validators


def test_create_validator_joins_set_with_expected_power_and_signs(network: Network, joiner: Joiner) -> None:
    result = gradchain(
        network, "tx", "staking", "create-validator", OPERATOR,
        "--pubkey-from-home", str(joiner.home), "--amount", str(BOND), "-y", "-o", "json",
        node=JOINER,  # sent through the new node itself
    )
    height = tx_height(result)
    expected = BOND // POWER_UNIT
    assert expected == 12

    created = app_validator(network, joiner.operator)
    assert created is not None and created["consensus_address"] == joiner.address and created["moniker"] == f"node{JOINER}"
    assert created["tokens"] == BOND and created["power"] == expected
    signed = assert_enters_set(network, joiner, height, expected)
    print(f"create-validator in block {height}; in CometBFT's set from {height + 2}; signed the commit of {signed}")


def test_stopped_validator_is_jailed_and_chain_goes_on(network: Network, joiner: Joiner) -> None:
    assert comet_validators(network, latest(network) + 1).get(joiner.address) == BOND // POWER_UNIT, "precondition: it validates"
    network.stop_node(JOINER)
    started = time.monotonic()
    before = latest(network)
    poke(network)  # one block; from then on each missed signature is a state change, so blocks keep coming

    def jailed() -> bool:
        with network.client(0) as client:
            entries, _ = query_pages(client, "/staking/validators")
        return any(v["operator"] == joiner.operator and v["jailed_until"] for v in entries)

    wait_until(jailed, timeout=90, what="the stopped validator to be jailed for downtime", poll=0.5)
    print(f"jailed {time.monotonic() - started:.1f}s after the stop, chain at {latest(network)} (was {before})")
    assert latest(network) >= before + DOWNTIME_MAX_MISSED  # the other four kept committing blocks

    entry = app_validator(network, joiner.operator)
    assert entry["power"] == 0 and entry["jailed_until"] > before
    assert entry["tokens"] == BOND - BOND * 10 // 10_000  # default downtime slash: 0.1%
    if latest(network) + 1 < entry["jailed_until"]:  # while its jail time lasts, the chain refuses an unjail
        early = gradchain(network, "tx", "staking", "unjail", OPERATOR, "-y", "-o", "json")
        # StillJailed, refused by CheckTx already (or, had it reached a block, failed there with the fee charged)
        assert early.returncode != 0 and "(staking code 8)" in early.stderr and "jailed until" in early.stderr, early.stderr
        print(f"early unjail refused: {early.stderr.strip()}")
    validators = assert_sets_match(network)
    assert joiner.address not in validators and len(validators) == 4

    # the chain still takes transactions with the joiner down and jailed
    results = send_transfers(network, [Transfer(f"dev{i}", network.account("dev0").address, 1) for i in range(1, 4)], nodes=[0, 1, 2])
    assert all(r.code == 0 for r in results)
    heights = latest_heights(network, nodes=[0, 1, 2, 3])
    assert min(heights.values()) >= max(r.height for r in results), heights


def test_unjail_after_jail_time_restores_power(network: Network, joiner: Joiner) -> None:
    entry = app_validator(network, joiner.operator)
    assert entry is not None and entry["jailed_until"], "precondition: jailed"
    until = int(entry["jailed_until"])

    network.start_node(JOINER)
    network.wait_synced(JOINER, timeout=120)
    advance_to(network, until - 1)  # the unjail tx lands in a later block, at height >= jailed_until

    height = tx_height(gradchain(network, "tx", "staking", "unjail", OPERATOR, "-y", "-o", "json", node=JOINER))
    assert height >= until
    entry = app_validator(network, joiner.operator)
    expected = entry["tokens"] // POWER_UNIT
    assert not entry["jailed_until"] and entry["power"] == expected == 12
    signed = assert_enters_set(network, joiner, height, expected)
    print(f"unjailed in block {height} (jailed until {until}); back in the set at {height + 2}; signed the commit of {signed}")


def test_undelegating_all_stake_removes_it_from_the_set(network: Network, joiner: Joiner) -> None:
    delegations = json_out(gradchain(network, "query", "staking", "delegations", OPERATOR, "-o", "json"))["delegations"]
    bonded = sum(int(d["amount"]) for d in delegations if d["validator"] == joiner.operator)
    assert bonded > 0, delegations

    height = tx_height(gradchain(network, "tx", "staking", "undelegate", OPERATOR, joiner.operator, str(bonded), "-y", "-o", "json"))
    left = app_validator(network, joiner.operator)  # the record stays (its jail and key with it), empty
    assert (left["tokens"], left["shares"], left["power"]) == (0, 0, 0) and left["jailed_until"], left
    advance_to(network, height + 1)
    assert joiner.address in comet_validators(network, height + 1)
    assert joiner.address not in comet_validators(network, height + 2)
    validators = assert_sets_match(network)
    assert len(validators) == 4 and joiner.address not in validators
    unbonding = json_out(gradchain(network, "query", "staking", "unbondings", OPERATOR, "-o", "json"))["unbondings"]
    assert [u["amount"] for u in unbonding if u["kind"] == "delegation"] in ([bonded], [])  # [] once the 3 blocks have passed
    # the node itself keeps running as a full node
    network.wait_synced(JOINER, timeout=60)
