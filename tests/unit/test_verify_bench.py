"""bench/verify.py --quick end to end: its processes run, its report has every section, and the figures that hold
by construction hold (no timing is asserted).

--quick: TEST_CONFIG from seed 0, the synthetic corpus, k = 8, s = 5, 4 validators. A cheater faking half its
steps (m = 4 > k - s) is caught by every sample; honest work is never fraud, on the trainer's kernel path
(hash) or on the other CPU kernel set (tolerance).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    keep = tmp_path_factory.mktemp("verify")
    # The run takes ~30 s on 2 idle cores; the timeout only stops a hang (3 processes importing torch on a busy machine).
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "verify.py"), "--quick", "--json", "--keep", str(keep)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def test_the_report_has_every_section(report):
    r, tables = report
    assert set(r) >= {"meta", "cost", "detection", "false_rejects", "network", "bytes"}
    assert (r["meta"]["k"], r["meta"]["s"]) == (8, 5)
    cost = r["cost"]["tiny"]
    assert cost["trainer_median_s"] > 0 and cost["audit_median_s"] > 0 and cost["ratio"] == pytest.approx(
        cost["validator_per_submission_s"] / cost["trainer_median_s"])
    assert cost["verdicts"] == ["accept"] or cost["verdicts"] == ["no_gain"]
    assert r["cost"]["smollm2"] is None  # not asked for
    assert set(r["network"]["tiny"]) >= {"4 validators, committee = all", "8 validators, committee = all"}
    assert r["network"]["tiny"]["8 validators, committee = all"] == pytest.approx(2 * r["network"]["tiny"]["4 validators, committee = all"])
    up = r["bytes"]["tiny"]["same_path"]["upload"]
    assert up["total"] == up["states"] + up["delta"] + up["manifest"] and up["states"] == 9 * r["bytes"]["tiny"]["same_path"]["state_file"]
    # A same-path auditor fetches the manifest, its s pre-states, state k and the delta; another path also s post-states.
    assert r["bytes"]["tiny"]["other_kernels"]["download_median"] > r["bytes"]["tiny"]["same_path"]["download_median"]
    for heading in ("1. CPU per submission", "2. detection", "3. honest false rejects", "4. network-wide", "5. bytes"):
        assert heading in tables


def test_detection_runs_the_cheat_with_four_validators(report):
    r, _ = report
    by_f = {d["f"]: d for d in r["detection"]}
    assert sorted(by_f) == [0.05, 0.1, 0.5]
    for d in by_f.values():
        assert d["validators"] == 4 and d["audits"] == 4 * d["submissions"] and d["submissions"] >= 10
        assert d["fraud_at_unfaked_step"] == 0  # every fraud verdict names a step the cheater really faked
    half = by_f[0.5]
    assert half["m"] > half["k"] - half["s"]  # any sample of s steps hits a faked one
    assert half["detected"] == half["submissions"] and half["rate"] == 1.0 and half["formula_detect_ppm"] == 1_000_000


def test_honest_work_is_never_fraud_on_either_kernel_set(report):
    r, _ = report
    fr = r["false_rejects"]
    assert fr["total"] == 0 and fr["submissions"] >= 4
    paths = {v["kernel_path"] for v in fr["by"].values()}
    assert len(paths) == 2  # the trainer's kernel set and another one
    same = [v for who, v in fr["by"].items() if "same kernel path" in who]
    assert same and all(v["max_error_ppm"] == 0 for v in same)  # compared by hash: bitwise equal
