"""Localnet config rewriting, genesis app_state and port allocation (no processes started)."""

from __future__ import annotations

import json
import socket
import tomllib
from pathlib import Path

import pytest

from abci_app import localnet as ln

# The shape of CometBFT v0.39's config.toml where it matters: keys repeated
# across tables (laddr, type, max_open_connections), comments, array tables.
CONFIG = """\
# a comment: proxy_app = "not this"
proxy_app = "tcp://127.0.0.1:26658"
moniker = "node0"
log_level = "info"

[rpc]
laddr = "tcp://127.0.0.1:26657"
pprof_laddr = "localhost:6060"
max_open_connections = 900
max_body_bytes = 1000000

[p2p]
laddr = "tcp://0.0.0.0:26656"
persistent_peers = "id@node0:26656"
addr_book_strict = true
allow_duplicate_ip = false

[p2p.libp2p.scaler]
min_workers = 4

[[p2p.libp2p.scaler.overrides]]
reactor = "MEMPOOL"

[mempool]
type = "flood"

[consensus]
timeout_propose = "3s"
timeout_propose_delta = "500ms"
timeout_prevote = "1s"
timeout_prevote_delta = "500ms"
timeout_precommit = "1s"
timeout_precommit_delta = "500ms"
timeout_commit = "1s"
create_empty_blocks = true
create_empty_blocks_interval = "0s"

[tx_index]
indexer = "null"

[instrumentation]
prometheus = true
max_open_connections = 3
"""


def nodes(count: int = 4, base: int = 26656) -> list[ln.Node]:
    ports = ln.allocate_ports(count, base)
    return [ln.Node(i, Path(f"/x/node{i}"), f"{i:040x}", *ports[i]) for i in range(count)]


def test_fixed_ports_follow_documented_offsets() -> None:
    assert ln.allocate_ports(4, 26656) == [(26656, 26657, 26658), (26666, 26667, 26668), (26676, 26677, 26678), (26686, 26687, 26688)]


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [p for triple in ln.allocate_ports(4, None) for p in triple]
    assert len(set(ports)) == 12
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


def test_base_port_out_of_range_is_one_clear_error() -> None:
    with pytest.raises(ln.LocalnetError, match="base port 65530"):
        ln.allocate_ports(4, 65530)


def test_node_config_rewrites_each_table_separately() -> None:
    net = nodes()
    text = ln.set_toml_values(CONFIG, ln.node_config(net[1], net, ln.APP_GRADCHAIN))
    config = tomllib.loads(text)
    assert config["proxy_app"] == "tcp://127.0.0.1:26668"
    assert config["moniker"] == "node1"
    assert config["rpc"]["laddr"] == "tcp://127.0.0.1:26667"
    assert config["rpc"]["pprof_laddr"] == ""
    assert config["p2p"]["laddr"] == "tcp://127.0.0.1:26666"  # the [p2p] laddr, not confused with [rpc]'s
    assert config["p2p"]["persistent_peers"].split(",") == [f"{0:040x}@127.0.0.1:26656", f"{2:040x}@127.0.0.1:26676", f"{3:040x}@127.0.0.1:26686"]
    assert config["p2p"]["allow_duplicate_ip"] is True
    assert config["p2p"]["addr_book_strict"] is False
    assert config["mempool"]["type"] == "flood"
    assert config["consensus"]["create_empty_blocks"] is False
    assert config["consensus"]["create_empty_blocks_interval"] == "0s"  # left at its default
    assert config["consensus"]["timeout_commit"] == ln.CONSENSUS_TIMEOUTS["timeout_commit"]
    assert config["tx_index"]["indexer"] == "kv"
    assert config["instrumentation"]["prometheus"] is False
    assert config["rpc"]["max_body_bytes"] == 1000000  # untouched
    assert config["rpc"]["max_open_connections"] == 900 and config["instrumentation"]["max_open_connections"] == 3
    assert "# a comment: proxy_app = \"not this\"" in text  # comments survive


def test_config_template_is_filled_for_every_node() -> None:
    """localnet/config.toml: every {placeholder} is filled, and each node gets its own ports."""
    net = nodes(2)
    for node in net:
        values = ln.node_config(node, net, ln.APP_GRADCHAIN, "1s")
        assert set(values) == set(ln.CONFIG_TEMPLATE)
        assert not [v for v in values.values() if isinstance(v, str) and ("{" in v or "}" in v)]
        assert values[("", "moniker")] == f"node{node.index}"
        assert values[("consensus", "create_empty_blocks_interval")] == "1s"
    assert ln.node_config(net[0], net, ln.APP_GRADCHAIN)[("p2p", "laddr")] != ln.node_config(net[1], net, ln.APP_GRADCHAIN)[("p2p", "laddr")]
    assert set(ln.CONSENSUS_TIMEOUTS) == {"timeout_propose", "timeout_propose_delta", "timeout_prevote", "timeout_prevote_delta",
                                          "timeout_precommit", "timeout_precommit_delta", "timeout_commit"}


