"""datasets and registry: provenance rules, the authority gate, lineage."""

import hashlib
import json

import pytest

from abci_app import tx
from abci_app.modules import registry
from tests.unit.conftest import Chain, fixed_key

CID_A = "bafkrei" + "a" * 52
CID_B = "bafkrei" + "b" * 52
SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()
CONFIG = {"n_layer": 2, "n_embd": 32, "vocab_size": 256}


@pytest.fixture
def reg(tmp_path):
    authority, user = fixed_key(1), fixed_key(2)
    genesis_dataset = {"name": "kjv", "cid": CID_A, "sha256": SHA_A, "licence": "public-domain", "bytes": 4_000_000, "tokens": 4_000_000, "tokenizer": "bytes"}
    genesis_version = {"cid": CID_B, "sha256": SHA_B, "bytes": 123, "family": "tiny-gpt", "config": CONFIG, "dataset_ids": [0], "licence": "Apache-2.0"}
    chain = Chain(
        tmp_path / "app", {authority.address: 1_000, user.address: 1_000},
        datasets={"datasets": [genesis_dataset]},
        registry={"params": {"authority": authority.address}, "versions": [genesis_version]},
    )
    chain.authority, chain.user = authority, user
    yield chain
    chain.app.close()


def version_msg(**overrides):
    fields = {"parent": 0, "cid": "bafkrei" + "c" * 52, "sha256": hashlib.sha256(b"c").hexdigest(), "bytes": 10,
              "family": "tiny-gpt", "config_json": json.dumps(CONFIG), "dataset_ids": [0], "licence": "Apache-2.0"}
    return tx.MsgRegisterVersion(**(fields | overrides))


def codes(response):
    return [(r.codespace, r.code) for r in response.tx_results]


def test_genesis_registers_version_zero_and_the_corpus(reg):
    v0 = json.loads(reg.query("/registry/version", "0").value)
    assert (v0["id"], v0["parent"], v0["cid"], v0["dataset_ids"]) == (0, None, CID_B, [0])
    doc = {"config": CONFIG, "family": "tiny-gpt"}
    assert v0["config_hash"] == hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert json.loads(reg.query("/registry/latest").value)["id"] == 0
    (dataset,) = reg.pages("/datasets/list")
    assert (dataset["name"], dataset["licence"], dataset["creator"]) == ("kjv", "public-domain", "genesis")
    assert json.loads(reg.query("/datasets/dataset", "0").value)["sha256"] == SHA_A


def test_authority_registers_a_child_version(reg):
    r = reg.block([reg.tx(reg.authority, version_msg(note="fine-tuned"))])
    assert codes(r) == [("", 0)]
    history = reg.pages("/registry/history")
    assert [(v["id"], v["parent"]) for v in history] == [(0, None), (1, 0)]
    assert history[1]["creator"] == reg.authority.address and history[1]["height"] == reg.height


def test_anyone_else_is_refused_and_nothing_changes(reg):
    r = reg.block([reg.tx(reg.user, version_msg())])
    assert codes(r) == [("registry", 1)]
    assert "registry authority" in r.tx_results[0].log
    assert len(reg.pages("/registry/history")) == 1


@pytest.mark.parametrize(
    "overrides, code",
    [
        ({"cid": "Qm123"}, 2),
        ({"sha256": "XYZ"}, 2),
        ({"config_json": "[1, 2]"}, 2),
        ({"config_json": "{not json"}, 2),
        ({"family": ""}, 2),
        ({"bytes": 0}, 2),
        ({"parent": 7}, 3),
        ({"dataset_ids": [0, 5]}, 4),
        ({"sha256": SHA_B}, 5),
    ],
)
def test_bad_versions(reg, overrides, code):
    r = reg.block([reg.tx(reg.authority, version_msg(**overrides))])
    assert codes(r) == [("registry", code)]
    assert json.loads(reg.query("/registry/latest").value)["id"] == 0


def test_register_dataset_rules(reg):
    good = {"name": "more", "cid": "bafkrei" + "e" * 52, "sha256": hashlib.sha256(b"e").hexdigest(), "licence": "CC0", "bytes": 5, "tokens": 5, "tokenizer": "bytes"}
    r = reg.block([
        reg.tx(reg.user, tx.MsgRegisterDataset(**good)),
        reg.tx(reg.user, tx.MsgRegisterDataset(**good)),
        reg.tx(reg.user, tx.MsgRegisterDataset(**(good | {"sha256": "00", "name": "x"}))),
        reg.tx(reg.user, tx.MsgRegisterDataset(**(good | {"licence": "", "sha256": hashlib.sha256(b"f").hexdigest()}))),
        reg.tx(reg.user, tx.MsgRegisterDataset(**(good | {"cid": "nope", "sha256": hashlib.sha256(b"g").hexdigest()}))),
    ])
    assert codes(r) == [("", 0), ("datasets", 2), ("datasets", 1), ("datasets", 1), ("datasets", 1)]
    listed = reg.pages("/datasets/list")
    assert [(d["id"], d["name"], d["creator"]) for d in listed] == [(0, "kjv", "genesis"), (1, "more", reg.user.address)]


def test_config_hash_helper_matches_the_registry():
    text = registry.canonical_config('{"b": 1, "a": 2}')
    assert text == '{"a":2,"b":1}'
    assert registry.config_hash("tiny-gpt", text) == hashlib.sha256(b'{"config":{"a":2,"b":1},"family":"tiny-gpt"}').hexdigest()


def test_registry_config_hash_matches_the_model_family():
    from abci_app.ml.family import get_family
    from abci_app.ml.model import TEST_CONFIG

    family = get_family("tiny-gpt")
    config_json = json.dumps(family.config_to_dict(TEST_CONFIG))
    assert registry.config_hash("tiny-gpt", registry.canonical_config(config_json)) == family.config_hash(TEST_CONFIG)


def test_bad_genesis_version_is_refused(tmp_path):
    with pytest.raises(ValueError, match="genesis model version"):
        Chain(tmp_path / "app", {}, registry={"versions": [{"cid": "bad", "sha256": SHA_A, "bytes": 1, "family": "x"}]})
