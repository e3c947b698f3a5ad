"""Run the ABCI application: `python -m abci_app --home DIR --addr tcp://127.0.0.1:26658`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from abci_app import snapshots
from abci_app.abci.server import Server
from abci_app.app import Application


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m abci_app", description="GradientChain ABCI application")
    parser.add_argument("--home", required=True, help="directory for the app's state (state.sqlite)")
    parser.add_argument("--addr", default="tcp://127.0.0.1:26658", help="tcp://HOST:PORT or unix:///PATH (CometBFT's proxy_app)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--metrics", default=None, metavar="HOST:PORT", help="serve Prometheus metrics at http://HOST:PORT/metrics")
    parser.add_argument("--metrics-ipfs", default=None, metavar="URL", help="the local Kubo API, for its bandwidth in the metrics")
    snapshots.add_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    snapshot_settings, pruning = snapshots.settings_from_flags(parser, args)
    if args.metrics:
        from abci_app.node import metrics

        metrics.serve(args.metrics, args.metrics_ipfs)
    app = Application(args.home, snapshot_settings, pruning)
    try:
        asyncio.run(Server(app, args.addr).serve_forever())
    except Exception as exc:
        logging.getLogger("app").critical("halting: %s", exc)
        return 1
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