def test_kvstore_runs_in_process() -> None:
    net = nodes(2)
    config = tomllib.loads(ln.set_toml_values(CONFIG, ln.node_config(net[0], net, ln.APP_KVSTORE)))
    assert config["proxy_app"] == "kvstore"


def test_single_node_has_no_peers() -> None:
    net = nodes(1)
    config = tomllib.loads(ln.set_toml_values(CONFIG, ln.node_config(net[0], net, ln.APP_GRADCHAIN)))
    assert config["p2p"]["persistent_peers"] == ""


def test_missing_option_fails_instead_of_being_ignored() -> None:
    with pytest.raises(ln.LocalnetError, match="p2p.seeds"):
        ln.set_toml_values(CONFIG, {("p2p", "seeds"): ""})
    with pytest.raises(ln.LocalnetError, match="rpc.prometheus"):
        ln.set_toml_values(CONFIG, {("rpc", "prometheus"): False})  # exists, but in another table


def test_genesis_app_state_funds_accounts_and_keeps_given_entries() -> None:
    given = {"bank": {"params": {"min_fee": 5}, "balances": [{"address": "gc1a", "amount": 7}]}}
    accounts = [(ln.Account("dev0", "gc1a"), 100), (ln.Account("dev1", "gc1b"), 100)]
    stakers = [ln.Staker("gc1v", "cHVia2V5", "node0", 1_000_000)]
    state = ln.genesis_app_state(given, accounts, stakers)
    assert state["bank"]["params"] == {"min_fee": 5}
    assert state["bank"]["balances"] == [{"address": "gc1a", "amount": 7}, {"address": "gc1b", "amount": 100}]
    assert state["staking"]["validators"] == [{"operator": "gc1v", "pubkey": "cHVia2V5", "moniker": "node0", "self_bond": 1_000_000}]
    assert given["bank"]["balances"] == [{"address": "gc1a", "amount": 7}], "the caller's dict is not modified"
    own = {"staking": {"validators": []}}
    assert ln.genesis_app_state(own, [], stakers)["staking"]["validators"] == []  # listed by the caller: kept


def test_genesis_self_bond_matches_power_unit() -> None:
    assert ln.genesis_self_bond({"staking": {"params": {"power_unit": 10, "min_self_bond": 25}}}) == (30, 3)
    bond, power = ln.genesis_self_bond(None)
    assert bond > 0 and power >= 1


def test_network_description_round_trips(tmp_path: Path) -> None:
    net = ln.Network(tmp_path, "c", ln.APP_GRADCHAIN, ln.default_app_cmd(), nodes(2), tmp_path, [ln.Account("dev0", "gc1a")])
    net.save()
    loaded = ln.load(tmp_path)
    assert loaded == net
    assert loaded.rpc_url(1) == "http://127.0.0.1:26667"


def test_load_without_network_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ln.LocalnetError, match="no localnet in"):
        ln.load(tmp_path)
    (tmp_path / ln.NETWORK_FILE).write_text("{")
    with pytest.raises(ln.LocalnetError, match="unreadable"):
        ln.load(tmp_path)


def test_pid_of_a_foreign_process_is_not_ours(tmp_path: Path) -> None:
    """A stale pid file whose pid now belongs to another program must not count as our node."""
    net = ln.Network(tmp_path, "c", ln.APP_GRADCHAIN, ln.default_app_cmd(), nodes(1), tmp_path, [])
    net.nodes[0].home = tmp_path
    net.nodes[0].pid_path("cometbft").write_text(f"{1}\n")  # init: alive, but not a CometBFT of this home
    assert net.pid(0, "cometbft") is None
    assert not net.any_running()


def test_model_presets_have_valid_training_params() -> None:
    """Each genesis model's app state passes the training module's own validation; SmolLM2's trains LoRA adapters."""
    from abci_app.modules import training

    for model in ln.MODELS:
        params = training.Params(**ln.localnet_app_state(model)["training"]["params"])
        params.validate()
        assert params.eval_prompts == 25
    smol = training.Params(**ln.localnet_app_state(ln.MODEL_SMOLLM2)["training"]["params"])
    tiny = training.Params(**ln.localnet_app_state(ln.MODEL_TINY)["training"]["params"])
    assert (smol.lora_rank, smol.lora_targets, smol.batch_size) == (8, "q_proj,v_proj", 4)
    assert smol.submission_blocks > tiny.submission_blocks  # minutes of CPU per submission, not seconds
    ln.localnet_app_state(ln.MODEL_SMOLLM2)["training"]["params"]["steps"] = 99  # a copy: the shared default is untouched
    assert ln.LOCALNET_APP_STATE["training"]["params"]["steps"] == 64
    # The sampled audit every localnet model runs (issue 12): k = 64 steps, s = 12 each, every validator audits.
    for model in ln.MODELS:
        params = training.Params(**ln.localnet_app_state(model)["training"]["params"])
        assert (params.steps, params.audit_steps, params.committee_size) == (64, 12, 0), model


