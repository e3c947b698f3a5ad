"""The `gradchain` CLI, run as a subprocess, against a real 4-validator localnet.

Sends with `tx bank send`, reads back with `query` on other nodes, checks
`--prove` against the app hash in a committed header, and checks that the
chain's rejections reach the user as one `error:` line.
"""

from __future__ import annotations

import re

import pytest

from abci_app import crypto
from abci_app.localnet import Network
from tests.e2e.helpers import assert_one_error_line, balance, gradchain, json_out

pytestmark = pytest.mark.e2e


def wait_for_height(net: Network, node: int, height: int) -> None:
    """Every node serves queries at its own latest height; wait until `node` has `height`."""
    with net.client(node) as client:
        client.wait_for_height(height, timeout=60)


def test_status_shows_chain_and_validators(network: Network) -> None:
    data = json_out(gradchain(network, "status", "-o", "json"))
    assert data["chain_id"] == network.chain_id and data["latest_block_height"] >= 2
    assert len(data["validators"]) == 4 and all(v["voting_power"] > 0 for v in data["validators"])


def test_send_then_query_on_other_nodes(network: Network) -> None:
    recipient = crypto.PrivateKey.generate().address
    before = json_out(gradchain(network, "query", "account", "dev0", "-o", "json"))

    sent = json_out(gradchain(network, "tx", "bank", "send", "dev0", recipient, "12345", "--yes", "-o", "json"))

    assert sent["code"] == 0 and sent["height"] >= 2 and re.fullmatch(r"[0-9A-F]{64}", sent["hash"])
    for node in (1, 3):
        wait_for_height(network, node, sent["height"])
        data = json_out(gradchain(network, "query", "bank", "balance", recipient, "-o", "json", node=node))
        assert data["balance"] == 12345
    after = json_out(gradchain(network, "query", "account", "dev0", "-o", "json", node=2))
    assert after["nonce"] == before["nonce"] + 1
    assert after["balance"] <= before["balance"] - 12345 - 1  # amount plus at least the minimum fee

    text = gradchain(network, "tx", "bank", "send", "dev0", "dev1", "1", "--yes", node=1)
    assert text.returncode == 0, text.stderr
    assert re.search(r"^hash: +[0-9A-F]{64}\nheight: +\d+\ncode: +0$", text.stdout, re.M)


def test_balance_proof_verifies_against_header_app_hash(network: Network) -> None:
    recipient = crypto.PrivateKey.generate().address
    sent = json_out(gradchain(network, "tx", "bank", "send", "dev1", recipient, "777", "--yes", "-o", "json"))
    # The app hash changed, so CometBFT makes block height+1 whose header commits this state.
    wait_for_height(network, 2, sent["height"] + 1)

    proved = gradchain(network, "query", "bank", "balance", recipient, "--prove", node=2)

    assert proved.returncode == 0, proved.stderr
    amount, verdict, *signed_by = proved.stdout.splitlines()  # then the header, its signers and the root of trust
    match = re.match(r"proof verified against app hash ([0-9A-F]{64}) at height (\d+): ", verdict)
    assert amount == "777 ugrad" and match, proved.stdout
    with network.client(0) as client:  # the app hash came from a header every node agrees on
        assert client.header(int(match[2]) + 1)["app_hash"] == match[1]

    absent = crypto.PrivateKey.generate().address
    data = json_out(gradchain(network, "query", "bank", "balance", absent, "--prove", "-o", "json", node=3))
    assert data["balance"] == 0 and data["proof"]["verified"] is True


def test_insufficient_funds_is_one_line(network: Network) -> None:
    with network.client(0) as client:
        available = balance(client, network.account("dev2").address)
    too_much = gradchain(network, "tx", "bank", "send", "dev2", "dev3", str(available + 1), "--yes")
    # CheckTx already runs the message on the mempool's state, so this fails before any block.
    assert_one_error_line(too_much, "tx rejected (bank code 1): insufficient balance", f"needs {available + 1}ugrad")

    added = gradchain(network, "keys", "add", "e2e-broke")  # a fresh account: it cannot even pay the fee
    assert added.returncode == 0, added.stderr
    cannot_pay = gradchain(network, "tx", "bank", "send", "e2e-broke", "dev3", "1", "--yes")
    assert_one_error_line(cannot_pay, "tx rejected (runtime code 7)")


def test_errors_before_the_chain_are_one_line(network: Network) -> None:
    good = crypto.PrivateKey.generate().address
    bad_checksum = good[:-1] + ("q" if good[-1] != "q" else "p")
    assert_one_error_line(gradchain(network, "tx", "bank", "send", "dev0", bad_checksum, "1", "--yes"), "bad checksum")
    assert_one_error_line(gradchain(network, "tx", "bank", "send", "nobody", good, "1", "--yes"), "unknown key 'nobody'")
    assert_one_error_line(gradchain(network, "tx", "bank", "send", "dev0", good, "1.5", "--yes"), "Invalid value for 'AMOUNT'")
