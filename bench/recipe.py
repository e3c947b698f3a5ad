"""Consecutive honest training rounds in one process, exactly as the chain's workers compute them (issue 12).

    .venv/bin/python bench/recipe.py --model tiny|smollm2|test [--rounds 3] [--trainers 1] [--lr-micro N] [--threads 2] [--json]

Each round starts from the previous round's merged checkpoint. Round r's
seed is sha256("gradchain/bench/recipe/<model>/<r>"), its trainers fixed test
addresses; the training Params are the training module's defaults under the
localnet's values for the model (abci_app.localnet.localnet_app_state), so the
figures are what `make localnet MODEL=...` would do. Per round, as the workers:

1. every trainer runs `train_delta` from the round's base (SmolLM2: shaped
   with `family.for_training(base, params)`, adapters of the params' LoRA spec);
2. each submission is judged by the held-out rule of `recompute.judge`
   (held-out loss of `family.apply(base, delta)` at most
   `max_heldout_regression_ppm` above the base's, compared in micro units),
   without judge's recomputation, which would double the cost and always
   match in one process: accept or no_gain;
3. the accepted deltas are merged in submission order (`merged_checkpoint`),
   saved, and loaded back as the next round's base (`load_model`, then
   `for_training`), as a trainer pulls a registered version. No accepted
   delta: no new version, the next round trains the same base.

Prints per round the base's held-out loss, each submission's held-out loss and
verdict, the held-out loss after the merge and its relative change, and the
CPU seconds (time.process_time(), all threads); then a summary. Asserts
nothing about timing. With --json, one JSON document on stdout (progress on stderr).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MICRO = 1_000_000
MODELS = ("tiny", "smollm2", "test")


def round_seed(label: str, round_index: int) -> str:
    return hashlib.sha256(f"gradchain/bench/recipe/{label}/{round_index}".encode()).hexdigest()


def trainer_address(index: int) -> str:
    from abci_app import crypto

    return crypto.bech32_encode(crypto.ADDRESS_HRP, hashlib.sha256(f"gradchain/bench/recipe/trainer/{index}".encode()).digest()[:20])


def chain_params(model: str, lr_micro: int | None) -> dict:
    """The chain's training Params on a localnet of `model`: module defaults, then the localnet's values."""
    from abci_app import localnet
    from abci_app.modules.training import Params

    params = asdict(Params()) | localnet.localnet_app_state(model)["training"]["params"]
    if lr_micro is not None:
        params["learning_rate_micro"] = lr_micro
    Params(**params).validate()
    return params


def held_out_verdict(before: float, after: float, params: dict) -> str:
    """recompute.judge's held-out rule, to the micro unit: "accept" or "no_gain"."""
    from abci_app.workers.recompute import to_micro

    regressed = to_micro(after) > to_micro(before) * (MICRO + params["max_heldout_regression_ppm"]) // MICRO
    return "no_gain" if regressed else "accept"


