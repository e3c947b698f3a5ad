"""Consensus safety of the runtime and the app (issue 11): queries and CheckTx never
raise, one admission rule for mempool and proposals, contiguous nonces, bounded and
priced state, canonical tx bytes, and a message that raises fails alone.

Each test drives the Application in-process with the `Chain` harness and plays the
cheapest attack: an RPC user, a funded account, a byzantine proposer.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

from abci_app import client, crypto, runtime, tx
from abci_app.modules import bank, registry
from abci_app.pb.tendermint.abci import types_pb2 as abci
from tests.unit.conftest import CHAIN_ID, Chain, fixed_key

ROOT = Path(__file__).resolve().parents[2]
CID_A, CID_B = "bafkrei" + "a" * 52, "bafkrei" + "b" * 52
SHA_A, SHA_B = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
CONFIG = {"n_layer": 2, "n_embd": 32, "vocab_size": 256}
ACCEPT, REJECT = abci.ResponseProcessProposal.ACCEPT, abci.ResponseProcessProposal.REJECT


@pytest.fixture
def reg(tmp_path):
    """A chain with a registry authority, a genesis dataset and version 0."""
    chain = _registry_chain(tmp_path / "app")
    yield chain
    chain.app.close()


def _registry_chain(home) -> Chain:
    authority, user = fixed_key(1), fixed_key(2)
    dataset = {"name": "kjv", "cid": CID_A, "sha256": SHA_A, "licence": "public-domain", "bytes": 4_000, "tokens": 4_000, "tokenizer": "bytes"}
    version = {"cid": CID_B, "sha256": SHA_B, "bytes": 123, "family": "tiny-gpt", "config": CONFIG, "dataset_ids": [0], "licence": "Apache-2.0"}
    chain = Chain(
        home, {authority.address: 10**9, user.address: 10**9},
        datasets={"datasets": [dataset]}, registry={"params": {"authority": authority.address}, "versions": [version]},
    )
    chain.authority, chain.user = authority, user
    return chain


def version_msg(n: int, **overrides) -> tx.MsgRegisterVersion:
    fields = {"parent": 0, "cid": "bafkrei" + "c" * 52, "sha256": hashlib.sha256(b"v%d" % n).hexdigest(), "bytes": 10,
              "family": "tiny-gpt", "config_json": json.dumps(CONFIG), "dataset_ids": [0], "licence": "Apache-2.0"}
    return tx.MsgRegisterVersion(**(fields | overrides))


def dataset_msg(n: int, **overrides) -> tx.MsgRegisterDataset:
    fields = {"name": f"set{n}", "cid": CID_A, "sha256": hashlib.sha256(b"d%d" % n).hexdigest(), "licence": "CC0",
              "bytes": 5, "tokens": 5, "tokenizer": "bytes"}
    return tx.MsgRegisterDataset(**(fields | overrides))


def codes(response) -> list[tuple[str, int]]:
    return [(r.codespace, r.code) for r in response.tx_results]


def send(key, recipient, nonce, amount=1, fee=1) -> bytes:
    return tx.build(key, CHAIN_ID, nonce, fee, tx.MsgSend(recipient=recipient, amount=amount))


# --- defect 4: Query never raises ----------------------------------------------------


@pytest.mark.parametrize("path, data", [
    ("/registry/version", b"-1"),
    ("/datasets/dataset", b"99999999999999999999999"),
    ("/registry/version", b"18446744073709551616"),  # 2^64
    ("/datasets/dataset", b" 1"),
    ("/registry/version", b"\xff\xfe"),
    ("/bank/balance", b"\xff" * 100),
    ("/bank/balance", b"gc1" + b"q" * 10_000),
    ("/auth/nonce", b"-1"),
    ("/" * 5_000, b""),
    ("/bank/balance", b"x" * (10**6)),
])
def test_query_bad_arguments_are_bad_query_never_an_exception(reg, path, data):
    """issue 11 defect 4: a negative or over-64-bit id, non-UTF-8 or huge data gets a clear code, never a crash."""
    response = reg.app.query(abci.RequestQuery(path=path, data=data))
    assert response.code != 0 and response.log
    assert (response.codespace, response.code) in {("runtime", runtime.BadQuery.code), ("runtime", runtime.UnknownQuery.code)}


@pytest.mark.parametrize("height", [-1, -(2**62), 10**6])
def test_query_height_out_of_range_is_bad_query(reg, height):
    """issue 11 defect 4: heights below 0 or beyond the latest are refused with a clear code."""
    response = reg.app.query(abci.RequestQuery(path="/registry/version", data=b"0", height=height))
    assert (response.codespace, response.code) == ("runtime", runtime.BadQuery.code) and "latest is" in response.log


def test_every_query_path_survives_junk(reg):
    """issue 11 defect 4: every registered path, with empty, negative, huge and binary data, answers."""
    paths = ["/app/params", "/app/simulate"] + [
        f"/{name}/{q}" for name, module in runtime.MODULES.items()
        for q in [*getattr(module, "QUERIES", {}), *getattr(module, "VIEWS", {})]
    ]
    junk = [b"", b"-1", b"0", b"99999999999999999999999", b"\xff\x00\x80", b"[" * 5_000, b"9" * 5_000]
    for path in paths:
        for data in junk:
            for height in (0, 1, reg.height):
                reg.app.query(abci.RequestQuery(path=path, data=data, height=height, prove=True))  # must not raise


def test_query_and_check_tx_catch_every_exception(reg, monkeypatch):
    """issue 11 defect 4: a bug behind Query or CheckTx is an internal code and a log line, never a crash."""
    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(runtime, "resolve_query", broken)
    response = reg.query("/bank/supply")
    assert (response.codespace, response.code) == ("runtime", runtime.Internal.code) and "internal error" in response.log
    monkeypatch.setattr(runtime, "admit", broken)
    checked = reg.check(send(reg.user, reg.authority.address, 0))
    assert (checked.codespace, checked.code) == ("runtime", runtime.Internal.code)


# --- defect 7: only contiguous nonces in the mempool ----------------------------------


def test_check_tx_refuses_a_nonce_gap(chain, keys):
    """issue 11 defect 7: a nonce ahead of the mempool view is refused (it would sit unexecuted and block others)."""
    a, b = keys[0], keys[1]
    gap = chain.check(send(a, b.address, 1))
    assert (gap.codespace, gap.code) == ("runtime", 5) and "expects 0" in gap.log
    assert chain.check(send(a, b.address, 0)).code == 0
    assert chain.check(send(a, b.address, 1)).code == 0  # contiguous once 0 is admitted
    assert chain.check(send(a, b.address, 3)).code == 5


def test_recheck_evicts_txs_left_behind_a_gap(chain, keys):
    """issue 11 defect 7: after a commit, a tx that no longer runs is evicted, and so is every later nonce of its sender."""
    b, c = keys[1], keys[2]  # b has 500
    first, second = send(b, c.address, 0, amount=300), send(b, c.address, 1, amount=40)
    assert chain.check(first).code == 0 and chain.check(second).code == 0
    chain.block([send(b, c.address, 0, amount=450)])  # another node's tx with nonce 0 was decided
    assert chain.check(first, recheck=True).code == 5
    assert chain.check(second, recheck=True).code == 0  # nonce 1 is next now, and 49 pays for it
    assert chain.check(send(b, c.address, 3), recheck=True).code == 5


def test_nonce_window_is_gone():
    """issue 11 defect 7: no look-ahead window stays in consensus code."""
    from abci_app.modules import auth

    assert not hasattr(auth, "NONCE_WINDOW")


# --- defect 11: one admission rule for proposals -----------------------------------------


def test_process_proposal_rejects_txs_that_fail_ante(chain, keys):
    """issue 11 defect 11: a byzantine proposer cannot fill a block with replays or unfunded signers, which pay nothing."""
    a, b, broke = keys[0], keys[1], keys[3]
    first = send(a, b.address, 0)
    chain.block([first])
    proposals = {
        "replay": [first],
        "unfunded signer": [send(broke, b.address, 0)],
        "nonce gap": [send(a, b.address, 5)],
        "fee below minimum": [send(a, b.address, 1, fee=0)],
        "second replays the first": [send(a, b.address, 1), send(a, b.address, 1)],
        "spends the fee twice": [send(b, a.address, 0, amount=500), send(b, a.address, 1, amount=1)],
    }
    for name, txs in proposals.items():
        status = chain.app.process_proposal(abci.RequestProcessProposal(txs=txs, height=chain.height + 1)).status
        assert status == REJECT, name
    good = [send(a, b.address, 1), send(a, b.address, 2, amount=10**6), send(b, a.address, 0)]  # a failing message still pays
    assert chain.app.process_proposal(abci.RequestProcessProposal(txs=good, height=chain.height + 1)).status == ACCEPT


def test_prepare_proposal_keeps_only_what_process_proposal_accepts(chain, keys):
    """issue 11 defect 11: PrepareProposal runs the same admission, in order: its proposal is always accepted."""
    a, b, broke = keys[0], keys[1], keys[3]
    txs = [send(a, b.address, 0), send(broke, b.address, 0), send(a, b.address, 0), send(a, b.address, 1), b"\x01\x02"]
    prepared = list(chain.app.prepare_proposal(abci.RequestPrepareProposal(txs=txs, max_tx_bytes=10**6, height=2)).txs)
    assert prepared == [txs[0], txs[3]]
    assert chain.app.process_proposal(abci.RequestProcessProposal(txs=prepared, height=2)).status == ACCEPT


def test_process_proposal_answers_even_when_admission_raises(chain, keys, monkeypatch):
    """issue 11 defect 11: ProcessProposal must always answer; an exception there halts the node."""
    raw = send(keys[0], keys[1].address, 0)
    monkeypatch.setattr(runtime, "admit", lambda *args: 1 / 0)
    assert chain.app.process_proposal(abci.RequestProcessProposal(txs=[raw], height=2)).status == REJECT
    assert list(chain.app.prepare_proposal(abci.RequestPrepareProposal(txs=[raw], max_tx_bytes=10**6, height=2)).txs) == []


# --- defect 10: the registry authority cannot halt the chain ---------------------------


@pytest.mark.parametrize("config_json", [
    '{"a": "\\ud800"}',  # a lone surrogate: parses, then cannot be encoded
    '{"a": ' * 50 + "1" + "}" * 50,
    "[" * 30_000 + "]" * 30_000,  # RecursionError inside json.loads on 3.11 (over the size limit too)
    "[" * 2_000 + "]" * 2_000,  # within the size limit, still too deep
    "[1, 2]",
    '{"a": NaN}',
    '{"a": 1e400}',  # parses as inf, would be stored as the non-JSON Infinity (found in review)
    "",
])
def test_registry_refuses_bad_config_and_the_chain_goes_on(tmp_path, config_json):
    """issue 11 defects 8 and 10: a lone surrogate or deep nesting in config_json is an InvalidVersion, on every replica alike."""
    replicas = [_registry_chain(tmp_path / "one"), _registry_chain(tmp_path / "two")]
    for chain in replicas:
        txs = [chain.tx(chain.authority, version_msg(1, config_json=config_json)), chain.tx(chain.user, dataset_msg(1))]
        result = chain.block(txs)
        assert codes(result) == [("registry", registry.InvalidVersion.code), ("", 0)]
        assert json.loads(chain.query("/registry/latest").value)["id"] == 0
    assert replicas[0].app.store.app_hash == replicas[1].app.store.app_hash


# --- defect 8: no rule depends on the interpreter ----------------------------------------


def test_interpreter_is_inside_the_declared_range():
    """issue 11 defect 8: CI runs on a Python that pyproject declares (consensus is tested only there)."""
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.search(r">=\s*(\d+)\.(\d+)", spec)
    high = re.search(r"<\s*(\d+)\.(\d+)", spec)
    assert low and high, spec
    assert (int(low[1]), int(low[2])) <= sys.version_info[:2] < (int(high[1]), int(high[2])), (spec, sys.version)


TRICKY = [
    "", " ", "a", "~", "\x7f", "\x1f", "\t", "\n", "é", "\u00a0", "\u2028", "\u200b", "\ufeff", "\U0001f600", "\u0378",
    "\u0b55", "\u1f8f", "\ud800", "a\x00b", "K", "\u212a", "gc1", " gc1 ", "0", "-1", "٣", "１", "²", "18446744073709551615",
    "18446744073709551616", "007", "+1", "1_000", "[" * 20, '{"a":"["}', '"\\"[["',
]
# The answers every supported Python must give, written out: the rules are ASCII and explicit.
PRINTABLE = {"a", "~", " ", "gc1", " gc1 ", "0", "-1", "18446744073709551615", "18446744073709551616", "007", "+1", "1_000", "K",
             "[" * 20, '{"a":"["}', '"\\"[["'}
UINT64 = {"0": 0, "18446744073709551615": 2**64 - 1, "007": 7}


def test_consensus_helpers_give_fixed_answers_for_tricky_strings():
    """issue 11 defect 8: is_printable_ascii, parse_uint64, json_depth_within, bech32 give the table's answers on any Python."""
    from abci_app.context import is_printable_ascii, json_depth_within, parse_uint64

    for text in TRICKY:
        assert is_printable_ascii(text, 64) == (text in PRINTABLE), repr(text)
        try:
            parsed = parse_uint64(text)
        except ValueError:
            parsed = None
        assert parsed == UINT64.get(text), repr(text)
        assert json_depth_within(text, 16) == (text != "[" * 20), repr(text)
        assert not crypto.is_address(text)
    # Unicode lower-cases the Kelvin sign to 'k': an address spelled with it is still not an address
    address = next(key.address for key in map(fixed_key, range(1, 100)) if "k" in key.address)
    assert crypto.is_address(address) and crypto.is_address(address.upper())
    assert not crypto.is_address(address.upper().replace("K", "\u212a"))
    assert not crypto.is_address("\u00a0" + address)  # str.strip() would remove it


