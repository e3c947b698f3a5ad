"""Train the genesis model (version 0) from the KJV corpus, deterministically.

    python -m abci_app.ml.train_genesis --out genesis.safetensors [--corpus kjv.txt] [--preset test]

Same recipe, corpus, thread count and kernel path => same file sha256 (the
recipe, corpus digest and kernel path are stored in the checkpoint's "extra").
About 4.5 minutes on an idle 2-core machine with the default recipe (docs/ml.md).
A localnet gets it through abci_app.ml.genesis.genesis_assets, which trains once and caches the file.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click

from abci_app.ml import corpus, determinism, model, train
from abci_app.ml.family import TinyGPT
from abci_app.ml.generate import SamplingParams


@dataclass(frozen=True)
class Recipe:
    config: model.GPTConfig
    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float
    seed: str  # every random choice (init, batches) derives from this string


RECIPES = {
    "genesis": Recipe(
        model.GENESIS_CONFIG, steps=2000, batch_size=12, lr=3e-3, warmup=100, weight_decay=0.1, seed="gradchain-genesis-v1"
    ),
    "test": Recipe(model.TEST_CONFIG, steps=60, batch_size=8, lr=3e-3, warmup=10, weight_decay=0.1, seed="gradchain-test-v1"),
}
HELDOUT_WINDOWS = 256


def train_genesis(
    recipe: Recipe, corpus_path: Path, out: Path, threads: int, log_every: int = 100, echo=print, sample_tokens: int = 200
) -> str:
    """Train from scratch and write the checkpoint; return its sha256. Prints progress and a sample through `echo`."""
    kernel = determinism.pin(threads)
    data = corpus.load_dataset(corpus_path)
    fam = TinyGPT()
    seed = hashlib.sha256(recipe.seed.encode()).digest()
    loaded = fam.build(recipe.config, seed=int.from_bytes(seed[:8], "big"))
    echo(f"tiny-gpt {loaded.module.num_params():,} params, {data.train.numel():,} train tokens, "
         f"{recipe.steps} steps x {recipe.batch_size}x{recipe.config.block_size}, {threads} threads, {kernel}")  # fmt: skip
    start = time.monotonic()
    losses: list[float] = []

    def progress(i: int, loss: float, _opt: object) -> None:
        losses.append(loss)
        if (i + 1) % log_every == 0 or i + 1 == recipe.steps:
            recent = losses[-log_every:]
            echo(f"step {i + 1:5d}/{recipe.steps}  loss {sum(recent) / len(recent):.4f}  {time.monotonic() - start:6.1f}s")

    batches = train.iter_batches(seed, data.train, recipe.steps, recipe.batch_size, recipe.config.block_size)
    schedule = train.cosine_lr(recipe.lr, recipe.steps, recipe.warmup)
    result = fam.train_steps(loaded, batches, schedule, weight_decay=recipe.weight_decay, on_step=progress)
    heldout = fam.evaluate_loss(loaded, data.heldout, windows=HELDOUT_WINDOWS)
    tail = result.losses[-100:]
    extra = {
        "recipe": asdict(recipe),
        "corpus_sha256": data.sha256,
        "heldout_loss": heldout,
        "train_loss_last100": sum(tail) / len(tail),
        "kernel_path": kernel,
        "threads": threads,
    }
    sha = fam.save(loaded, out, parent="", extra=extra)
    echo(f"held-out loss {heldout:.4f} nats/byte; trained in {time.monotonic() - start:.1f}s")
    if sample_tokens:
        sample = "".join(fam.generate(loaded, "In the beginning", SamplingParams(sample_tokens, temperature=0.8, seed=1)))
        echo(f"sample: {sample!r}")
    echo(f"wrote {out} sha256 {sha}")
    return sha


@click.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write.")
@click.option("--corpus", "corpus_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Corpus text (default: build the KJV from Debian's bible-kjv-text).")  # fmt: skip
@click.option("--preset", type=click.Choice(sorted(RECIPES)), default="genesis", show_default=True)
@click.option("--steps", type=int, help="Override the preset's step count.")
@click.option("--threads", type=int, default=determinism.DEFAULT_THREADS, show_default=True)
@click.option("--log-every", type=int, default=100, show_default=True)
def main(out: Path, corpus_path: Path | None, preset: str, steps: int | None, threads: int, log_every: int) -> None:
    """Train the genesis tiny-gpt checkpoint."""
    recipe = RECIPES[preset] if steps is None else replace(RECIPES[preset], steps=steps)
    try:
        if corpus_path is None:
            with tempfile.TemporaryDirectory() as tmp:
                info = corpus.build(Path(tmp) / "kjv.txt")
                train_genesis(recipe, info.path, out, threads, log_every, click.echo)
        else:
            train_genesis(recipe, corpus_path, out, threads, log_every, click.echo)
    except corpus.CorpusError as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    main()