def run_rounds(model: str, rounds: int, trainers: int, lr_micro: int | None, threads: int, echo) -> dict:
    from abci_app import localnet
    from abci_app.ml import determinism
    from abci_app.ml.family import load_model
    from abci_app.workers.recompute import Work, heldout_loss, merged_checkpoint, train_delta

    kernel = determinism.pin(threads)
    params = chain_params(model, lr_micro)
    model_path, corpus_path = localnet.genesis_assets(model, echo=echo)
    c0 = time.process_time()
    family, base = load_model(model_path)
    base = family.for_training(base, params)
    dataset = family.dataset(base, corpus_path)
    base_loss = heldout_loss(family, base, dataset)
    setup_cpu = time.process_time() - c0
    addresses = [trainer_address(t) for t in range(trainers)]
    report = {
        "model": model, "model_file": model_path.name, "family": family.name, "kernel_path": kernel, "threads": threads,
        "trainers": trainers, "params": {k: params[k] for k in ("steps", "batch_size", "seq_len", "learning_rate_micro",
        "max_heldout_regression_ppm", "lora_rank", "lora_alpha", "lora_targets")},
        "dataset_sha256": dataset.sha256, "setup_cpu_s": round(setup_cpu, 2), "heldout_start": base_loss, "rounds": [],
    }  # fmt: skip
    p = report["params"]
    echo(f"{model}: {family.name} {model_path.name} on {kernel}; steps {p['steps']}, batch {p['batch_size']} x {p['seq_len']}, "
         f"lr {p['learning_rate_micro']}e-6, tolerance +{p['max_heldout_regression_ppm'] / 1e4:g}% held-out; "
         f"{trainers} trainer(s) per round; setup {setup_cpu:.1f} CPU s; held-out {base_loss:.5f}")  # fmt: skip
    version = 0
    with tempfile.TemporaryDirectory(prefix="recipe-") as tmp:
        for r in range(rounds):
            c_round = time.process_time()
            seed = round_seed(model, r)
            subs, accepted = [], []
            c_train = c_eval = 0.0
            for t, trainer in enumerate(addresses):
                work = Work(r + 1, version, seed, trainer, dataset.sha256, params, kernel)
                c = time.process_time()
                delta, losses, _ = train_delta(family, base, dataset, work)
                c_train += time.process_time() - c
                c = time.process_time()
                after = heldout_loss(family, family.apply(base, delta), dataset)  # what judge measures
                c_eval += time.process_time() - c
                verdict = held_out_verdict(base_loss, after, params)
                subs.append({"trainer": t, "train_losses": losses, "heldout_after": after, "relative_change": after / base_loss - 1, "verdict": verdict})
                if verdict == "accept":
                    accepted.append(delta)
            c = time.process_time()
            if accepted:
                path = Path(tmp) / f"v{version + 1}.safetensors"
                merged_checkpoint(family, base, accepted, version, r + 1, path)
                family, base = load_model(path)  # what the next round's trainers pull
                base = family.for_training(base, params)
                path.unlink()
                version += 1
                merged_loss = heldout_loss(family, base, dataset)
            else:
                merged_loss = base_loss
            c_merge = time.process_time() - c
            cpu = time.process_time() - c_round
            row = {"round": r + 1, "base_version": version - bool(accepted), "heldout_base": base_loss, "heldout_merged": merged_loss,
                   "relative_change": merged_loss / base_loss - 1, "accepted": len(accepted), "submissions": subs,
                   "cpu_s": round(cpu, 2), "cpu_train_s": round(c_train, 2), "cpu_judge_eval_s": round(c_eval, 2),
                   "cpu_merge_reload_eval_s": round(c_merge, 2)}  # fmt: skip
            report["rounds"].append(row)
            verdicts = ", ".join(f"{s['heldout_after']:.5f} {s['verdict']}" for s in subs)
            echo(f"round {r + 1}: base v{row['base_version']} held-out {base_loss:.5f}; submissions: {verdicts}; merged "
                 f"{'v' + str(version) if accepted else '(none)'} {merged_loss:.5f} ({row['relative_change'] * 100:+.4f}%); "
                 f"{cpu:.1f} CPU s (train {c_train:.1f}, judge eval {c_eval:.1f}, merge+reload+eval {c_merge:.1f})")  # fmt: skip
            base_loss = merged_loss
    tol = params["max_heldout_regression_ppm"] / MICRO
    rows = report["rounds"]
    report["summary"] = {
        "rounds_up": sum(1 for x in rows if x["heldout_merged"] > x["heldout_base"]),
        "submissions_above_tolerance": sum(1 for x in rows for s in x["submissions"] if s["relative_change"] > tol),
        "submissions": sum(len(x["submissions"]) for x in rows),
        "heldout_end": base_loss, "total_change": base_loss / report["heldout_start"] - 1, "versions": version,
    }  # fmt: skip
    s = report["summary"]
    echo(f"summary: {len(rows)} rounds, {s['versions']} merged; held-out rose in {s['rounds_up']} round(s), "
         f"{s['submissions_above_tolerance']}/{s['submissions']} submission(s) above the +{tol * 100:g}% tolerance (no_gain); "
         f"held-out {report['heldout_start']:.5f} -> {base_loss:.5f} ({s['total_change'] * 100:+.4f}% total)")  # fmt: skip
    return report


@click.command()
@click.option("--model", type=click.Choice(MODELS), default="tiny", show_default=True, help="The localnet genesis model (cached by genesis_assets).")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1))
@click.option("--trainers", default=1, show_default=True, type=click.IntRange(1), help="Submissions per round, merged as the chain does.")
@click.option("--lr-micro", type=click.IntRange(1), default=None, help="Override the localnet's learning_rate_micro.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1), help="As the workers: 2.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout; progress on stderr.")
def main(model, rounds, trainers, lr_micro, threads, as_json):
    echo = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    report = run_rounds(model, rounds, trainers, lr_micro, threads, echo)
    if as_json:
        click.echo(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
