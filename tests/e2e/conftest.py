"""Fixtures for e2e tests: real CometBFT v0.39.4 nodes and our ABCI app, on loopback, free ports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from abci_app import localnet
from tests.e2e.helpers import poke

VALIDATORS = 4
# The tests stop one validator for a while and then crash another: with staking's
# default downtime rule (10 misses in 20 heights) the first would be jailed, and
# two of the remaining three would then be too few (2/3 is not > 2/3).
APP_STATE = {"staking": {"params": {"downtime_window": 1000, "downtime_max_missed": 1000}}}


def require_cometbft() -> None:
    """Fail, never skip: e2e tests that silently vanish in CI prove nothing."""
    if not localnet.COMETBFT.exists():
        pytest.fail(f"CometBFT binary missing at {localnet.COMETBFT}: run `make install-go` (`make test` does it first)", pytrace=False)


def require_kubo() -> None:
    from abci_app.ipfs import node as kubo

    if not kubo.IPFS.exists():
        pytest.fail(f"Kubo binary missing at {kubo.IPFS}: run `make install`", pytrace=False)


@contextmanager
def running_swarm(root: Path, n: int) -> Iterator:
    """n Kubo nodes in one private swarm under `root`, started; their logs printed if the test fails; always stopped."""
    from abci_app.ipfs import node as kubo

    require_kubo()
    swarm = kubo.Swarm.create(root, n)
    try:
        swarm.start()
        yield swarm
    except BaseException:
        for n in swarm.nodes:
            print(f"--- {n.log_path}\n{kubo.log_tail(n.log_path)}")
        raise
    finally:
        swarm.stop()


def training_localnet(root: Path, chain_id: str, app_state: dict, model: str, eval_prompts: int = 0) -> localnet.Network:
    """`make localnet`'s network (4 validators, Kubo nodes, validator workers, a block a second) with
    `model` as version 0, evaluated on `eval_prompts` prompts; created, not started."""
    require_cometbft()
    require_kubo()
    model_path, corpus_path = localnet.genesis_assets(model, echo=lambda *_: None)
    metrics = localnet.genesis_metrics(model_path, corpus_path, eval_prompts, echo=lambda *_: None) if eval_prompts else None
    return localnet.create(root, validators=4, chain_id=chain_id, app_state=app_state, ipfs=True, genesis_model=model_path,
                           corpus=corpus_path, workers=True, empty_blocks_interval="1s", genesis_model_metrics=metrics)


def log_tails(net: localnet.Network, lines: int = 20) -> str:
    out = []
    for node in net.nodes:
        for kind in ("cometbft", "app"):
            path = node.log_path(kind)
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(out)


def serve(net: localnet.Network, height: int = 2, poke_first: bool = True, timeout: float = 60.0) -> Iterator[localnet.Network]:
    """For module fixtures (`yield from serve(net)`): start `net`, wait until `height`,
    yield it; print the logs if starting fails; always stop every process."""
    try:
        net.start()
        net.wait_for_blocks(1, timeout=timeout)
        if height > 1:
            if poke_first:
                poke(net)  # create_empty_blocks = false: the chain waits at height 1 until a tx arrives
            net.wait_for_blocks(height, timeout=timeout)
        yield net
    except BaseException:
        print(log_tails(net))
        raise
    finally:
        net.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    """On a failed e2e test, attach the tail of every node's logs to the report."""
    outcome = yield
    report = outcome.get_result()
    net = getattr(item, "funcargs", {}).get("network")
    if report.failed and isinstance(net, localnet.Network):
        report.sections.append(("localnet logs", log_tails(net)))


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[localnet.Network]:
    """A started 4-validator network of our app, at height >= 2; always stopped afterwards."""
    require_cometbft()
    root: Path = tmp_path_factory.mktemp("localnet")
    yield from serve(localnet.create(root, validators=VALIDATORS, chain_id="gradchain-e2e", app_state=APP_STATE))
