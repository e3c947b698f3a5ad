"""A small, fixed evaluation of any model family: held-out loss and 25 prompts with expected answers.

Figures are integers (micro-units and counts) so they can go on chain as a
version's metrics and print the same everywhere:

    held_out_loss_micro  mean next-token loss (nats/token) on the dataset's held-out split, x 1e6, rounded up
    held_out_tokens      tokens in that split
    prompts_total        len(PROMPTS)
    prompts_correct      answers that contain an expected string
    prompt_score_ppm     prompts_correct / prompts_total, in millionths (floor)

Scoring: greedy decoding (temperature 0), at most 24 new tokens. Families with
a chat template (a `chat` method) get the question as one user message; the
others (tiny-gpt) get "Question: ...\\nAnswer:" as plain text. An answer
counts when, lower-cased, it contains one of the prompt's expected strings
lower-cased; expected strings that are numbers must match as a whole number
("4" does not match inside "14" or "4.5"). A byte-level GPT trained on the KJV
scores ~0; that is fine.

    python -m abci_app.ml.evaluate MODEL.safetensors [--dataset kjv.txt] [--no-prompts]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abci_app.ml.generate import SamplingParams

MICRO = 1_000_000
MAX_NEW_TOKENS = 24


@dataclass(frozen=True)
class Prompt:
    question: str
    expected: tuple[str, ...]  # any of these, case-insensitive
    kind: str  # "fact", "arithmetic" or "instruction"


PROMPTS: tuple[Prompt, ...] = (
    Prompt("What is the capital of France?", ("Paris",), "fact"),
    Prompt("What is the capital of Japan?", ("Tokyo",), "fact"),
    Prompt("What is the capital of Italy?", ("Rome",), "fact"),
    Prompt("What is the capital of Germany?", ("Berlin",), "fact"),
    Prompt("What is the capital of Spain?", ("Madrid",), "fact"),
    Prompt("Which planet is the largest in our solar system?", ("Jupiter",), "fact"),
    Prompt("Who wrote Romeo and Juliet?", ("Shakespeare",), "fact"),
    Prompt("What is the chemical formula of water?", ("H2O", "H₂O"), "fact"),
    Prompt("What color is the sky on a clear day?", ("blue",), "fact"),
    Prompt("How many days are there in a week?", ("7", "seven"), "fact"),
    Prompt("How many legs does a spider have?", ("8", "eight"), "fact"),
    Prompt("What language is mostly spoken in Brazil?", ("Portuguese",), "fact"),
    Prompt("Which animal is known as the king of the jungle?", ("lion",), "fact"),
    Prompt("What gas do plants absorb from the air for photosynthesis?", ("carbon dioxide", "CO2", "CO₂"), "fact"),
    Prompt("At what temperature in degrees Celsius does water boil at sea level?", ("100",), "fact"),
    Prompt("What is 2 + 2?", ("4", "four"), "arithmetic"),
    Prompt("What is 5 + 3?", ("8", "eight"), "arithmetic"),
    Prompt("What is 10 times 3?", ("30", "thirty"), "arithmetic"),
    Prompt("What is 9 minus 4?", ("5", "five"), "arithmetic"),
    Prompt("What is 12 plus 7?", ("19", "nineteen"), "arithmetic"),
    Prompt("What is half of 20?", ("10", "ten"), "arithmetic"),
    Prompt("Translate 'hello' into French.", ("bonjour",), "instruction"),
    Prompt("What is the opposite of 'hot'?", ("cold",), "instruction"),
    Prompt("Complete the proverb: The early bird catches the ...", ("worm",), "instruction"),
    Prompt("Name a fruit that is yellow and curved.", ("banana",), "instruction"),
)


def matches(answer: str, expected: Iterable[str]) -> bool:
    """Case-insensitive substring match; numbers must match as whole numbers."""
    low = answer.lower()
    for e in expected:
        e = e.lower()
        if re.fullmatch(r"[0-9]+", e):
            if re.search(rf"(?<![0-9.]){e}(?![0-9]|\.[0-9])", low):
                return True
        elif e in low:
            return True
    return False


def answer(fam: Any, loaded: Any, question: str, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """The model's greedy answer to one question."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    if hasattr(fam, "chat"):
        return "".join(fam.chat(loaded, [{"role": "user", "content": question}], params))
    return "".join(fam.generate(loaded, f"Question: {question}\nAnswer:", params))


def score_prompts(fam: Any, loaded: Any, prompts: Iterable[Prompt] = PROMPTS, on_answer: Callable[[Prompt, str, bool], None] | None = None) -> dict[str, int]:
    prompts = list(prompts)
    correct = 0
    for p in prompts:
        text = answer(fam, loaded, p.question)
        ok = matches(text, p.expected)
        correct += ok
        if on_answer is not None:
            on_answer(p, text, ok)
    total = len(prompts)
    return {"prompts_total": total, "prompts_correct": correct, "prompt_score_ppm": correct * MICRO // total if total else 0}


def to_micro(value: float) -> int:
    """A loss or error as the integer millionths the chain stores (rounded up, never negative)."""
    return max(0, math.ceil(value * MICRO)) if math.isfinite(value) else 2**63 - 1


def heldout(fam: Any, loaded: Any, dataset: Any) -> dict[str, int]:
    """Held-out loss with the family's own evaluation windows (fixed, evenly spaced: deterministic)."""
    loss = fam.evaluate_loss(loaded, dataset.heldout)
    return {"held_out_loss_micro": to_micro(loss), "held_out_tokens": int(dataset.heldout.numel())}


def evaluate(fam: Any, loaded: Any, dataset: Any | None = None, prompts: bool | int = True,
             on_answer: Callable[[Prompt, str, bool], None] | None = None) -> dict[str, int]:  # fmt: skip
    """All figures for one model: held-out loss (when a dataset is given) and the prompt score
    (`prompts`: all of PROMPTS, none, or the first N, as the chain's `eval_prompts` param chooses)."""
    out: dict[str, int] = {}
    if dataset is not None:
        out |= heldout(fam, loaded, dataset)
    if prompts:
        out |= score_prompts(fam, loaded, PROMPTS if prompts is True else PROMPTS[:prompts], on_answer=on_answer)
    return out


if __name__ == "__main__":
    import json

    import click

    @click.command()
    @click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
    @click.option("--no-prompts", is_flag=True)
    @click.option("--threads", type=int, default=2, show_default=True)
    @click.option("--verbose", "-v", is_flag=True, help="Print each answer.")
    def main(model: Path, dataset: Path | None, no_prompts: bool, threads: int, verbose: bool) -> None:
        """Evaluate a model checkpoint: held-out loss and the fixed prompt set."""
        from abci_app.ml import determinism
        from abci_app.ml.family import load_model

        determinism.pin(threads)
        fam, loaded = load_model(model)
        data = fam.dataset(loaded, dataset) if dataset is not None else None
        show = (lambda p, a, ok: click.echo(f"{'ok ' if ok else 'BAD'} {p.question!r} -> {a.strip()!r}", err=True)) if verbose else None
        click.echo(json.dumps(evaluate(fam, loaded, data, prompts=not no_prompts, on_answer=show), sort_keys=True))

    main()
