"""Helpers for e2e tests (and bench/) against a running localnet: signed transfers, balances, app hashes,
the CLI, governance proposals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import defaultdict
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from abci_app import tx as txlib
from abci_app.client import ChainClient
from abci_app.keyring import TEST_BACKEND_WARNING, Keyring
from abci_app.localnet import REPO_ROOT, Network
from abci_app.rpc import RpcClient, RpcError, TxResult

FEE = 1
MAX_IN_FLIGHT = 8  # per sender, in nonce order to one node: CheckTx admits only contiguous nonces


@dataclass(frozen=True)
class Transfer:
    sender: str  # key name in the network's keyring
    recipient: str  # address
    amount: int


def query_int(client: RpcClient, path: str, address: str) -> int:
    result = client.abci_query(path, address.encode())
    assert result.code == 0, f"query {path} {address} failed: {result.log}"
    return int(result.value.decode() or "0")


def balance(client: RpcClient, address: str) -> int:
    return query_int(client, "/bank/balance", address)


def send_transfers(
    net: Network,
    transfers: list[Transfer],
    nodes: list[int] | None = None,
    timeout: float = 180.0,
    stop: threading.Event | None = None,
) -> list[TxResult]:
    """Sign and broadcast `transfers`, wait until all are committed; results in order.

    Each sender runs in its own thread with its own ChainClient pipeline, which
    sends its txs in nonce order, always to the same node of `nodes` (so gossip
    cannot reorder them), with at most MAX_IN_FLIGHT uncommitted, each awaited
    for up to `timeout` seconds. CheckTx rejections raise at once (TxRejected).
    `stop` ends sending early (the txs already sent are still awaited and returned).
    """
    nodes = list(range(len(net.nodes))) if nodes is None else nodes
    keyring = Keyring(net.keyring_home)
    by_sender: dict[str, list[int]] = defaultdict(list)
    for index, transfer in enumerate(transfers):
        by_sender[transfer.sender].append(index)
    results: dict[int, TxResult] = {}

    def run(slot: int, sender: str) -> None:
        with ChainClient(net.rpc_url(nodes[slot % len(nodes)])) as chain:
            pipeline = chain.pipeline(keyring.get(sender), fee=FEE, window=MAX_IN_FLIGHT, timeout=timeout)
            sent: dict[int, str] = {}
            for index in by_sender[sender]:
                if stop is not None and stop.is_set():
                    break
                t = transfers[index]
                sent[index] = pipeline.send(txlib.MsgSend(recipient=t.recipient, amount=t.amount))
            committed = pipeline.wait_all()
        results.update((index, committed[tx_hash]) for index, tx_hash in sent.items())

    with ThreadPoolExecutor(max_workers=len(by_sender)) as pool:
        futures = [pool.submit(run, slot, sender) for slot, sender in enumerate(by_sender)]
        for future in futures:
            future.result()
    return [results[i] for i in sorted(results)]


def poke(net: Network, node: int = 0) -> TxResult:
    """One transfer (faucet -> dev0), to make a block: with create_empty_blocks = false nothing else does."""
    return send_transfers(net, [Transfer("faucet", net.account("dev0").address, 1)], nodes=[node])[0]


def header_app_hashes(net: Network, height: int, nodes: list[int] | None = None) -> dict[int, str]:
    """app_hash of the header at `height` as each node stores it (the state after height-1)."""
    hashes = {}
    for i in range(len(net.nodes)) if nodes is None else nodes:
        with net.client(i) as client:
            hashes[i] = client.header(height)["app_hash"]
    return hashes


def latest_heights(net: Network, nodes: list[int] | None = None) -> dict[int, int]:
    heights = {}
    for i in range(len(net.nodes)) if nodes is None else nodes:
        with net.client(i) as client:
            heights[i] = client.latest_height()
    return heights


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except RpcError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


# --- CLI results ---------------------------------------------------------------


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    # The localnet's keyring is the plain `test` backend, which says so first on every use.
    stderr = result.stderr.removeprefix(TEST_BACKEND_WARNING + "\n")
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), result.stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, result.stderr


def json_out(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return json.loads(result.stdout)


# --- the gradchain CLI and worker daemons, as a user runs them ---------------------


GRADCHAIN = shutil.which("gradchain", path=str(Path(sys.executable).parent)) or "gradchain"  # the venv's console script


def cli_argv(*args: str) -> list[str]:
    return [GRADCHAIN, *args]


def cli_env() -> dict[str, str]:
    """This clone's code first on the path: the venv is shared between clones, its editable install may point at another."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}


