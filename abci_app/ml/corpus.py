"""The genesis corpus: the King James Bible (public domain), as Debian ships it.

Source: Debian packages `bible-kjv-text` (the compressed text, /usr/lib/bible.data
and its concordance /usr/lib/bible.data.conc) and `bible-kjv` (the `bible`
program, the only decoder of that format). Install: `apt-get install -y
bible-kjv bible-kjv-text`. `bible -f gen1:1-rev22:21` prints all 31,102
verses, one per line, as "Ge1:1 In the beginning ...".

Normalised text: verse references dropped, runs of whitespace collapsed to one
space, Unicode NFC, one verse per line, "\\n" line ends, final newline. It is
pure ASCII and 4.1 MB; KJV_SHA256 pins the exact bytes so every node can
check it built the same corpus.

Train / held-out split (any line-oriented text file, not only this one):
lines are grouped in consecutive chunks of 10; chunk i is held out when
i % 20 == 19 (5%; contiguous passages longer than a context window, so a
held-out window is not mostly training text; any file of 200+ lines has some).

    python -m abci_app.ml.corpus --out kjv.txt
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from torch import Tensor

from abci_app.ml.tokenizer import ByteTokenizer

APT_PACKAGES = ("bible-kjv", "bible-kjv-text")
BIBLE_PROGRAM = "bible"
BIBLE_DATA_DIR = "/usr/lib"  # where bible-kjv-text puts bible.data
KJV_RANGE = "gen1:1-rev22:21"
KJV_VERSES = 31102
KJV_SHA256 = "376f0fd8429cec6cc77659d428b2debd01f069dbfb3917776a09a36a7cfed5c4"  # bible-kjv-text 4.38 (Debian 12)
LICENCE = "Public domain (King James Version, 1611); text from Debian package bible-kjv-text"
SPLIT_CHUNK_LINES = 10
SPLIT_EVERY = 20

_REF = re.compile(r"^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ ")  # "Ge1:1 ", "1Sam3:4 "


class CorpusError(RuntimeError):
    """The corpus cannot be built (package missing) or is not the pinned text."""


@dataclass(frozen=True)
class CorpusInfo:
    path: Path
    sha256: str
    bytes: int
    lines: int
    licence: str = LICENCE


@dataclass(frozen=True)
class Dataset:
    """Token ids of a corpus file, split by the fixed rule (1-D int32 tensors)."""

    train: Tensor
    heldout: Tensor
    sha256: str


def normalize(raw: str) -> str:
    lines = []
    for line in raw.splitlines():
        text = " ".join(_REF.sub("", line, count=1).split())
        if text:
            lines.append(unicodedata.normalize("NFC", text))
    return "\n".join(lines) + "\n"


def kjv_text(check: bool = True) -> str:
    """The normalised KJV text, decoded by Debian's `bible` program."""
    program = shutil.which(BIBLE_PROGRAM)
    if program is None or not Path(BIBLE_DATA_DIR, "bible.data").exists():
        pkgs = " ".join(APT_PACKAGES)
        raise CorpusError(f"the KJV corpus needs Debian packages {pkgs}: apt-get install -y {pkgs}")
    # -p: bible searches the working directory first; cwd and env pinned so nothing local changes the text.
    out = subprocess.run(
        [program, "-p", BIBLE_DATA_DIR, "-f", KJV_RANGE],
        capture_output=True, check=True, cwd="/", env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    raw = out.stdout.decode("utf-8")
    if raw.count("\n") != KJV_VERSES:
        raise CorpusError(f"`bible` printed {raw.count(chr(10))} verses, expected {KJV_VERSES}")
    text = normalize(raw)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if check and digest != KJV_SHA256:
        raise CorpusError(f"KJV text sha256 {digest} is not the pinned {KJV_SHA256} (another bible-kjv-text version?)")
    return text


def build(out: str | Path, check: bool = True) -> CorpusInfo:
    """Write the normalised corpus to `out` (same bytes on every machine)."""
    data = kjv_text(check).encode("utf-8")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return CorpusInfo(out, hashlib.sha256(data).hexdigest(), len(data), data.count(b"\n"))


def split(text: str) -> tuple[str, str]:
    """(train, held-out) by the fixed chunk rule in the module docstring."""
    lines = text.splitlines(keepends=True)
    train, heldout = [], []
    for start in range(0, len(lines), SPLIT_CHUNK_LINES):
        chunk = lines[start : start + SPLIT_CHUNK_LINES]
        (heldout if (start // SPLIT_CHUNK_LINES) % SPLIT_EVERY == SPLIT_EVERY - 1 else train).extend(chunk)
    return "".join(train), "".join(heldout)


def load_dataset(path: str | Path, tokenizer: ByteTokenizer | None = None) -> Dataset:
    data = Path(path).read_bytes()
    train, heldout = split(data.decode("utf-8"))
    tok = tokenizer or ByteTokenizer()
    as_tensor = lambda s: torch.tensor(tok.encode(s), dtype=torch.int32)  # noqa: E731
    return Dataset(as_tensor(train), as_tensor(heldout), hashlib.sha256(data).hexdigest())


@click.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the corpus text.")
def main(out: str) -> None:
    """Build the normalised KJV corpus file from Debian's bible-kjv-text."""
    try:
        info = build(out)
    except CorpusError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{info.path}: {info.bytes} bytes, {info.lines} lines, sha256 {info.sha256}")


if __name__ == "__main__":
    main()
