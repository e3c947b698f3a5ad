"""The localnet's genesis app_state.

The template is localnet/genesis.toml at the repository root: `[app_state]`
for every localnet, `[models.NAME]` laid over it for the genesis model NAME.
`create()` then funds the dev keys, bonds a staking validator per CometBFT
validator, bounds the evidence age, and registers the genesis corpus and model
(built by abci_app.ml.genesis) as dataset 0 and version 0.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from abci_app.localnet.config import LocalnetError, read_template
from abci_app.ml import genesis as ml_genesis
from abci_app.ml.genesis import DEFAULT_MODEL, MODEL_SMOLLM2, MODEL_TINY

DEV_BALANCE = 1_000_000_000_000  # ugrad per dev account
FAUCET_BALANCE = 1_000_000_000_000_000
FAUCET_KEY = "faucet"

_TEMPLATE = read_template("genesis.toml")
LOCALNET_APP_STATE: dict = _TEMPLATE["app_state"]  # `make localnet`'s chain parameters, before the model's
MODEL_APP_STATE: dict[str, dict] = _TEMPLATE["models"]
SMOLLM2_TRAINING: dict = MODEL_APP_STATE[MODEL_SMOLLM2]["training"]["params"]
TINY_TRAINING: dict = MODEL_APP_STATE[MODEL_TINY]["training"]["params"]


@dataclass
class Account:
    name: str
    address: str


@dataclass(frozen=True)
class Staker:
    """A genesis validator as our staking module sees it: CometBFT's key, bonded by an operator account."""

    operator: str
    pubkey: str  # base64 ed25519, as in CometBFT's genesis.json
    moniker: str
    self_bond: int


def _copy(state: dict | None) -> dict:
    return json.loads(json.dumps(state or {}))  # deep copy, JSON types only


def _overlay(base: dict, over: dict) -> None:
    """Set every leaf of `over` in `base`, keeping what `over` does not mention."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _overlay(base[key], value)
        else:
            base[key] = value


def localnet_app_state(model: str = DEFAULT_MODEL) -> dict:
    """LOCALNET_APP_STATE with the training params that suit `model` (a fresh copy)."""
    state = _copy(LOCALNET_APP_STATE)
    _overlay(state, _copy(MODEL_APP_STATE.get(model)))
    return state


def genesis_app_state(app_state: dict | None, accounts: list[tuple[Account, int]], stakers: list[Staker] = ()) -> dict:
    """`app_state` plus a bank balance for every account it does not fund yet, and
    a staking entry per `stakers` unless it lists staking validators itself."""
    state = _copy(app_state)
    balances = state.setdefault("bank", {}).setdefault("balances", [])
    funded = {b["address"] for b in balances}
    balances.extend({"address": a.address, "amount": amount} for a, amount in accounts if a.address not in funded)
    if stakers and "validators" not in state.get("staking", {}):
        state.setdefault("staking", {})["validators"] = [
            {"operator": s.operator, "pubkey": s.pubkey, "moniker": s.moniker, "self_bond": s.self_bond} for s in stakers
        ]
    return state


def evidence_params(app_state: dict | None, evidence: dict | None) -> dict:
    """consensus_params.evidence under which CometBFT only hands over evidence young enough that the stake
    that left after the infraction is still unbonding, so the slash reaches it (app.init_chain refuses more).

    CometBFT accepts evidence unless it is older than BOTH max_age_num_blocks and
    max_age_duration: the duration is 1 ns so that the block count alone decides.
    """
    from abci_app.modules import staking  # only the gradchain app has staking

    params = (app_state or {}).get("staking", {}).get("params", {})
    unbonding = int(params.get("unbonding_blocks", staking.Params().unbonding_blocks))
    max_age = max(unbonding - staking.EVIDENCE_AGE_MARGIN, 1)
    return dict(evidence or {}) | {"max_age_num_blocks": str(max_age), "max_age_duration": "1"}


def genesis_self_bond(app_state: dict | None) -> tuple[int, int]:
    """(self_bond, voting power) for each genesis validator: the smallest bond staking accepts,
    in whole power units, so CometBFT's genesis power and the app's computed power agree."""
    from abci_app.modules import staking  # only the gradchain app has staking

    defaults = staking.Params()
    params = (app_state or {}).get("staking", {}).get("params", {})
    unit = int(params.get("power_unit", defaults.power_unit))
    minimum = max(int(params.get("min_self_bond", defaults.min_self_bond)), unit)
    power = -(-minimum // unit)
    return power * unit, power


def genesis_assets(model: str = DEFAULT_MODEL, echo=print) -> tuple[Path, Path]:
    """abci_app.ml.genesis.genesis_assets, failing with a LocalnetError as every localnet step does."""
    try:
        return ml_genesis.genesis_assets(model, echo)
    except ml_genesis.GenesisModelError as exc:
        raise LocalnetError(str(exc)) from None


@dataclass(frozen=True)
class GenesisContent:
    app_state: dict | None
    files: list[Path]  # copied under root/genesis, added to IPFS at start


def register_genesis_content(root: Path, app_state: dict | None, model_path: Path | None, corpus_path: Path | None,
                             metrics: dict[str, int] | None = None) -> GenesisContent:
    """Register the corpus as dataset 0 and the model as version 0 in `app_state`, their files copied to root/genesis."""
    if model_path is None and corpus_path is None:
        return GenesisContent(app_state, [])
    from abci_app.ipfs.cid import cid_of_file
    from abci_app.ipfs.download import file_sha256

    state = _copy(app_state)
    folder = root / "genesis"
    folder.mkdir(exist_ok=True)
    files = []
    dataset_ids: list[int] = []
    if corpus_path is not None:
        target = folder / "corpus.txt"
        shutil.copyfile(corpus_path, target)
        size = target.stat().st_size
        entry = {"name": "kjv-bible", "cid": cid_of_file(target), "sha256": file_sha256(target), "bytes": size,
                 "tokens": size, "tokenizer": "bytes", "licence": "public-domain (KJV 1611; Debian bible-kjv-text)"}
        state.setdefault("datasets", {}).setdefault("datasets", []).insert(0, entry)
        dataset_ids = [0]
        files.append(target)
    if model_path is not None:
        from abci_app.ml import checkpoint

        target = folder / "model-v0.safetensors"
        shutil.copyfile(model_path, target)
        meta = checkpoint.read_meta(target)
        name = meta.extra.get("name", meta.family)
        template = " (chat template embedded)" if meta.family == "smollm2-lora" else ""
        version = {"cid": cid_of_file(target), "sha256": file_sha256(target), "bytes": target.stat().st_size, "family": meta.family,
                   "config_json": checkpoint.canonical_json(meta.config), "dataset_ids": dataset_ids,
                   "licence": meta.extra.get("licence", "Apache-2.0"), "note": f"genesis model: {name}{template}",
                   "metrics": dict(metrics or {})}
        registry = state.setdefault("registry", {})
        registry.setdefault("versions", []).insert(0, version)  # no authority: the gov account's default; manual versions go by proposal
        files.append(target)
    return GenesisContent(state, files)
