"""Pin everything that changes the bits of a CPU training step.

Measured (shared/NOTES.md, docs/ml.md): two processes give bitwise-identical
deltas when thread count, kernel path (torch build + CPU capability) and dtype
match. `pin()` fixes the first, `kernel_path()` names the second so a
submission can publish it and a validator can tell "compare by hash" from
"compare by tolerance".
"""

from __future__ import annotations

import os

import torch

DEFAULT_THREADS = 2
_interop_pinned = False


class DeterminismError(RuntimeError):
    """The process cannot run on the kernel path it was asked for."""


def pin(threads: int = DEFAULT_THREADS, capability: str | None = None) -> str:
    """Fix threads and algorithms for this process; return its kernel path.

    `capability` (e.g. "AVX2") must already be in force: torch reads
    ATEN_CPU_CAPABILITY once at import, so it has to be set in the environment
    that starts the process. We only check it here.
    """
    global _interop_pinned
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # inherited by child processes too
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    if not _interop_pinned:
        try:
            torch.set_num_interop_threads(1)  # allowed once per process, before any inter-op work
        except RuntimeError:
            pass  # already set (or work already ran): keep whatever it is
        _interop_pinned = True
    torch.use_deterministic_algorithms(True)
    if capability is not None and capability.upper() != cpu_capability():
        raise DeterminismError(
            f"this process runs {cpu_capability()} kernels, not {capability.upper()}: "
            f"start it with ATEN_CPU_CAPABILITY={capability.lower()}"
        )
    return kernel_path()


def cpu_capability() -> str:
    """The SIMD kernel set torch dispatches to: "AVX512", "AVX2", "DEFAULT", ..."""
    return torch.backends.cpu.get_cpu_capability()


def kernel_path() -> str:
    """torch build + CPU kernel set + intra-op threads, e.g. "torch-2.9.1+cpu/AVX2/t2".

    Two processes on equal paths compute bitwise-equal deltas, so a validator
    on the submission's path compares by hash; on another path, by tolerance.
    The thread count is part of it: the tiny GPT's 1- and 2-thread deltas differ
    in the last bits (docs/ml.md).
    """
    return f"torch-{torch.__version__}/{cpu_capability()}/t{torch.get_num_threads()}"


def fingerprint() -> dict[str, str | int]:
    """What a submission records about how it computed its delta."""
    return {"kernel_path": kernel_path(), "threads": torch.get_num_threads(), "dtype": "float32"}
