"""One GradientChain node on an operator's machine: `gradchain node ...` and `gradchain genesis ...`.

By job:
    home.py      the node's home: layout, settings (node.json), `node init`, config.toml edits
    ceremony.py  a new network's genesis: add-account, gentx, collect, validate
    join.py      `node join`: genesis, peers and state sync from a running node
    commands.py  each child's command line (app, CometBFT, worker), shared with the localnet
    run.py       `node start` (app, CometBFT, Kubo, pin sync, worker under abci_app.supervisor), `node status`, `node systemd`
    pins.py      `node pin-sync`: the node's Kubo fetches, verifies and pins every file the chain uses
    metrics.py   the app's own Prometheus endpoint
The localnet (abci_app.localnet) builds its nodes from the same pieces: the
config.toml editor, the child commands and abci_app.supervisor's spawn/Child
(its children outlive `gradchain localnet start`, so they are not under the
foreground `Supervisor` loop that `node start` runs).
"""
