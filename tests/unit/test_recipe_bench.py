"""bench/recipe.py (issue 12): consecutive rounds, each from the previous merge, judged by the chain's held-out rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from abci_app import localnet
from abci_app.ml import genesis_cache_dir

REPO = Path(__file__).resolve().parents[2]
CORPUS = genesis_cache_dir() / "kjv.txt"


def _test_genesis_cached() -> bool:
    return CORPUS.exists() and localnet.tiny_genesis_path("test", CORPUS).exists()


@pytest.mark.skipif(not _test_genesis_cached(), reason="needs the cached KJV corpus and test genesis (gradchain localnet start --model test once)")
def test_recipe_bench_chains_rounds_from_the_merge():
    sys.path.insert(0, str(REPO / "bench"))
    import recipe

    out = subprocess.run([sys.executable, str(REPO / "bench" / "recipe.py"), "--model", "test", "--rounds", "2", "--trainers", "2", "--json"],
                         capture_output=True, text=True, timeout=300, cwd=REPO, check=True)  # fmt: skip
    report = json.loads(out.stdout)
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and len(rounds[0]["submissions"]) == 2
    params = recipe.chain_params("test", None)
    assert report["params"]["learning_rate_micro"] == params["learning_rate_micro"]
    for r in rounds:
        for s in r["submissions"]:
            assert s["verdict"] == recipe.held_out_verdict(r["heldout_base"], s["heldout_after"], params)
        assert r["accepted"] == sum(s["verdict"] == "accept" for s in r["submissions"])
    assert rounds[1]["heldout_base"] == rounds[0]["heldout_merged"]  # round 2 trains on round 1's merge
    assert rounds[1]["base_version"] == (1 if rounds[0]["accepted"] else 0)
    assert report["summary"]["heldout_end"] == rounds[1]["heldout_merged"]


def test_held_out_rule_matches_judge_boundary():
    """The rule in micro units, as recompute.judge: up to max_heldout_regression_ppm above the base is still accepted."""
    sys.path.insert(0, str(REPO / "bench"))
    import recipe

    params = {"max_heldout_regression_ppm": 50_000}
    assert recipe.held_out_verdict(2.0, 2.1, params) == "accept"
    assert recipe.held_out_verdict(2.0, 2.100001, params) == "no_gain"
    assert recipe.held_out_verdict(2.0, 1.5, params) == "accept"
