"""Committed TPS and broadcast-to-commit latency: our app vs CometBFT's built-in kvstore.

Both runs use the same 4-validator loopback layout and config (abci_app.localnet),
fresh in a temp dir, and the same load shape: N pre-built txs split over S
sender threads, each sending its share in order with broadcast_tx_sync to its
own node (sender s -> node s % 4) and keeping at most W of them uncommitted
(CheckTx admits each sender's nonces in order). Ours are signed bank transfers; kvstore's are
`key=value` bytes padded to the same size. A watcher polls node0 for new
blocks; a tx counts as committed when node0 serves its block's results (that
is, after FinalizeBlock ran on node0).

    .venv/bin/python bench/tps.py [--n 500] [--senders 8] [--in-flight 16]

Prints both results, the ratio ours/kvstore and how fast the host was (ed25519 verify µs) just
before and after. Asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from abci_app import crypto, localnet  # noqa: E402
from abci_app import tx as txlib  # noqa: E402
from abci_app.keyring import Keyring  # noqa: E402
from abci_app.client import ChainClient, ChainError  # noqa: E402
from abci_app.rpc import RpcClient, RpcError  # noqa: E402

FEE = 1
POLL = 0.02  # watcher poll interval: the latency resolution


@dataclass
class Result:
    app: str
    n: int
    committed: int
    failed: int  # non-zero code in FinalizeBlock
    seconds: float
    blocks: int
    latencies: list[float]
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds used during the run, apps vs nodes
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)  # (seconds, height, txs, broadcasts answered)

    @property
    def tps(self) -> float:
        return self.committed / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100)[int(q) - 1] if len(self.latencies) > 1 else float("nan")


def build_txs(net: localnet.Network, n: int, senders: int, pad_to: int | None) -> list[list[bytes]]:
    """Per sender, its txs in send order: signed transfers (ours) or padded key=value (kvstore)."""
    plan: list[list[bytes]] = [[] for _ in range(senders)]
    if net.app == localnet.APP_KVSTORE:
        for k in range(n):
            s, j = k % senders, k // senders
            head = f"bench{s}-{j}=".encode()
            plan[s].append(head + b"v" * max(1, (pad_to or 0) - len(head)))
        return plan
    keyring = Keyring(net.keyring_home)
    keys = [keyring.get(f"dev{s}") for s in range(senders)]
    sink = crypto.PrivateKey.generate().address
    for k in range(n):
        s, nonce = k % senders, k // senders
        plan[s].append(txlib.build(keys[s], net.chain_id, nonce, FEE, txlib.MsgSend(recipient=sink, amount=1)))
    return plan


def run_load(net: localnet.Network, plan: list[list[bytes]], in_flight: int, timeout: float) -> Result:
    owner = {hashlib.sha256(raw).hexdigest().upper(): s for s, txs in enumerate(plan) for raw in txs}
    n = len(owner)
    sent_at: dict[str, float] = {}
    committed_at: dict[str, float] = {}
    done = [0] * len(plan)  # committed txs per sender
    failed = [0]
    cond = threading.Condition()
    errors: list[str] = []
    stop = threading.Event()
    start_height = RpcClient(net.rpc_url(0)).latest_height()
    heights = [start_height]
    answered = [0]  # broadcast_tx_sync calls answered so far (the txs in some mempool)
    timeline: list[tuple[float, int, int, int]] = []

    def watch() -> None:
        with RpcClient(net.rpc_url(0), timeout=10) as rpc:
            seen, stuck_since = start_height, time.monotonic()
            while len(committed_at) < n and not stop.is_set():
                try:
                    for h in range(seen + 1, rpc.latest_height() + 1):
                        now = time.monotonic()
                        txs = rpc.call("block", height=h)["block"]["data"]["txs"] or []
                        # /status counts a block once stored, before the app has executed it; its results
                        # exist only after FinalizeBlock: until then RpcError, retried below
                        codes = [int(r.get("code", 0)) for r in rpc.call("block_results", height=h)["txs_results"] or []]
                        with cond:
                            timeline.append((now, h, len(txs), answered[0]))
                            for raw, code in zip(txs, codes):
                                tx_hash = hashlib.sha256(base64.b64decode(raw)).hexdigest().upper()
                                if tx_hash in owner and tx_hash not in committed_at:
                                    committed_at[tx_hash] = now
                                    done[owner[tx_hash]] += 1
                                    failed[0] += code != 0
                            cond.notify_all()
                        seen, stuck_since = h, time.monotonic()
                    heights.append(seen)
                except RpcError as exc:
                    if time.monotonic() - stuck_since > timeout:
                        with cond:
                            errors.append(f"watcher: {exc}")
                            cond.notify_all()
                        return
                time.sleep(POLL)

    def send(s: int) -> None:
        with ChainClient(net.rpc_url(s % len(net.nodes)), timeout=30) as chain:
            for j, raw in enumerate(plan[s]):
                with cond:
                    if not cond.wait_for(lambda: j - done[s] < in_flight or errors, timeout=timeout):
                        errors.append(f"sender {s}: no commit within {timeout:.0f}s")
                    if errors:
                        return
                sent_at[hashlib.sha256(raw).hexdigest().upper()] = time.monotonic()
                try:
                    chain.broadcast(raw)
                    with cond:
                        answered[0] += 1
                except ChainError as exc:  # TxRejected (CheckTx said no) or no answer
                    with cond:
                        errors.append(f"sender {s}: tx {j}: {exc}")
                        cond.notify_all()
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in range(len(plan))]
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    deadline = time.monotonic() + timeout
    while len(committed_at) < n and not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    watcher.join(5)
    if errors:
        raise SystemExit(f"{net.app}: load failed: {errors[0]}")
    if len(committed_at) < n:
        raise SystemExit(f"{net.app}: only {len(committed_at)}/{n} txs committed within {timeout:.0f}s")
    first = min(sent_at.values())
    latencies = sorted(committed_at[h] - sent_at[h] for h in committed_at)
    return Result(net.app, n, len(committed_at), failed[0], max(committed_at.values()) - first, heights[-1] - start_height, latencies,
                  timeline=[(at - first, h, count, sent) for at, h, count, sent in timeline])


def cpu_seconds(net: localnet.Network) -> dict[str, float]:
    """utime+stime of every app and CometBFT process, summed per kind (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {"app": 0.0, "cometbft": 0.0}
    for i in range(len(net.nodes)):
        for kind in totals:
            pid = net.pid(i, kind)
            if pid:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                totals[kind] += (int(fields[11]) + int(fields[12])) / ticks
    return totals


def host_speed(rounds: int = 2000) -> float:
    """Microseconds per ed25519 verification (what CheckTx spends most on): on a shared host it shows how
    fast the machine was around the run, since a CPU-bound app loses more to a slow spell than kvstore."""
    key = crypto.PrivateKey(hashlib.sha256(b"probe").digest())
    message = b"\x01" * 150
    signature = key.sign(message)
    start = time.process_time()
    for _ in range(rounds):
        crypto.verify(key.pubkey, message, signature)
    return (time.process_time() - start) / rounds * 1e6


def bench(app: str, args: argparse.Namespace, pad_to: int | None) -> tuple[Result, int]:
    with tempfile.TemporaryDirectory(prefix=f"tps-{app}-") as tmp:
        net = localnet.create(Path(tmp) / "net", validators=args.validators, app=app, dev_accounts=args.senders, chain_id="gradchain-bench")
        try:
            net.start()
            net.wait_for_blocks(1, timeout=60)
            plan = build_txs(net, args.n, args.senders, pad_to)
            size = max(len(raw) for txs in plan for raw in txs)
            before = cpu_seconds(net)
            result = run_load(net, plan, args.in_flight, args.timeout)
            result.cpu = {k: v - before[k] for k, v in cpu_seconds(net).items()}
            return result, size
        finally:
            net.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="transactions per run (default 500)")
    parser.add_argument("--senders", type=int, default=8, help="concurrent senders (default 8)")
    parser.add_argument("--in-flight", type=int, default=16, help="uncommitted txs per sender (default 16)")
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds without progress before giving up")
    parser.add_argument("--timeline", action="store_true", help="print when node0 served each block, its txs, and how many broadcasts were answered by then")
    args = parser.parse_args()
    if not localnet.COMETBFT.exists():
        raise SystemExit(f"CometBFT binary missing at {localnet.COMETBFT}: run `make install-go`")

    print(f"{args.n} txs, {args.senders} senders, <= {args.in_flight} uncommitted each, {args.validators} validators on loopback", flush=True)
    speed_before = host_speed()
    ours, size = bench(localnet.APP_GRADCHAIN, args, None)
    base, _ = bench(localnet.APP_KVSTORE, args, size)
    speed_after = host_speed()
    print(f"{'app':<10} {'tx bytes':>8} {'committed':>9} {'failed':>6} {'blocks':>6} {'seconds':>8} {'TPS':>8} {'p50 ms':>8} {'p95 ms':>8} {'CPU s app':>9} {'CPU s comet':>11}")
    for r in (ours, base):
        print(
            f"{r.app:<10} {size:>8} {r.committed:>9} {r.failed:>6} {r.blocks:>6} {r.seconds:>8.2f} {r.tps:>8.1f}"
            f" {r.pct(50) * 1000:>8.0f} {r.pct(95) * 1000:>8.0f} {r.cpu['app']:>9.1f} {r.cpu['cometbft']:>11.1f}"
        )
    print(f"ratio ours/kvstore: TPS {ours.tps / base.tps:.2f}x, p50 latency {ours.pct(50) / base.pct(50):.2f}x, p95 latency {ours.pct(95) / base.pct(95):.2f}x")
    if args.timeline:
        for r in (ours, base):
            print(f"{r.app}: " + "; ".join(f"h{h} +{at:.2f}s {count} txs ({sent} in)" for at, h, count, sent in r.timeline))
    print(f"app CPU per committed transfer per validator: {ours.cpu['app'] / ours.committed / args.validators * 1000:.2f} ms"
          f" (load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"host speed: ed25519 verify {speed_before:.0f} us before, {speed_after:.0f} us after (lower is faster)")


if __name__ == "__main__":
    main()