def test_dataset_names_are_printable_ascii(chain, keys):
    """issue 11 defect 8: dataset text fields use the ASCII rule (str.isprintable() changes between Python versions)."""
    a = keys[0]
    names = ["\u0b55", "caf\u00e9", "\u00a0x", "ok name"]
    result = chain.block([chain.tx(a, dataset_msg(i, name=name)) for i, name in enumerate(names)])
    assert codes(result) == [("datasets", 1)] * 3 + [("", 0)]


# --- defect 12: bounded fields, priced bytes, bounded caches -------------------------------


def test_dataset_fields_are_bounded(chain, keys):
    """issue 11 defect 12: a 60 KB tokenizer (stored forever for a 1 ugrad fee) is refused, like any oversize field."""
    a = keys[0]
    result = chain.block([
        chain.tx(a, dataset_msg(1, tokenizer="x" * 60_000)),
        chain.tx(a, dataset_msg(2, tokenizer="x" * 65)),
        chain.tx(a, dataset_msg(3, licence="x" * 65)),
        chain.tx(a, dataset_msg(4, tokenizer="x" * 64)),
    ])
    assert codes(result) == [("datasets", 1)] * 3 + [("", 0)]


def test_registry_fields_are_bounded(reg):
    """issue 11 defect 12: note, licence, family and dataset ids of a version are bounded."""
    bad = [{"note": "n" * 600}, {"licence": "l" * 257}, {"family": "f" * 33}, {"family": "caf\u00e9"}, {"dataset_ids": [0] * 17}]
    result = reg.block([reg.tx(reg.authority, version_msg(i, **fields)) for i, fields in enumerate(bad)])
    assert codes(result) == [("registry", registry.InvalidVersion.code)] * len(bad)