def test_model_template_is_laid_over_the_app_state() -> None:
    """localnet/genesis.toml: a model's [models.NAME] values replace the shared ones key by key; the rest stays."""
    base = ln.LOCALNET_APP_STATE["training"]["params"]
    tiny = ln.localnet_app_state(ln.MODEL_TINY)
    assert tiny["training"]["params"] == base | ln.TINY_TRAINING
    assert tiny["staking"] == ln.LOCALNET_APP_STATE["staking"]
    assert ln.localnet_app_state(ln.MODEL_TEST) == ln.LOCALNET_APP_STATE
    assert list(ln.localnet_app_state(ln.MODEL_SMOLLM2)["training"]["params"]) == list(base) + ["lora_rank", "lora_alpha", "lora_targets"]


def test_unknown_genesis_model_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADCHAIN_CACHE", str(tmp_path))
    (tmp_path / "genesis").mkdir()
    (tmp_path / "genesis" / "kjv.txt").write_text("In the beginning\n")
    with pytest.raises(ln.LocalnetError, match="unknown genesis model 'gpt5': use one of smollm2, tiny, test"):
        ln.genesis_assets("gpt5", echo=lambda *_: None)


def test_genesis_version_records_licence_note_and_metrics(tmp_path: Path) -> None:
    """Version 0's registry entry comes from the checkpoint's own metadata plus the evaluation figures."""
    import torch

    from abci_app.ml import checkpoint

    model = tmp_path / "m.safetensors"
    meta = checkpoint.CheckpointMeta(family="smollm2-lora", config={"hf": {}}, tokenizer="t", kind="model", parent="",
                                     extra={"name": "SmolLM2-135M-Instruct", "licence": "Apache-2.0 (test)"})
    checkpoint.save(model, {"w": torch.zeros(2)}, meta)
    corpus = tmp_path / "c.txt"
    corpus.write_text("text\n")
    metrics = {"held_out_loss_micro": 3_323_800, "prompts_correct": 16, "prompts_total": 25}
    published = ln.register_genesis_content(tmp_path, None, model, corpus, metrics)
    (version,) = published.app_state["registry"]["versions"]
    assert version["licence"] == "Apache-2.0 (test)" and version["metrics"] == metrics
    assert version["note"] == "genesis model: SmolLM2-135M-Instruct (chat template embedded)"
    assert version["dataset_ids"] == [0] and len(published.files) == 2


def test_model_flag_on_an_existing_localnet_says_it_applies_at_creation(tmp_path: Path) -> None:
    """`make localnet MODEL=tiny` on a SmolLM2 localnet cannot switch models: it says so instead of silently ignoring it."""
    import torch

    from abci_app.cli.localnet import model_mismatch
    from abci_app.ml import checkpoint

    model = tmp_path / "model-v0.safetensors"
    meta = checkpoint.CheckpointMeta(family="smollm2-lora", config={"hf": {}}, tokenizer="t", kind="model", parent="")
    checkpoint.save(model, {"w": torch.zeros(2)}, meta)
    net = ln.Network(root=tmp_path, chain_id="c", app=ln.APP_GRADCHAIN, app_cmd=[], nodes=[], keyring_home=tmp_path,
                     accounts=[], genesis_files=[str(model)], workers=True)
    assert model_mismatch(net, ln.MODEL_SMOLLM2) is None
    note = model_mismatch(net, ln.MODEL_TINY)
    assert note is not None and "version 0 is a smollm2-lora model" in note and "make localnet-reset" in note
    assert model_mismatch(ln.Network(root=tmp_path, chain_id="c", app=ln.APP_GRADCHAIN, app_cmd=[], nodes=[], keyring_home=tmp_path,
                                     accounts=[], genesis_files=[], workers=False), ln.MODEL_TINY) is None  # no model: nothing to say


def test_localnet_genesis_leaves_registration_to_gov(tmp_path: Path) -> None:
    """A localnet genesis names no registry authority, so no dev key may register a version by tx: only a gov proposal can."""
    import torch

    from abci_app.ml import checkpoint
    from abci_app.modules import registry
    from tests.unit.conftest import Chain, fixed_key
    from tests.unit.test_registry import CONFIG, version_msg

    model = tmp_path / "m.safetensors"
    checkpoint.save(model, {"w": torch.zeros(2)}, checkpoint.CheckpointMeta(family="tiny-gpt", config=CONFIG, tokenizer="bytes",
                                                                             kind="model", parent=""))
    corpus = tmp_path / "c.txt"
    corpus.write_text("text\n")
    state = ln.register_genesis_content(tmp_path, {}, model, corpus).app_state
    assert "params" not in state["registry"]
    dev0 = fixed_key(1)
    chain = Chain(tmp_path / "app", {dev0.address: 10**9}, datasets=state["datasets"], registry=state["registry"])
    try:
        result = chain.block([chain.tx(dev0, version_msg(note="by dev0"))]).tx_results[0]
        assert (result.codespace, result.code) == ("registry", registry.Unauthorized.code) and "gov module account" in result.log
        assert json.loads(chain.query("/registry/latest").value)["id"] == 0
    finally:
        chain.app.close()
