"""`gradchain dataset list` with the market's columns (weight, royalty, earnings) and `tx dataset add --owner
--royalty-bps`, against test_cli_staking's AppNode (the real Application behind a loopback RPC server)."""

from __future__ import annotations

import json
from pathlib import Path

from abci_app.modules import datasets
from tests.unit.conftest import fixed_key
from tests.unit.test_cli import assert_one_error_line, run
from tests.unit.test_cli_dataset import FakeKubo, add_args, corpus, home, node, registered  # noqa: F401  (fixtures)
from tests.unit.test_cli_staking import AppNode

OWNER = fixed_key(30).address


def test_add_with_an_owner_and_a_royalty_then_list(home: Path, node: AppNode, tmp_path: Path) -> None:  # noqa: F811
    path = corpus(tmp_path)
    added = run(home, "tx", "dataset", "add", *add_args(path), "--owner", OWNER, "--royalty-bps", "750", "-y")
    assert added.exit_code == 0, added.output
    assert run(home, "tx", "dataset", "add", *add_args(corpus(tmp_path, "mine.txt"), "mine"), "-y").exit_code == 0
    first, second = registered(node)
    assert (first["owner"], first["royalty_bps"], first["weight"], first["earned"], first["windows"]) == (OWNER, 750, 0, 0, 0)
    assert second["owner"] == node.alice and second["royalty_bps"] == 0  # no --owner: the signer
    listed = run(home, "dataset", "list")
    assert listed.exit_code == 0
    header, row, _ = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "WEIGHT", "ROYALTY", "EARNED", "WINDOWS", "BYTES", "LICENCE", "OWNER", "CID"]
    assert row.split() == ["0", "psalms", "0", "7.50%", "0", "0", str(path.stat().st_size), "CC0-1.0", OWNER, first["cid"]]
    as_json = json.loads(run(home, "dataset", "list", "-o", "json").stdout)
    assert as_json == registered(node)


def test_add_refuses_a_bad_owner_or_royalty_in_one_line(home: Path, node: AppNode, tmp_path: Path) -> None:  # noqa: F811
    path = corpus(tmp_path)
    bad_owner = run(home, "tx", "dataset", "add", *add_args(path), "--owner", "gc1nope", "-y")
    assert bad_owner.exit_code == 1 and FakeKubo.added == []
    assert_one_error_line(bad_owner.stderr, "invalid --owner 'gc1nope'")
    too_much = run(home, "tx", "dataset", "add", *add_args(path), "--royalty-bps", str(datasets.Params().max_royalty_bps + 1), "-y")
    assert too_much.exit_code == 1
    assert_one_error_line(too_much.stderr, "datasets code 1", "above the maximum of 5000 bps")
    out_of_range = run(home, "tx", "dataset", "add", *add_args(path), "--royalty-bps", "10001", "-y")
    assert out_of_range.exit_code == 2 and "--royalty-bps" in out_of_range.stderr
    assert registered(node) == []
