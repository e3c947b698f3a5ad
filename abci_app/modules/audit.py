"""The audit arithmetic the chain and the workers share: which steps a validator checks, and what proves it did.

Consensus code (training) and off-chain code (trainer, validator, bench) call
these same functions, so a sample the chain recomputes from a revealed
signature is the sample the validator checked. Integers and sha256 only.

- A submission commits to its trajectory: the sha256 of every training state
  (trainable weights + optimiser moments) before step 0 and after each step,
  listed in a manifest file on IPFS whose sha256 is on chain, and, on chain,
  `grad_commitment(proof_i)` for every step: the hash of the hash of that
  step's clipped gradient (`proof_i`, which the trainer never publishes).
- After the submission window the chain fixes a beacon (the hash of the block
  that ends it). A committee member signs `audit_message(...)` with its
  operator key: ed25519 is deterministic, so neither the trainer nor the
  proposer who made the beacon can predict the signature, and the validator
  cannot choose it either. `audit_sample(signature, k, s)` is its s steps.
- Recomputing a sampled step yields its gradient, hence `proof_i`; revealing
  it shows the validator did the work (the chain checks it against the
  committed `grad_commitment`). A lazy validator has only the commitments,
  and sha256 does not run backwards.
"""

from __future__ import annotations

import hashlib

AUDIT_DOMAIN = b"gradchain/audit/v1"
GRAD_DOMAIN = b"gradchain/grad-commitment/v1"
SAMPLE_DOMAIN = b"gradchain/audit-sample/v1"
VERDICTS_DOMAIN = b"gradchain/verdicts/v1"
MERGE_DOMAIN = b"gradchain/merge-vote/v1"
DIGEST_BYTES = 32


def audit_message(round_id: int, index: int, trajectory_sha256: str, beacon: str) -> bytes:
    """What a committee member signs to draw its sample of one submission's steps."""
    return hashlib.sha256(
        AUDIT_DOMAIN + round_id.to_bytes(8, "big") + index.to_bytes(8, "big") + bytes.fromhex(trajectory_sha256) + bytes.fromhex(beacon)
    ).digest()


def audit_sample(signature: bytes, steps: int, count: int) -> list[int]:
    """`count` distinct step indexes in [0, steps) drawn from the signature, in draw order.

    A partial Fisher-Yates shuffle driven by sha256 in counter mode; modulo bias
    is below 2^-56 for any step count under 256.
    """
    count = min(count, steps)
    order = list(range(steps))
    key = hashlib.sha256(SAMPLE_DOMAIN + signature).digest()
    for i in range(count):
        draw = int.from_bytes(hashlib.sha256(key + i.to_bytes(4, "big")).digest()[:8], "big")
        j = i + draw % (steps - i)
        order[i], order[j] = order[j], order[i]
    return order[:count]


def grad_commitment(proof: bytes) -> bytes:
    """What a submission commits to for one step: a hash of the step's gradient proof."""
    return hashlib.sha256(GRAD_DOMAIN + proof).digest()


def escape_probability_ppm(steps: int, faked: int, sample: int, checkers: int) -> int:
    """Millionths of the chance that `checkers` independent samples of `sample` steps all miss `faked` bad steps:
    (C(k - m, s) / C(k, s)) ^ c, rounded down. Integer arithmetic (docs and benches; nothing in state)."""
    from math import comb

    sample = min(sample, steps)
    miss, total = comb(steps - faked, sample) ** checkers, comb(steps, sample) ** checkers
    return miss * 1_000_000 // total
