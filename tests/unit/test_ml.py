"""The ML layer: checkpoints, tokenizer, generation, deterministic batches/training, deltas, corpus."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from abci_app.ml import checkpoint, corpus, determinism, generate, model, train
from abci_app.ml.checkpoint import CheckpointError, CheckpointMeta
from abci_app.ml.family import get_family, load_model
from abci_app.ml.generate import SamplingParams
from abci_app.ml.tokenizer import EOT, ByteTokenizer

REPO = Path(__file__).resolve().parents[2]
CFG = model.TEST_CONFIG
THREADS = 1  # bitwise claims hold per thread count; 1 keeps the suite quick on a busy 2-core box
VERSES = (
    "In the beginning God created the heaven and the earth.\n"
    "And the earth was without form, and void; and darkness was upon the face of the deep.\n"
    "And God said, Let there be light: and there was light.\n"
    "And God saw the light, that it was good: and God divided the light from the darkness.\n"
)
TEXT = VERSES * 40  # ~13 KB: enough windows for batches and held-out windows


@pytest.fixture(scope="module")
def fam():
    determinism.pin(THREADS)
    return get_family("tiny-gpt")


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.tensor(ByteTokenizer().encode(TEXT), dtype=torch.int32)


@pytest.fixture(scope="module")
def trained(fam, tokens):
    """A test-config model trained 40 steps: its outputs are peaked, unlike a random init's."""
    m = fam.build(CFG, seed=7)
    fam.train_steps(m, train.batches_for(b"fixture", tokens, 40, 8, CFG.block_size), 3e-3)
    return m


# --- tokenizer ----------------------------------------------------------------


def test_tokenizer_round_trip_including_non_ascii():
    tok = ByteTokenizer()
    text = "In the beginning — naïve café, 日本語, emoji 🙂\n"
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids) and len(ids) == len(text.encode())
    assert tok.decode(ids) == text
    assert tok.decode(ids + [EOT]) == text  # end-of-text carries no bytes
    pieces = list(tok.stream_decode(ids))
    assert "".join(pieces) == text
    assert "🙂" in pieces and "\ufffd" not in "".join(pieces)  # the 4-byte emoji arrives whole, once complete
    assert tok.decode([0xE6, 0x97]) == "\ufffd"  # a truncated character never raises


# --- checkpoints --------------------------------------------------------------


def test_checkpoint_round_trip_with_metadata(fam, tmp_path):
    m = fam.build(CFG, seed=1)
    path = tmp_path / "m.safetensors"
    sha = fam.save(m, path, parent="3", extra={"note": "x", "loss": 1.25})
    assert sha == checkpoint.file_sha256(path)
    fam2, back = load_model(path, expect_config_hash=fam.config_hash(CFG))
    assert fam2 is fam and back.config == CFG and back.parent == "3" and back.sha256 == sha
    assert back.extra == {"note": "x", "loss": 1.25}
    assert train.state_sha256(fam.model_tensors(back)) == train.state_sha256(fam.model_tensors(m))
    with safe_open(path, "pt") as f:  # a standard safetensors file: the reference reader takes it
        meta = f.metadata()
        assert set(f.keys()) == set(model.expected_shapes(CFG))
    assert meta["family"] == "tiny-gpt" and meta["kind"] == "model" and meta["parent"] == "3"
    assert json.loads(meta["config"]) == CFG.to_dict()
    assert meta["tokenizer"] == ByteTokenizer.description


def test_save_is_byte_deterministic(fam, tmp_path):
    m = fam.build(CFG, seed=1)
    a = fam.save(m, tmp_path / "a.safetensors", extra={"b": 1, "a": [1.5, 2]})
    b = fam.save(fam.build(CFG, seed=1), tmp_path / "b.safetensors", extra={"a": [1.5, 2], "b": 1})
    assert a == b
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert fam.save(m, tmp_path / "c.safetensors", parent="1") != a  # metadata is part of the bytes
    assert fam.save(fam.build(CFG, seed=2), tmp_path / "d.safetensors") != a