def gradchain(net: Network, *args: str, node: int = 0, home: Path | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """The CLI as a user runs it from a shell: the network's keyring (or `home`), node `node`'s RPC and Kubo API."""
    env = cli_env() | {"GRADCHAIN_HOME": str(home or net.keyring_home), "GRADCHAIN_NODE": net.rpc_url(node)}
    if net.nodes[node].ipfs_api_port:
        env["GRADCHAIN_IPFS"] = net.nodes[node].ipfs_url
    env.pop("GRADCHAIN_DEBUG", None)
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, env=env, timeout=timeout)


def run_cli(net: Network, *args: str, node: int = 0, timeout: float = 120.0) -> str:
    """`gradchain ARGS` against node `node`; its stdout (it must succeed)."""
    result = gradchain(net, *args, node=node, timeout=timeout)
    assert result.returncode == 0, f"gradchain {' '.join(args)} exited {result.returncode}: {result.stderr}"
    return result.stdout


def run_json(net: Network, *args: str, node: int = 0) -> object:
    return json.loads(run_cli(net, *args, "-o", "json", node=node))


# --- governance, through the CLI as the README's Governance section uses it -------------


GOV_MIN_DEPOSIT = 1_000


def short_gov(voting_blocks: int) -> dict:
    """app_state for a test network's gov: a small deposit and windows of a few blocks, so a proposal is decided in seconds."""
    return {"gov": {"params": {"min_deposit": GOV_MIN_DEPOSIT, "expedited_min_deposit": 2 * GOV_MIN_DEPOSIT,
                               "deposit_blocks": 2 * voting_blocks, "voting_blocks": voting_blocks,
                               "expedited_voting_blocks": max(1, voting_blocks // 3)}}}


def validators(net: Network) -> list[str]:
    """The genesis validators' operator keys (validator0..): they hold all the bonded stake, so their votes decide."""
    return [a.name for a in net.accounts if a.name.startswith("validator")]


def proposal(net: Network, proposal_id: int) -> dict:
    return run_json(net, "query", "gov", "proposal", str(proposal_id))


def submit_proposal(net: Network, path: Path, key: str) -> int:
    """`tx gov submit-proposal FILE --from key`; the new proposal's id (the newest)."""
    run_cli(net, "tx", "gov", "submit-proposal", str(path), "--from", key, "--yes")
    return run_json(net, "query", "gov", "proposals")["proposals"][0]["id"]


def vote_all(net: Network, proposal_id: int, options: dict[str, str]) -> None:
    """Each key votes its option, all at once (one key each: no nonce races); every vote must succeed."""
    def vote(item: tuple[str, str]):
        return gradchain(net, "tx", "gov", "vote", str(proposal_id), item[1], "--from", item[0], "--yes")

    with ThreadPoolExecutor(max_workers=len(options)) as pool:
        for (key, _), result in zip(options.items(), pool.map(vote, options.items())):
            assert result.returncode == 0, f"vote by {key}: {result.stderr}"


def makes_empty_blocks(net: Network) -> bool:
    consensus = tomllib.loads((net.nodes[0].home / "config" / "config.toml").read_text())["consensus"]
    return consensus["create_empty_blocks"] or consensus["create_empty_blocks_interval"] not in ("0s", "0")


def wait_decided(net: Network, chain: ChainClient, proposal_id: int) -> dict:
    """The proposal once its voting period is over. A network that makes no empty blocks gets
    one-ugrad transfers (poke) until it passes voting_end: gov windows are counted in blocks."""
    voting_end = proposal(net, proposal_id)["voting_end"]
    blocks_left = max(0, voting_end + 1 - chain.rpc.latest_height())
    if makes_empty_blocks(net):
        wait_until(lambda: chain.rpc.latest_height() > voting_end, blocks_left * 3 + 30, f"height {voting_end + 1}", poll=0.5)
    else:
        for _ in range(blocks_left):  # each poke adds at least one block
            if chain.rpc.latest_height() > voting_end:
                break
            poke(net)
        # The deciding block changes state, so CometBFT adds the block after it even with no tx.
        chain.rpc.wait_for_height(voting_end + 1, timeout=30)
    decided = proposal(net, proposal_id)
    assert decided["result_height"] == voting_end, decided
    return decided


def register_version_by_gov(net: Network, msg: txlib.MsgRegisterVersion, folder: Path, proposer: str = "dev0") -> int:
    """Register a model version the way the chain allows (the registry authority is the gov module account):
    `proposer` submits a proposal carrying `msg` with the whole min deposit, every genesis validator votes
    yes, and the proposal passes at its voting end. The new version's id (node 0 has it)."""
    with ChainClient(net.rpc_url(0)) as chain:
        deposit = chain.query_json("/gov/params")["min_deposit"]
        path = folder / f"register-{msg.sha256[:16]}.json"
        path.write_text(json.dumps({
            "title": "Register a model version", "summary": msg.note or f"register {msg.cid}", "deposit": f"{deposit}ugrad",
            "messages": [{"@type": "register_version", **json_format.MessageToDict(msg, preserving_proto_field_name=True)}],
        }, indent=2))
        proposal_id = submit_proposal(net, path, proposer)
        assert proposal(net, proposal_id)["status"] == "voting_period"
        vote_all(net, proposal_id, {v: "yes" for v in validators(net)})
        decided = wait_decided(net, chain, proposal_id)
        assert decided["status"] == "passed", decided
        latest = chain.query_json("/registry/latest")
    assert latest["cid"] == msg.cid and latest["sha256"] == msg.sha256, latest
    return int(latest["id"])


class Trainers:
    """`gradchain train --once` subprocesses, one per key, each with its own cache dir, node and log."""

    def __init__(self, net: Network, folder: Path, trainers: dict[str, str | None]):
        self.net, self.folder, self.trainers = net, folder, trainers  # key name -> cheat (None: honest)
        self.procs: dict[str, subprocess.Popen] = {}

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def start(self) -> None:
        for slot, (name, cheat) in enumerate(self.trainers.items(), start=1):
            node = self.net.nodes[slot % len(self.net.nodes)]
            argv = cli_argv("train", "--key", name, "--once", "--poll", "1", "--yes", "--home", str(self.net.keyring_home),
                             "--node", node.rpc_url, "--ipfs", node.ipfs_url, "--cache-dir", str(self.folder / name))
            argv += ["--cheat", cheat] if cheat else []
            with open(self.log(name), "wb") as log:
                self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                                    env=cli_env() | {"OMP_WAIT_POLICY": "PASSIVE"}, start_new_session=True)

    def text(self, name: str) -> str:
        return self.log(name).read_text(errors="replace") if self.log(name).exists() else ""

    def ready(self) -> bool:
        """Every trainer has imported torch, pinned its threads and is polling the chain."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"trainer {name} exited with {proc.returncode} before any round:\n{self.text(name)}")
        return all("trainer gc1" in self.text(name) for name in self.procs)

    def done(self) -> bool:
        return all(proc.poll() is not None for proc in self.procs.values())

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=10)
                except ProcessLookupError:
                    pass
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)

    def tails(self, lines: int = 30) -> str:
        return "\n".join(f"--- trainer {name} ({self.log(name)})\n" + "\n".join(self.text(name).splitlines()[-lines:]) for name in self.procs)


def worker_tails(net: Network, lines: int = 30) -> str:
    out = []
    for node in net.nodes:
        path = node.log_path("worker")
        tail = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
        out.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(out)


class Timeline:
    """A long test's deadline (each wait gets what is left of it) and its milestones, for the log."""

    def __init__(self, chain, seconds: float):
        self.chain, self.start = chain, time.monotonic()
        self.deadline = self.start + seconds
        self.milestones: list[str] = []

    def left(self, cap: float) -> float:
        return max(1.0, min(cap, self.deadline - time.monotonic()))

    def mark(self, what: str) -> None:
        self.milestones.append(f"{time.monotonic() - self.start:6.1f}s  height {self.chain.rpc.latest_height():4d}  {what}")

    def __str__(self) -> str:
        return "\n".join(self.milestones)


def bond_trainers(net: Network, names, amount: int, timeout: float) -> None:
    """`gradchain tx staking bond-trainer NAME AMOUNT` for every name at once (each must succeed)."""
    procs = {name: subprocess.Popen(cli_argv("tx", "staking", "bond-trainer", name, str(amount), "-y", "--home", str(net.keyring_home),
                                              "--node", net.rpc_url(0)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
             for name in names}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"bond-trainer {name}: {err}"


def run_round(net: Network, chain, trainers: Trainers, bond: int, timeline: Timeline, decide_s: float, merge_s: float) -> dict:
    """Start the trainers, bond them (which opens round 0), wait until they exit and the round closes; its first view."""
    wait_until(lambda: all(net.pid(i, "worker") for i in range(len(net.nodes))), timeline.left(30), "the validator workers")
    trainers.start()  # first: torch takes seconds to import, so they are polling when the round opens
    wait_until(trainers.ready, timeline.left(180), "the trainers to start", poll=0.5)
    timeline.mark("trainers polling")
    bond_trainers(net, trainers.trainers, bond, timeline.left(60))
    opened = chain.query_json("/training/current")
    assert opened is not None and opened["id"] == 0 and opened["base_version"] == 0
    timeline.mark(f"trainers bonded; round 0 open at {opened['open_height']}, submissions until {opened['submit_until'] - 1}")
    wait_until(trainers.done, timeline.left(decide_s), "the trainers' submissions to be decided", poll=1.0)  # each exits once decided
    timeline.mark("trainers exited")
    for name, proc in trainers.procs.items():
        assert proc.returncode == 0, f"trainer {name} exited {proc.returncode}:\n{trainers.text(name)}"
        assert "submitted delta" in trainers.text(name)
    wait_until(lambda: (chain.query_json("/training/round_detail", "0") or {}).get("phase") == "closed", timeline.left(merge_s),
               "round 0 to merge and close", poll=1.0)
    timeline.mark("round 0 closed")
    return opened


@contextmanager
def training_session(net: Network, folder: Path, trainers: dict[str, str | None], seconds: float):
    """(trainers, chain client, timeline) for one test; on failure prints the milestones and every
    trainer's and worker's log tail; always stops the trainers."""
    procs = Trainers(net, folder, trainers)
    chain = ChainClient(net.rpc_url(0))
    timeline = Timeline(chain, seconds)
    try:
        yield procs, chain, timeline
    except BaseException:
        print(f"{timeline}\n{procs.tails()}\n{worker_tails(net)}")
        raise
    finally:
        procs.stop()
        chain.close()


def assert_same_app_hash(net: Network) -> int:
    """Every node's header at the lowest common height carries the same app hash; that height."""
    common = min(latest_heights(net).values())
    hashes = header_app_hashes(net, common)
    assert len(set(hashes.values())) == 1, hashes
    return common

