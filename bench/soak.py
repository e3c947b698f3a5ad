"""Soak: the stateful fuzzer (tests/fuzz_harness.py) for a long run.

Random blocks of every message type, honest and byzantine, fed to two replicas
of the app through FinalizeBlock/Commit, with every invariant checked after
every block (supply, pools, CometBFT's validator set vs staking's, identical
app hashes, reopen from disk). The same seed replays the same blocks.

    .venv/bin/python bench/soak.py [--blocks 10000] [--seed 1] [--txs-per-block 6]

Prints blocks, txs, seconds, blocks/s and invariant checks passed; exits 1 on
the first failure, with the block that caused it and the command to replay it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzz_harness import Fuzzer, FuzzFailure  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--txs-per-block", type=int, default=6, help="mean txs per block (each block has 0 to twice this)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas fed the same blocks (their app hashes must agree)")
    parser.add_argument("--reopen-every", type=int, default=25, help="a replica restarts from disk about once in this many blocks")
    parser.add_argument("--keep-going", action="store_true", help="record each kind of failure and carry on (exploring), exit 1 at the end if any")
    parser.add_argument("--progress", type=int, default=1_000, help="print a line every N blocks (0: never)")
    args = parser.parse_args()

    logging.getLogger("app").setLevel(logging.ERROR)  # the app warns about every rejected proposal; the fuzzer makes many
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gradchain-soak-") as root:
        fuzzer = Fuzzer(Path(root), args.seed, txs_per_block=args.txs_per_block, replicas=args.replicas, reopen_every=args.reopen_every, keep_going=args.keep_going)
        failed: FuzzFailure | None = None
        try:
            for n in range(1, args.blocks + 1):
                fuzzer.step()
                if args.progress and n % args.progress == 0:
                    print(f"  {n} blocks, {fuzzer.stats.txs} txs, {time.monotonic() - start:.0f}s", flush=True)
        except FuzzFailure as exc:
            failed = exc
        finally:
            fuzzer.close()
    seconds = time.monotonic() - start
    s = fuzzer.stats
    print(f"seed {args.seed}: {s.blocks} blocks, {s.txs} txs ({s.txs_ok} succeeded), {seconds:.1f} s, {s.blocks / seconds:.1f} blocks/s, "
          f"{s.checks} invariant checks passed, {s.queries} queries, {s.reopens} replica reopens")
    print(f"genesis params changed for this seed: {fuzzer.params or 'none (defaults)'}")
    print("messages (ok/sent): " + ", ".join(f"{name} {s.messages_ok[name]}/{n}" for name, n in sorted(s.messages.items())))
    print("events: " + ", ".join(f"{name} {n}" for name, n in sorted(s.events.items())))
    for signature, text in fuzzer.findings.items():
        print(f"FINDING {signature}\n{text}\n", file=sys.stderr)
    if fuzzer.findings:
        print(f"{len(fuzzer.findings)} kinds of failure found", file=sys.stderr)
        return 1
    if failed is not None:
        print(f"FAILED\n{failed}", file=sys.stderr)
        return 1
    print(f"app hash after block {fuzzer.height}: {fuzzer.replicas[0].last_app_hash.hex()}")
    print("no failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