def test_the_localnet_genesis_model_fits_the_bounds(reg):
    """The bounds must admit what `make localnet` registers: SmolLM2's licence with its attribution (89 characters)."""
    from abci_app.ml import smollm2

    note = "genesis model: SmolLM2-135M-Instruct (chat template embedded)"  # localnet.publish_genesis_assets' note
    result = reg.block([reg.tx(reg.authority, version_msg(1, licence=smollm2.LICENCE, note=note))])
    assert codes(result) == [("", 0)]


def test_bytes_written_beyond_the_free_allowance_are_paid(reg):
    """issue 11 defect 12: a message writing more state than min_fee covers needs byte_fee per byte; otherwise only the fee moves."""
    params = bank.get_params(reg.app.store.begin_block())
    assert (params.byte_fee, params.free_bytes) == (bank.Params().byte_fee, bank.Params().free_bytes)
    big = {f"key{i:04d}": "v" * 40 for i in range(60)}  # about 3.5 KB of config
    msg = version_msg(1, config_json=json.dumps(big))
    before = reg.balance(reg.authority.address)
    cheap = reg.block([reg.tx(reg.authority, msg, fee=1)]).tx_results[0]
    assert (cheap.codespace, cheap.code) == ("runtime", runtime.StateFeeTooLow.code)
    needed = int(re.search(r"need (\d+)ugrad", cheap.log)[1])
    assert re.search(r"fee too low for (\d+) bytes of state", cheap.log) and needed > 1
    assert reg.balance(reg.authority.address) == before - 1
    assert json.loads(reg.query("/registry/latest").value)["id"] == 0
    # /app/simulate tells a client the fee before it signs (unsigned: a node gets nothing it could broadcast)
    nonce = reg.nonce(reg.authority.address)
    unsigned = lambda fee: tx.build_unsigned(reg.authority.pubkey, CHAIN_ID, nonce, fee, msg)  # noqa: E731
    simulated = json.loads(reg.app.query(abci.RequestQuery(path="/app/simulate", data=unsigned(1))).value)
    assert simulated["fee_needed"] == needed and simulated["code"] == runtime.StateFeeTooLow.code
    assert client.fee_for(AppRpc(reg.app), 1, unsigned) == needed  # what the CLI and ChainClient sign with
    assert reg.check(unsigned(needed)).code == runtime.BadSignature.code  # the probe is no tx
    paid = reg.block([reg.tx(reg.authority, msg, fee=needed)]).tx_results[0]
    assert paid.code == 0 and json.loads(reg.query("/registry/latest").value)["id"] == 1
    assert reg.balance(reg.authority.address) == before - 1 - needed
    small = tx.build_unsigned(reg.authority.pubkey, CHAIN_ID, nonce + 1, 1, version_msg(2))
    assert client.fee_for(AppRpc(reg.app), 1, lambda fee: small) == 1  # a small write costs min_fee only


