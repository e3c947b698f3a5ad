"""The ML layer: small GPT, byte tokenizer, KJV corpus, checkpoints, deterministic training, generation.

Import from the submodules; `family` is the interface the CLI and workers use:

    from abci_app.ml.family import get_family, load_model
    from abci_app.ml.generate import SamplingParams

Importing this package does not import torch; its submodules do.
"""
