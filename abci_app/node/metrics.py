"""The app's own Prometheus metrics, served on their own port (`python -m abci_app --metrics HOST:PORT`).

    gradchain_height                          last finalized height
    gradchain_blocks_total                    blocks finalized by this process
    gradchain_blocks_executed_ahead_total     of those, blocks whose txs ProcessProposal (or our PrepareProposal) had executed
    gradchain_txs_total{code,codespace}       txs by result (code 0: ok)
    gradchain_rounds_total                    training rounds opened
    gradchain_submissions_total{verdict}      submissions decided: accepted, rejected, not_merged, expired
    gradchain_verdicts_total{verdict}         revealed auditor verdicts: accept, no_gain, fraud
    gradchain_verification_seconds            time a worker spent verifying one submission (histogram)
    gradchain_ipfs_bytes_total{direction}     bytes the local Kubo node received/sent (read from its API at scrape time)

Everything here is observation only: it reads what FinalizeBlock already
decided and never feeds back into state, so wall-clock time and failures here
cannot affect consensus; `record_block` swallows its own errors.
"""

from __future__ import annotations

import collections
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily

log = logging.getLogger("metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_start_time_seconds and friends: restarts show in Prometheus
HEIGHT = Gauge("gradchain_height", "Last height finalized by this app.", registry=REGISTRY)
BLOCKS = Counter("gradchain_blocks", "Blocks finalized by this app process.", registry=REGISTRY)
BLOCKS_AHEAD = Counter("gradchain_blocks_executed_ahead", "Blocks whose txs ProcessProposal (or our PrepareProposal) had executed before FinalizeBlock.",
                       registry=REGISTRY)
TXS = Counter("gradchain_txs", "Transactions executed, by result code.", ["code", "codespace"], registry=REGISTRY)
ROUNDS = Counter("gradchain_rounds", "Training rounds opened.", registry=REGISTRY)
SUBMISSIONS = Counter("gradchain_submissions", "Training submissions decided, by verdict.", ["verdict"], registry=REGISTRY)
VERDICTS = Counter("gradchain_verdicts", "Auditor verdicts revealed, by verdict.", ["verdict"], registry=REGISTRY)
VERIFICATION_SECONDS = Histogram("gradchain_verification_seconds", "Seconds a worker spent verifying one submission.",
                                 buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600), registry=REGISTRY)

# event type -> the submission verdict it records
SUBMISSION_EVENTS = {"delta_accepted": "accepted", "delta_rejected": "rejected", "delta_not_merged": "not_merged", "submission_expired": "expired"}


def _attribute(event, key: str) -> str:
    return next((a.value for a in event.attributes if a.key == key), "")


def _count_event(event) -> None:
    if event.type == "round_opened":
        ROUNDS.inc()
    elif event.type in SUBMISSION_EVENTS:
        SUBMISSIONS.labels(SUBMISSION_EVENTS[event.type]).inc()
    elif event.type == "verdict_revealed":
        VERDICTS.labels(_attribute(event, "verdict") or "unknown").inc()


def record_block(height: int, response, executed_ahead: bool = False) -> None:
    """Count a ResponseFinalizeBlock: height, tx results, training events, whether it was executed ahead. Never raises."""
    try:
        HEIGHT.set(height)
        BLOCKS.inc()
        if executed_ahead:
            BLOCKS_AHEAD.inc()
        by_result: collections.Counter = collections.Counter()
        for result in response.tx_results:
            by_result[result.code, result.codespace] += 1
            for event in result.events:
                _count_event(event)
        # One labels() per distinct result, not per tx: it was 3% of a loaded node's CPU (py-spy).
        for (code, codespace), count in by_result.items():
            TXS.labels(str(code), codespace).inc(count)
        for event in response.events:
            _count_event(event)
    except Exception:  # metrics must never take the app down
        log.exception("metrics: could not record block %d", height)


def observe_verification(seconds: float) -> None:
    """A worker's hook: one submission verified in `seconds`."""
    VERIFICATION_SECONDS.observe(seconds)


class KuboBandwidth:
    """gradchain_ipfs_bytes_total from the local Kubo node's `stats/bw`, read when Prometheus scrapes."""

    def __init__(self, url: str) -> None:
        self.url = url

    def collect(self):
        family = CounterMetricFamily("gradchain_ipfs_bytes", "Bytes the local Kubo node received (in) and sent (out).", labels=["direction"])
        try:
            import httpx

            stats = httpx.post(f"{self.url}/api/v0/stats/bw", timeout=2.0).json()
            family.add_metric(["in"], float(stats.get("TotalIn", 0)))
            family.add_metric(["out"], float(stats.get("TotalOut", 0)))
        except Exception:  # Kubo down or absent: the metric is missing for this scrape, nothing else
            pass
        yield family


def serve(address: str, ipfs_url: str | None = None):
    """Serve REGISTRY at http://ADDRESS/metrics from a daemon thread; `ipfs_url` adds Kubo's bandwidth.
    Returns the HTTP server (its shutdown() stops it)."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    if ipfs_url:
        REGISTRY.register(KuboBandwidth(ipfs_url))
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=REGISTRY)
    return server