class AppRpc:
    """Just enough of RpcClient for client.fee_for: abci_query answered by the in-process app."""

    def __init__(self, app):
        self.app = app

    def abci_query(self, path: str, data: bytes = b"", height: int = 0, prove: bool = False):
        return self.app.query(abci.RequestQuery(path=path, data=data, height=height, prove=prove))


def test_bech32_cache_holds_no_huge_strings():
    """issue 11 defect 12: free queries with huge 'addresses' cannot grow the decode cache."""
    huge = "gc1" + "q" * 100_000
    with pytest.raises(crypto.AddressError, match="too long"):
        crypto.parse_address(huge)
    assert crypto._bech32_decode.cache_info().maxsize <= 1 << 12


# --- defect 14: one encoding per tx ------------------------------------------------------


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def test_decode_accepts_only_the_canonical_encoding(chain, keys):
    """issue 11 defect 14: unknown or repeated fields and long varints would give a signed tx a second hash."""
    raw = send(keys[0], keys[1].address, 0)
    envelope = tx.Tx.FromString(raw)
    assert envelope.SerializeToString(deterministic=True) == raw  # build is canonical
    variants = {
        "unknown outer field": raw + b"\x28\x01",
        "repeated signature": raw + b"\x1a\x40" + envelope.signature,
        "unknown body field": tx.Tx(body=envelope.body + b"\x78\x01", pubkey=envelope.pubkey, signature=envelope.signature).SerializeToString(),
        "explicit default nonce": tx.Tx(body=envelope.body + b"\x10\x00", pubkey=envelope.pubkey, signature=envelope.signature).SerializeToString(),
        "long length varint": b"\x0a" + _long_varint(len(envelope.body)) + envelope.body + raw[2 + len(envelope.body):],
    }
    for name, variant in variants.items():
        assert variant != raw, name
        with pytest.raises(tx.TxDecodeError, match="canonical"):
            tx.decode(variant)
        assert chain.check(variant).code == runtime.MalformedTx.code, name
    assert chain.check(raw).code == 0