def test_corrupt_files_raise_checkpoint_error(fam, tmp_path):
    good = tmp_path / "good.safetensors"
    fam.save(fam.build(CFG), good)
    blob = good.read_bytes()
    flipped = bytearray(blob)
    flipped[-5] ^= 0x01  # one bit of tensor data
    cases = {
        "empty": b"",
        "truncated": blob[: len(blob) // 2],
        "bit flip": bytes(flipped),
        "header garbage": blob[:8] + b"\xff" * (len(blob) - 8),
        "huge header length": (10**12).to_bytes(8, "little") + blob[8:],
        "not ours": st_save({"w": torch.zeros(2)}),
    }
    for name, data in cases.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(data)
        with pytest.raises(CheckpointError):
            load_model(p)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(tmp_path / "missing.safetensors")


def test_config_mismatch_raises_checkpoint_error(fam, tmp_path):
    tensors = fam.model_tensors(fam.build(CFG))
    wrong = replace(CFG, n_embd=64, n_head=2)
    p = tmp_path / "wrong.safetensors"
    checkpoint.save(p, tensors, CheckpointMeta("tiny-gpt", wrong.to_dict(), ByteTokenizer.description))
    with pytest.raises(CheckpointError, match="config mismatch"):
        load_model(p)
    missing = dict(tensors)
    del missing["lm_head.weight"]
    checkpoint.save(p, missing, CheckpointMeta("tiny-gpt", CFG.to_dict(), ByteTokenizer.description))
    with pytest.raises(CheckpointError, match="config mismatch"):
        load_model(p)
    checkpoint.save(p, tensors, CheckpointMeta("tiny-gpt", CFG.to_dict() | {"n_lyr": 3}, ByteTokenizer.description))
    with pytest.raises(CheckpointError, match="config mismatch"):
        load_model(p)
    ok = tmp_path / "ok.safetensors"
    fam.save(fam.build(CFG), ok)
    with pytest.raises(CheckpointError, match="config hash"):  # the registry says another config
        load_model(ok, expect_config_hash=fam.config_hash(wrong))


def test_config_hash_is_pinned(fam):
    # The registry stores this hash: changing how it is computed orphans registered versions.
    doc = {"family": "tiny-gpt", "config": CFG.to_dict()}
    assert fam.config_hash(CFG) == hashlib.sha256(checkpoint.canonical_json(doc).encode()).hexdigest()
    assert checkpoint.canonical_json(doc) == (
        '{"config":{"bias":false,"block_size":32,"dropout":0.0,"n_embd":32,"n_head":2,"n_layer":2,'
        '"vocab_size":257},"family":"tiny-gpt"}'
    )
    assert fam.config_hash(replace(CFG, n_layer=3)) != fam.config_hash(CFG)
    assert fam.config_hash(replace(CFG, dropout=0)) == fam.config_hash(CFG)  # 0 and 0.0: one spelling
    with pytest.raises(ValueError):
        model.GPTConfig(n_layer=2.5)


# --- generation ---------------------------------------------------------------


def test_generation_is_deterministic_for_a_seed(fam, trained):
    p = SamplingParams(max_new_tokens=60, temperature=1.0, seed=5)
    a = "".join(fam.generate(trained, "And God", p))
    assert a == "".join(fam.generate(trained, "And God", p))
    assert a != "".join(fam.generate(trained, "And God", replace(p, seed=6)))
    greedy = generate.generate_text(trained.module, "And God said", replace(p, temperature=0.0, max_new_tokens=20))
    assert " the " in greedy, greedy  # it learned something of the text


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=90, temperature=0.0),
        SamplingParams(max_new_tokens=90, temperature=1.0, seed=11),
        SamplingParams(max_new_tokens=90, temperature=0.9, top_k=5, top_p=0.9, seed=12),
    ],
    ids=["greedy", "sampled", "top-k-top-p"],
)
def test_kv_cache_equals_no_cache(trained, params):
    # 90 new tokens > block_size 32: the window restarts, on both paths alike.
    prompt = ByteTokenizer().encode("And the earth was")
    cached = list(generate.generate_ids(trained.module, prompt, params, EOT, use_cache=True))
    plain = list(generate.generate_ids(trained.module, prompt, params, EOT, use_cache=False))
    assert cached == plain and len(cached) == 90


def test_kv_cache_logits_match_full_forward(trained):
    x = torch.tensor([ByteTokenizer().encode("In the beginning God created the")[: CFG.block_size]])
    with torch.no_grad():
        full = trained.module(x)  # (1, T, V)
        cache = model.KVCache(CFG)
        parts = [trained.module(x[:, a:b], cache) for a, b in [(0, 10), (10, 11), (11, 20), (20, x.shape[1])]]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    finite = lambda t: torch.isfinite(t).nonzero().flatten().tolist()  # noqa: E731
    assert finite(generate.filter_logits(logits, top_k=2)) == [0, 1]
    assert finite(generate.filter_logits(logits, top_p=0.5)) == [0, 1]  # 0.4 < 0.5 <= 0.7
    assert finite(generate.filter_logits(logits, top_p=0.4)) == [0]
    assert finite(generate.filter_logits(logits, top_p=1.0)) == [0, 1, 2, 3]
    assert finite(generate.filter_logits(logits, top_k=3, top_p=0.95)) == [0, 1, 2]
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(257, generator=g)
    top3 = set(torch.topk(wide, 3).indices.tolist())
    params = SamplingParams(temperature=2.0, top_k=3)
    drawn = {generate.sample(wide, params, g) for _ in range(200)}
    assert drawn == top3


