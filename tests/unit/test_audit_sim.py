"""bench/audit_sim.py at a small size: the real training module, O(V + S) txs a round, and lazy verification does not pay."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import audit_sim  # noqa: E402

from abci_app import tx  # noqa: E402
from abci_app.modules import training  # noqa: E402

AUDIT_CPU_S = audit_sim.DEFAULT_AUDIT_CPU_S
CPU_PRICE = 10_000 / (4 * AUDIT_CPU_S)  # the bench's default: the localnet check fee pays 4 auditors' CPU


def test_txs_per_round_grow_with_validators_plus_submissions_not_their_product(tmp_path):
    r = audit_sim.run_scale(validators=8, submissions=40, committee_size=3, audit_cpu_s=AUDIT_CPU_S, workdir=tmp_path, seed=1)
    assert r.statuses == {"accepted": 40} and r.refused_reveals == []
    assert r.txs["submit_delta"] == 40 and r.txs["commit_verdicts"] == r.txs["reveal_verdicts"] == r.auditors <= 8
    assert r.audit_txs == 40 + 2 * r.auditors < r.old_txs == 8 * 40
    assert r.entries_per_auditor["mean"] * r.auditors == 40 * 3  # every submission audited by c members, one entry each
    assert r.training_growth > 0 and r.training_written >= r.training_growth
    # The merge: every validator seals its vote, then reveals it; once all revealed, the quorum's file is version 1.
    assert r.txs["commit_merge"] == r.txs["attest_merge"] == 8 and r.merge_txs == 16
    assert (r.version, r.merge_errors, r.failed.get("commit_merge", 0), r.failed.get("attest_merge", 0)) == (1, [], 0, 0)


def test_a_reveal_over_the_tx_size_limit_is_refused_and_its_auditor_ends_unrevealed(tmp_path):
    """One MsgRevealVerdicts per auditor per round carries all its entries: past MAX_TX_BYTES it cannot be sent at all."""
    fits = audit_sim.max_reveal_entries(training.Params().audit_steps)
    assert 100 < fits < 200  # ~480 bytes a proven verdict at s = 12, 64 KiB a tx
    r = audit_sim.run_scale(validators=2, submissions=fits + 5, committee_size=0, audit_cpu_s=AUDIT_CPU_S, workdir=tmp_path, seed=2)
    assert len(r.refused_reveals) == 2 and all(size > tx.MAX_TX_BYTES for _, size in r.refused_reveals)
    assert r.statuses == {"expired": fits + 5}


@pytest.fixture(scope="module")
def economics(tmp_path_factory):
    """Four validators of equal stake; in each network one plays a lazy strategy and three recompute. 6 rounds of 10
    submissions, one of which fakes 10% of its 64 steps."""
    workdir = tmp_path_factory.mktemp("econ")
    runs = {}
    for lazy in audit_sim.LAZY:
        runs[lazy] = audit_sim.run_economics([lazy, "honest", "honest", "honest"], rounds=6, trainers=10, cheat_share=0.1,
                                             fake_fraction=0.1, audit_cpu_s=AUDIT_CPU_S, workdir=workdir, seed=3, tag=lazy)
    return runs


def test_every_lazy_strategy_nets_less_than_an_honest_validator(economics):
    for lazy, run in economics.items():
        summary = audit_sim.summarize(run, CPU_PRICE)
        assert summary["honest"]["cpu_s"] > 0 and summary[lazy]["cpu_s"] == 0
        assert summary["honest"]["net"] > summary[lazy]["net"], (lazy, summary)
        assert summary[lazy]["earned"] == 0, lazy  # no lazy verdict carries proofs that hash to the commitments
        # ... and it would take a CPU price above what the localnet's fees pay for before laziness paid.
        assert audit_sim.break_even_cpu_price(summary["honest"], summary[lazy]) > CPU_PRICE


def test_lazy_strategies_pay_the_penalty_that_fits_what_they_did(economics):
    penalties = {lazy: audit_sim.summarize(run, CPU_PRICE)[lazy]["penalties"] for lazy, run in economics.items()}
    assert set(penalties["accept_guessed"]) >= {"bad_proof"}
    assert set(penalties["copy_others"]) >= {"unrevealed"} and set(penalties["non_revealer"]) >= {"unrevealed"}
    for run in economics.values():
        assert all(l.stake_lost == 0 for l, st in zip(run.ledgers, run.strategies) if st == "honest")  # honest misses are not charged


def test_audit_txs_per_round_are_submissions_plus_two_per_auditor_plus_judges(economics):
    for run in economics.values():
        for counts, auditors in zip(run.txs_per_round, run.auditors_per_round):
            judges = counts.get("judge_claims", 0)
            assert counts["submit_delta"] == 10 and counts["commit_verdicts"] == auditors == 4
            # the copier's refused copy is one more reveal tx; the non-revealer sends none
            reveals = counts["reveal_verdicts"]
            assert reveals in (auditors - 1, auditors)
            assert judges in (0, 4)  # a dispute: every validator judges once (the lazy copy the honest judgements)
            assert counts["commit_merge"] == counts["attest_merge"] == 4  # every round accepts something: all seal, then reveal
            assert counts["submit_delta"] + counts["commit_verdicts"] + reveals + judges <= 10 + 2 * auditors + 4

