"""The ML layer: small GPT, byte tokenizer, KJV corpus, checkpoints, deterministic training, generation.

Import from the submodules; `family` is the interface the CLI and workers use:

    from abci_app.ml.family import get_family, load_model
    from abci_app.ml.generate import SamplingParams

Importing this package does not import torch; its submodules do.
"""

import os
from pathlib import Path


def genesis_cache_dir() -> Path:
    """Where genesis assets are built once and kept for every later network: the KJV corpus, the
    converted SmolLM2 and trained tiny GPT checkpoints, their evaluations. $GRADCHAIN_CACHE/genesis."""
    return Path(os.environ.get("GRADCHAIN_CACHE", Path.home() / ".cache" / "gradchain")) / "genesis"