def test_streaming_yields_text_as_generated(trained):
    params = SamplingParams(max_new_tokens=40, temperature=1.5, seed=3)
    ids = list(generate.generate_ids(trained.module, ByteTokenizer().encode("café 🙂"), params, EOT))
    pieces = list(generate.stream(trained.module, "café 🙂", params))
    assert len(pieces) > 10 and "".join(pieces) == ByteTokenizer().decode(ids)


# --- batches and training -------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import hashlib, sys, torch
    from abci_app.ml import determinism, train
    from abci_app.ml.family import get_family
    from abci_app.ml.model import TEST_CONFIG
    from abci_app.ml.tokenizer import ByteTokenizer
    from tests.unit.test_ml import TEXT
    determinism.pin(int(sys.argv[-1]))
    tokens = torch.tensor(ByteTokenizer().encode(TEXT), dtype=torch.int32)
    x, y = train.batch_for(b"round-7/trainer-a", tokens, 8, 32)
    print("batch", hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest())
    if sys.argv[1:2] == ["train"]:
        fam = get_family("tiny-gpt")
        base = fam.build(TEST_CONFIG, seed=3)
        work = fam.clone(base)
        fam.train_steps(work, train.batches_for(b"round-7/trainer-a", tokens, 4, 8, 32), 1e-3)
        print("delta", fam.save_delta(sys.argv[2], fam.delta(work, base), base, parent="0"))
    """
)


def _child(args: list[str], cwd: Path, env_extra: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in reversed(list(os.environ.items())) if not k.startswith(("OMP_", "MKL_"))}  # other order
    env |= {"PYTHONPATH": str(REPO), **env_extra}
    argv = [sys.executable, "-c", _CHILD, *args, str(THREADS)]
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict[str, str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_batch_for_is_pure(tokens):
    x, y = train.batch_for(b"seed", tokens, 8, 32)
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    x2, y2 = train.batch_for(b"seed", tokens, 8, 32)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, train.batch_for(b"seed2", tokens, 8, 32)[0])
    before = torch.random.get_rng_state()
    train.batch_for(b"seed", tokens, 8, 32)
    assert torch.equal(before, torch.random.get_rng_state())  # no global RNG
    assert train.batch_seed(b"r", "gc1a", "00" * 32) != train.batch_seed(b"r", "gc1b", "00" * 32)


def test_training_is_bitwise_identical_across_processes(fam, tokens, tmp_path):
    """Two processes started differently (cwd, env order, hash seed) compute the same batch and
    byte-identical delta files; the test process itself is a third computation."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    procs = [
        _child(["train", str(tmp_path / "a" / "d.safetensors")], tmp_path / "a", {"PYTHONHASHSEED": "1"}),
        _child(["train", str(tmp_path / "b" / "d.safetensors")], tmp_path / "b", {"PYTHONHASHSEED": "999", "X_UNRELATED": "1"}),
    ]
    results = [_result(p) for p in procs]
    x, y = train.batch_for(b"round-7/trainer-a", tokens, 8, 32)
    assert {r["batch"] for r in results} == {hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()}
    assert results[0]["delta"] == results[1]["delta"] == checkpoint.file_sha256(tmp_path / "a" / "d.safetensors")

    determinism.pin(THREADS)
    base = fam.build(CFG, seed=3)
    work = fam.clone(base)
    fam.train_steps(work, train.batches_for(b"round-7/trainer-a", tokens, 4, 8, 32), 1e-3)
    delta = fam.delta(work, base)
    loaded, meta = fam.load_delta(tmp_path / "a" / "d.safetensors", base)
    assert meta.kind == "delta" and meta.parent == "0"
    assert train.state_sha256(loaded) == train.state_sha256(delta)
    assert train.relative_l2(loaded, delta) == 0.0


