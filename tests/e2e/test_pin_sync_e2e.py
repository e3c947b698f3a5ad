"""The pin sync (abci_app.node.pins) against two real Kubo nodes in a private swarm: a registered file added on one
node ends pinned on the other, verified; a file whose registered sha256 or size it does not match is not."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from abci_app.ipfs import node
from abci_app.node import pins
from abci_app.node.pins import PinSync, Wanted
from tests.e2e.conftest import running_swarm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[node.Swarm]:
    with running_swarm(tmp_path / "ipfs", 2) as started:
        yield started


def test_registered_files_added_elsewhere_end_pinned_here(swarm: node.Swarm, tmp_path: Path) -> None:
    model, corpus = os.urandom(700_000), os.urandom(5_000)  # a three-chunk DAG and a single block
    with swarm.client(0) as source, swarm.client(1) as here:
        files = [Wanted(source.add(data), hashlib.sha256(data).hexdigest(), len(data), what) for data, what in ((model, "version 0"), (corpus, "dataset 0"))]
        lines: list[str] = []
        sync = PinSync(here, tmp_path / pins.LEDGER_FILE, report=lines.append)
        assert sync.sync(files) == 2, lines
        for wanted, data in zip(files, (model, corpus)):
            assert here.pinned(wanted.cid)
            assert hashlib.sha256(here.cat(wanted.cid)).hexdigest() == wanted.sha256
        assert not here.pinned(source.add(b"never registered"))
    swarm.nodes[0].daemon.terminate()  # the source goes: what is pinned here is served from here
    with swarm.client(1) as here:
        assert hashlib.sha256(here.cat(files[0].cid, timeout=5)).hexdigest() == files[0].sha256


def test_a_file_unlike_its_registration_is_not_pinned(swarm: node.Swarm, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    with swarm.client(0) as source, swarm.client(1) as here:
        cid = source.add(data)
        wrong_digest = Wanted(cid, hashlib.sha256(b"something else").hexdigest(), len(data), "dataset 1")
        too_big = Wanted(cid, hashlib.sha256(data).hexdigest(), 262_144, "dataset 2")
        sync = PinSync(here, tmp_path / pins.LEDGER_FILE, report=lambda line: None)
        assert sync.sync([wrong_digest]) == 0
        assert "sha256 mismatch" in sync.summary()["errors"][cid]
        assert not here.pinned(cid)
        sync.failing.clear()
        assert sync.sync([too_big]) == 0
        assert "more than the 262144 bytes" in sync.summary()["errors"][cid]
        assert not here.pinned(cid)
