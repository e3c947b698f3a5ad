"""An N-validator network on loopback: one CometBFT node + one ABCI app (+ one Kubo node) per validator.

    net = localnet.create(root, validators=4, app_state=localnet.localnet_app_state())
    net.start(); net.wait_for_blocks(2); ...; net.stop()

By job:
    config.py    ports per node, and the config.toml each node runs with (template: localnet/config.toml)
    genesis.py   the genesis app_state (template: localnet/genesis.toml), funded keys, genesis validators,
                 the genesis model and corpus registered as version 0 and dataset 0
    network.py   create / load a network on disk; `Network` starts, stops, observes and grows it
Processes are supervised by abci_app.supervisor (shared with the Kubo node
manager, abci_app.ipfs.node); the genesis model itself is built and evaluated
by abci_app.ml.genesis. localnet/README.md at the repository root says what
`make localnet` writes where.

The app is pluggable: `app="gradchain"` runs `python -m abci_app` per node;
`app="kvstore"` uses CometBFT's built-in in-process kvstore (no app process),
which the benchmark uses as its baseline.
"""

from abci_app.localnet.config import (
    APP_GRADCHAIN,
    APP_KVSTORE,
    COMETBFT,
    CONFIG_TEMPLATE,
    CONSENSUS_TIMEOUTS,
    DEFAULT_BASE_PORT,
    FILES,
    PORT_STRIDE,
    REPO_ROOT,
    LocalnetError,
    Node,
    allocate_ipfs_ports,
    allocate_ports,
    node_config,
    set_toml_values,
    toml_value,
)
from abci_app.localnet.genesis import (
    DEV_BALANCE,
    FAUCET_BALANCE,
    FAUCET_KEY,
    LOCALNET_APP_STATE,
    MODEL_APP_STATE,
    SMOLLM2_TRAINING,
    TINY_TRAINING,
    Account,
    GenesisContent,
    Staker,
    evidence_params,
    genesis_app_state,
    genesis_assets,
    genesis_self_bond,
    localnet_app_state,
    register_genesis_content,
)
from abci_app.localnet.network import (
    DEFAULT_CHAIN_ID,
    NETWORK_FILE,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Network,
    NodeStatus,
    create,
    default_app_cmd,
    dev_keyring,
    load,
)
from abci_app.ml.genesis import DEFAULT_MODEL, MODEL_SMOLLM2, MODEL_TEST, MODEL_TINY, MODELS, genesis_metrics, tiny_genesis_path
from abci_app.ports import free_ports, port_in_use

__all__ = [
    "APP_GRADCHAIN", "APP_KVSTORE", "COMETBFT", "CONFIG_TEMPLATE", "CONSENSUS_TIMEOUTS", "DEFAULT_BASE_PORT", "FILES", "PORT_STRIDE",
    "REPO_ROOT", "LocalnetError", "Node", "allocate_ipfs_ports", "allocate_ports", "node_config", "set_toml_values", "toml_value",
    "DEFAULT_MODEL", "DEV_BALANCE", "FAUCET_BALANCE", "FAUCET_KEY", "LOCALNET_APP_STATE", "MODEL_APP_STATE", "MODEL_SMOLLM2",
    "MODEL_TEST", "MODEL_TINY", "MODELS", "SMOLLM2_TRAINING", "TINY_TRAINING", "Account", "GenesisContent", "Staker",
    "evidence_params", "genesis_app_state", "genesis_assets", "genesis_metrics", "genesis_self_bond", "localnet_app_state",
    "register_genesis_content", "tiny_genesis_path",
    "DEFAULT_CHAIN_ID", "NETWORK_FILE", "START_TIMEOUT", "STOP_TIMEOUT", "Network", "NodeStatus", "create", "default_app_cmd",
    "dev_keyring", "load",
    "free_ports", "port_in_use",
]