def _long_varint(n: int) -> bytes:
    """n as a varint one byte longer than needed (a continuation byte with zero bits)."""
    short = _varint(n)
    return short[:-1] + bytes([short[-1] | 0x80]) + b"\x00"


# --- the rule for exceptions: a message that raises fails alone ----------------------------


def test_a_raising_message_fails_alone_and_pays(tmp_path, keys, monkeypatch):
    """issue 11 defences: a handler that raises fails its tx with the internal code; the fee is paid, writes roll back,
    the other txs of the block succeed, and two replicas agree on the app hash."""
    a, b, c = keys[0], keys[1], keys[2]
    balances = {a.address: 1_000, b.address: 1_000}
    real_send = runtime.CALLS["send"]

    def half_then_raise(ctx, signer, msg):
        real_send[1](ctx, signer, msg)  # writes, then a bug
        if msg.amount == 7:
            raise KeyError("bug")

    monkeypatch.setitem(runtime.CALLS, "send", (real_send[0], half_then_raise))
    replicas = [Chain(tmp_path / "one", balances), Chain(tmp_path / "two", balances)]
    txs = [send(a, c.address, 0, amount=5), send(b, c.address, 0, amount=7), send(a, c.address, 1, amount=3)]
    for chain in replicas:
        result = chain.block(txs)
        assert codes(result) == [("", 0), ("runtime", runtime.Internal.code), ("", 0)]
        assert "internal error in send: KeyError" in result.tx_results[1].log
        assert chain.balance(b.address) == 1_000 - 1 and chain.nonce(b.address) == 1
        assert chain.balance(c.address) == 8
    assert replicas[0].app.store.app_hash == replicas[1].app.store.app_hash
