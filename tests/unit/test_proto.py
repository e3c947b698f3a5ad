"""The committed abci_app/pb must be what proto/generate.py makes from proto/."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path):
    generated = _load_generator().generate(tmp_path)
    committed_dir = ROOT / "abci_app" / "pb"
    stale = []
    for path in generated:
        rel = path.relative_to(tmp_path)
        committed = committed_dir / rel
        if not committed.exists() or committed.read_text() != path.read_text():
            stale.append(str(rel))
    extra = sorted(str(p.relative_to(committed_dir)) for p in committed_dir.rglob("*_pb2.py") if not (tmp_path / p.relative_to(committed_dir)).exists())
    assert not stale and not extra, f"abci_app/pb is stale (run `make proto`): changed {stale}, extra {extra}"


def test_abci_field_numbers_match_cometbft():
    # Spot checks against CometBFT v0.39.4's tendermint/abci/types.proto.
    from abci_app.pb.tendermint.abci import types_pb2 as abci

    fields = abci.Request.DESCRIPTOR.fields_by_name
    assert {name: fields[name].number for name in ("echo", "flush", "info", "init_chain", "query", "check_tx", "commit", "prepare_proposal", "process_proposal", "finalize_block")} == {
        "echo": 1, "flush": 2, "info": 3, "init_chain": 5, "query": 6, "check_tx": 8, "commit": 11,
        "prepare_proposal": 16, "process_proposal": 17, "finalize_block": 20,
    }
    assert abci.Request.DESCRIPTOR.full_name == "tendermint.abci.Request"
    assert abci.ResponseFinalizeBlock.DESCRIPTOR.fields_by_name["app_hash"].number == 5
