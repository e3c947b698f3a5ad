"""`gradchain model lineage N`: from a version back to genesis, naming datasets, licences and contributors with
each one's share of the accepted work; text, -o json and --plot. The chain is a fake ChainClient answering the
registry's and the datasets' queries with records shaped as the chain writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from abci_app.cli import model as model_cli
from tests.unit.test_cli import assert_one_error_line, run
from tests.unit.test_cli_model import FakeChain, version

ALICE, BOB, CAROL = "gc1alice", "gc1bob", "gc1carol"  # the fake chain never parses addresses
SEED = "5e" * 32


def contribution(index: int, trainer: str, windows: list[list[int]]) -> dict:
    return {"submission": index, "trainer": trainer, "cid": f"bafkdelta{index}{trainer}", "sha256": f"{index:02d}" * 32, "seed": SEED, "windows": windows}


def chain_of_three() -> tuple[list[dict], dict[int, dict]]:
    """v0 (genesis, trained off chain on kjv) <- v1 (alice on kjv 64 + web 64; bob on kjv 128) <- v2 (alice on web 256)
    <- v3 (a side branch of v1: carol on kjv 64)."""
    v0, v1, v2, v3 = version(0, dataset_ids=[0]), version(1, dataset_ids=[0, 1]), version(2, dataset_ids=[1]), version(3, dataset_ids=[0])
    v1["contributions"] = [contribution(0, ALICE, [[0, 64], [1, 64]]), contribution(1, BOB, [[0, 128]])]
    v2["contributions"] = [contribution(0, ALICE, [[1, 256]])]
    v3["parent"], v3["contributions"] = 1, [contribution(0, CAROL, [[0, 64]])]
    sets = {
        0: {"id": 0, "name": "kjv", "licence": "public-domain", "owner": "", "creator": "genesis", "cid": "bafykjv", "bytes": 1, "sha256": "aa" * 32},
        1: {"id": 1, "name": "web", "licence": "CC-BY-4.0", "owner": "gc1owner", "creator": BOB, "cid": "bafyweb", "bytes": 1, "sha256": "bb" * 32},
    }
    return [v0, v1, v2, v3], sets


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    versions, sets = chain_of_three()
    monkeypatch.setattr(model_cli, "ChainClient", FakeChain(versions, sets))
    return tmp_path / "home"


def test_lineage_json_walks_to_genesis_with_shares(home: Path) -> None:
    result = run(home, "model", "lineage", "2", "-o", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [v["id"] for v in doc["path"]] == [2, 1, 0] and doc["version"] == 2
    assert doc["total_windows"] == 512
    assert [(d["id"], d["name"], d["licence"], d["owner"], d["windows"], d["share"], d["versions"]) for d in doc["datasets"]] == [
        (0, "kjv", "public-domain", "genesis", 192, 0.375, [1, 0]),
        (1, "web", "CC-BY-4.0", "gc1owner", 320, 0.625, [2, 1]),
    ]
    assert [(t["trainer"], t["submissions"], t["windows"], t["share"], t["versions"]) for t in doc["contributors"]] == [
        (ALICE, 2, 384, 0.75, [2, 1]), (BOB, 1, 128, 0.25, [1]),
    ]
    assert doc["path"][1]["contributions"][0]["seed"] == SEED


def test_a_side_branch_counts_only_its_own_ancestors(home: Path) -> None:
    doc = json.loads(run(home, "model", "lineage", "3", "-o", "json").stdout)
    assert [v["id"] for v in doc["path"]] == [3, 1, 0]
    assert {t["trainer"]: t["windows"] for t in doc["contributors"]} == {CAROL: 64, ALICE: 128, BOB: 128}  # not v2's 256


def test_lineage_text_names_datasets_licences_and_contributors(home: Path) -> None:
    result = run(home, "model", "lineage")  # the latest version: 3
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "lineage of version 3: 3 versions back to genesis, 320 accepted windows"
    assert lines[1].startswith("version 3 (parent 1, round 2): bafyfakecid3") and lines[1].endswith("data kjv  1 accepted submissions")
    assert any(line.startswith(f"  submission 0 by {CAROL}: delta bafkdelta0{CAROL}") and "windows kjv 64" in line for line in lines)
    assert any(line.startswith("version 0 (genesis)") for line in lines)
    kjv = next(line for line in lines if " kjv " in line and "windows" in line and "owner" in line)
    assert "public-domain" in kjv and kjv.endswith("256 windows   80.0%")
    assert any(line.startswith(f"  {CAROL}  1 submissions") and line.endswith("20.0%") for line in lines)


def test_genesis_alone_has_no_contributors(home: Path) -> None:
    result = run(home, "model", "lineage", "0")
    assert result.exit_code == 0
    assert "contributors: none (no accepted submission on this path)" in result.stdout
    assert "kjv" in result.stdout and "public-domain" in result.stdout


def test_lineage_plot_writes_a_png(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "lineage.png"
    result = run(home, "model", "lineage", "2", "--plot", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"plot written to {out}"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5_000


def test_an_unknown_version_is_one_line(home: Path) -> None:
    result = run(home, "model", "lineage", "9")
    assert result.exit_code == 1 and result.stdout == ""
    assert_one_error_line(result.stderr, "model version 9 does not exist", "latest is 3")
