"""The CometBFT we run is the pinned upstream version with our patches (cometbft/patches), as install.sh builds it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = (ROOT / "cometbft" / "VERSION").read_text().strip()
PATCHES = sorted((ROOT / "cometbft" / "patches").glob("*.patch"))


def build_name() -> str:
    """The cached binary's name install.sh gives this version and patch set."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in PATCHES)).hexdigest()[:12]
    return f"cometbft-{VERSION}-p{digest}"


def test_every_patch_says_why_and_touches_only_the_socket_client():
    assert PATCHES, "cometbft/patches holds no patch"
    for patch in PATCHES:
        text = patch.read_text()
        preamble = text.split("\n--- a/", 1)[0]
        assert len(preamble.split()) > 30, f"{patch.name}: say what it fixes and why above the diff"
        touched = [line[len("+++ b/"):] for line in text.splitlines() if line.startswith("+++ b/")]
        # Anything beyond the node's own ABCI client would change what a node says on the wire or decides.
        assert touched and all(path.startswith("abci/client/") for path in touched), f"{patch.name} touches {touched}"


def test_the_patches_apply_to_the_pinned_module(tmp_path):
    """A new VERSION whose source moved under a patch fails here, by patch name, not deep in a build."""
    if shutil.which("go") is None:
        pytest.skip("Go is not installed (make install-go needs it)")
    listing = subprocess.run(["go", "mod", "download", "-json", f"github.com/cometbft/cometbft@{VERSION}"], cwd=tmp_path,
                             env={**os.environ, "GOFLAGS": "-mod=mod"}, capture_output=True, text=True, timeout=600)
    assert listing.returncode == 0, listing.stderr
    source = Path(json.loads(listing.stdout)["Dir"])
    for patch in PATCHES:
        check = subprocess.run(["git", "apply", "--check", str(patch)], cwd=source, capture_output=True, text=True, timeout=60,
                               env={**os.environ, "GIT_CEILING_DIRECTORIES": str(source.parent)})
        assert check.returncode == 0, f"{patch.name} does not apply to cometbft {VERSION}: {check.stderr.strip()}"


@pytest.mark.skipif("GRADCHAIN_COMETBFT" in os.environ, reason="a CometBFT binary was chosen by GRADCHAIN_COMETBFT")
def test_bin_cometbft_is_the_patched_build():
    binary = ROOT / "bin" / "cometbft"
    if not binary.exists():
        pytest.fail(f"CometBFT binary missing at {binary}: run `make install-go`", pytrace=False)
    assert binary.resolve().name == build_name(), f"bin/cometbft is {binary.resolve()}: run `make install-go` to build {build_name()}"
    version = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    assert f"v{version}" == VERSION