def test_training_lowers_loss_and_trains_only_given_params(fam, tokens):
    m = fam.build(CFG, seed=4)
    before = fam.evaluate_loss(m, tokens, windows=16)
    frozen = m.module.wte.weight.detach().clone()
    params = [(n, p) for n, p in m.module.named_parameters() if n != "wte.weight"]
    result = train.train_steps(m.module, train.batches_for(b"s", tokens, 20, 8, 32), 3e-3, params=params)
    assert len(result.losses) == 20 and result.losses[-1] < result.losses[0]
    assert fam.evaluate_loss(m, tokens, windows=16) < before
    assert torch.equal(m.module.wte.weight, frozen)


# --- deltas ---------------------------------------------------------------------


def test_delta_apply_and_average_are_deterministic(fam, tokens, trained):
    base = fam.build(CFG, seed=7)
    d = fam.delta(trained, base)
    rebuilt = fam.apply(base, d)
    assert train.relative_l2(fam.model_tensors(rebuilt), fam.model_tensors(trained)) < 1e-6
    assert train.state_sha256(fam.model_tensors(fam.apply(base, d))) == train.state_sha256(fam.model_tensors(rebuilt))

    other = {n: t * -0.5 + 1e-3 for n, t in d.items()}
    merged = fam.merge([d, other])
    assert train.state_sha256(merged) == train.state_sha256(fam.merge([d, other]))
    assert train.state_sha256(fam.merge([d, d])) == train.state_sha256(d)  # (d + d) / 2 is exact
    torch.testing.assert_close(merged["wte.weight"], (d["wte.weight"] + other["wte.weight"]) / 2, rtol=0, atol=0)

    assert abs(train.relative_l2({n: t * 1.01 for n, t in d.items()}, d) - 0.01) < 1e-6
    with pytest.raises(train.DeltaError):
        train.average_deltas([d, {"wte.weight": d["wte.weight"]}])
    with pytest.raises(train.DeltaError):
        train.apply_delta(fam.model_tensors(base), {"nope": torch.zeros(1)})


def test_delta_file_for_another_config_is_refused(fam, tmp_path):
    base = fam.build(CFG)
    p = tmp_path / "d.safetensors"
    fam.save_delta(p, {n: torch.zeros(s) for n, s in model.expected_shapes(CFG).items()}, base, parent="0")
    other = fam.build(replace(CFG, dropout=0.1))
    with pytest.raises(CheckpointError, match="config mismatch"):
        fam.load_delta(p, other)
    fam.save(base, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="not a delta"):
        fam.load_delta(tmp_path / "m.safetensors", base)


# --- determinism, corpus, genesis ------------------------------------------------


def test_pin_reports_kernel_path():
    path = determinism.pin(2)
    assert path == f"torch-{torch.__version__}/{determinism.cpu_capability()}/t2" and torch.get_num_threads() == 2
    assert torch.are_deterministic_algorithms_enabled()
    with pytest.raises(determinism.DeterminismError, match="ATEN_CPU_CAPABILITY"):
        determinism.pin(2, capability="NOT_A_KERNEL_SET")
    determinism.pin(THREADS)


def test_corpus_normalize_and_split():
    raw = "Ge1:1 In the  beginning \nGe1:2 And the earth\n1Sam1:1 Now there was\n"
    assert corpus.normalize(raw) == "In the beginning\nAnd the earth\nNow there was\n"
    text = "".join(f"line {i}\n" for i in range(450))
    tr, ho = corpus.split(text)
    assert ho == "".join(f"line {i}\n" for i in [*range(190, 200), *range(390, 400)])  # chunks 19, 39 of 10 lines
    assert sorted((tr + ho).splitlines()) == sorted(text.splitlines())


@pytest.mark.skipif(shutil.which("bible") is None, reason="needs Debian packages bible-kjv bible-kjv-text")
def test_kjv_corpus_matches_pinned_digest(tmp_path):
    info = corpus.build(tmp_path / "kjv.txt")
    assert info.sha256 == corpus.KJV_SHA256 and info.lines == corpus.KJV_VERSES
    assert (tmp_path / "kjv.txt").read_text().startswith("In the beginning God created the heaven and the earth.\n")


def test_genesis_script_is_deterministic(tmp_path):
    from abci_app.ml.train_genesis import RECIPES, train_genesis

    (tmp_path / "c.txt").write_text(TEXT * 3)
    recipe = replace(RECIPES["test"], steps=6)
    a, b = (
        train_genesis(recipe, tmp_path / "c.txt", tmp_path / name, threads=THREADS, echo=lambda s: None, sample_tokens=0)
        for name in ("a.safetensors", "b.safetensors")
    )
    assert a == b
    fam, m = load_model(tmp_path / "a.safetensors")
    assert m.parent == "" and m.extra["recipe"]["steps"] == 6 and m.extra["heldout_loss"] < 5.6
