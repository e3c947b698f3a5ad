"""GradientChain: a Python ABCI 2.0 application that trains a language model."""
