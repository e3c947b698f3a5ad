"""abci_app.supervisor.Supervisor with real short-lived children (sh): restarts with back-off, a dependent
restarted after what it needs, start timeouts, log rotation, a clean stop on SIGTERM, the status file.

Times passed to `step(now=...)` are made up, so the back-off schedule is checked without waiting for it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from abci_app import supervisor
from abci_app.supervisor import Backoff, ChildSpec, Supervisor

SH = shutil.which("sh") or "/bin/sh"
WAIT = 10.0  # seconds a real child gets to start or exit; never reached when all is well


def sh_spec(tmp_path: Path, name: str, script: str, ready=lambda: True, after: tuple[str, ...] = ()) -> ChildSpec:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    # the folder in argv is the marker: `sh -c SCRIPT FOLDER` keeps it visible in /proc/PID/cmdline
    return ChildSpec(name, [SH, "-c", script, str(folder)], None, folder / "out.log", folder / "pid", ready, marker=str(folder), after=after)


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def lines() -> list[str]:
    return []


def make(specs, lines, **kwargs) -> Supervisor:
    kwargs.setdefault("backoff", Backoff(initial=1.0, maximum=4.0, stable=100.0))
    return Supervisor(specs, echo=lines.append, **kwargs)


def test_a_crashing_child_is_restarted_with_doubling_backoff(tmp_path: Path, lines: list[str]) -> None:
    sup = make([sh_spec(tmp_path, "app", "exit 3")], lines)
    app = sup.children["app"]
    try:
        now, delays = 0.0, []
        sup.step(now)
        for _ in range(4):
            wait_for(lambda: not app.child.is_running(), "the child to exit")
            sup.step(now)
            assert app.state == "waiting" and app.last_exit == 3
            delays.append(app.next_start - now)
            sup.step(app.next_start - 0.01)  # not yet due
            assert app.state == "waiting"
            now = app.next_start
            sup.step(now)
            assert app.state in ("starting", "up")
        assert delays == [1.0, 2.0, 4.0, 4.0]  # doubled, capped at the maximum
        assert app.restarts == 4
        assert any("exited with code 3; restart in 2.0s" in line for line in lines)
    finally:
        sup.stop()


def test_a_child_that_stayed_up_long_enough_restarts_after_the_initial_delay(tmp_path: Path, lines: list[str]) -> None:
    marker = tmp_path / "go"
    sup = make([sh_spec(tmp_path, "app", f"while [ ! -e {marker} ]; do sleep 0.02; done")], lines)
    app = sup.children["app"]
    try:
        app.failures = 3  # as after three quick crashes
        sup.step(0.0)
        sup.step(0.0)
        assert app.state == "up"
        marker.touch()
        wait_for(lambda: not app.child.is_running(), "the child to exit")
        sup.step(500.0)  # up for 500 s > stable
        assert app.next_start - 500.0 == 1.0
    finally:
        sup.stop()


def test_when_the_app_dies_cometbft_is_stopped_and_comes_back_after_the_app(tmp_path: Path, lines: list[str]) -> None:
    app_ready = threading.Event()
    app_spec = sh_spec(tmp_path, "app", "sleep 60 & wait", ready=app_ready.is_set)
    node_spec = sh_spec(tmp_path, "cometbft", "sleep 60 & wait", after=("app",))
    sup = make([app_spec, node_spec], lines)
    app, node = sup.children["app"], sup.children["cometbft"]
    try:
        sup.step(0.0)
        assert app.state == "starting" and node.state == "down"  # waits for the app to serve
        app_ready.set()
        sup.step(0.0)
        sup.step(0.0)
        assert app.state == "up" and node.state == "up"
        first_node_pid = node.child.pid

        app_ready.clear()
        app.child.send_signal(signal.SIGKILL)
        wait_for(lambda: not app.child.is_running(), "the app to die")
        sup.step(10.0)
        assert app.state == "waiting" and node.state == "waiting"
        assert not node.child.is_running()  # stopped with its app, not left to crash on its own

        sup.step(11.0)  # the app's back-off is over: it starts, the node still waits for it
        assert app.state == "starting" and node.state == "waiting"
        sup.step(11.0)
        assert node.state == "waiting"
        app_ready.set()
        sup.step(11.0)
        sup.step(11.0)
        assert app.state == "up" and node.state in ("starting", "up")
        assert node.child.pid not in (None, first_node_pid)
        order = [line.split()[0] for line in lines if " starting " in line]
        assert order == ["app", "cometbft", "app", "cometbft"]
    finally:
        sup.stop()


def test_a_child_not_ready_within_the_start_timeout_counts_as_a_crash(tmp_path: Path, lines: list[str]) -> None:
    sup = make([sh_spec(tmp_path, "app", "sleep 60 & wait", ready=lambda: False)], lines, start_timeout=5.0)
    app = sup.children["app"]
    try:
        sup.step(0.0)
        sup.step(4.0)
        assert app.state == "starting"
        pid = app.child.pid
        sup.step(6.0)
        assert app.state == "waiting" and app.failures == 1
        assert not supervisor.process_exists(pid)
        assert any("not ready within 5s" in line for line in lines)
    finally:
        sup.stop()


def test_dependencies_must_be_listed_first() -> None:
    spec = ChildSpec("cometbft", ["true"], None, Path("x.log"), Path("x.pid"), lambda: True, after=("app",))
    with pytest.raises(ValueError, match="needs"):
        Supervisor([spec])


def test_rotate_log_keeps_the_newest_copies_and_empties_the_live_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    for generation in range(4):
        log.write_text(f"gen{generation}\n" * 100)
        assert supervisor.rotate_log(log, max_bytes=100, keep=2)
        assert log.read_text() == ""
    assert (tmp_path / "app.log.1").read_text().startswith("gen3")
    assert (tmp_path / "app.log.2").read_text().startswith("gen2")
    assert not (tmp_path / "app.log.3").exists()
    log.write_text("short\n")
    assert not supervisor.rotate_log(log, max_bytes=100, keep=2)


def test_a_running_child_keeps_writing_to_its_rotated_log(tmp_path: Path, lines: list[str]) -> None:
    talk, go = tmp_path / "talk", tmp_path / "go"
    wait = "while [ ! -e {} ]; do sleep 0.02; done"
    script = f"{wait.format(talk)}; i=0; while [ $i -lt 200 ]; do echo line$i; i=$((i+1)); done; {wait.format(go)}; echo after"
    spec = sh_spec(tmp_path, "app", script)
    sup = make([spec], lines, log_max_bytes=500, log_keep=2)
    try:
        sup.step(0.0)  # starts it; its log holds only the header line, under the limit
        talk.touch()
        wait_for(lambda: "line199" in spec.log_path.read_text(), "the output")
        sup.step(0.0)
        assert "line199" in spec.log_path.with_name("out.log.1").read_text()
        go.touch()
        wait_for(lambda: "after" in spec.log_path.read_text(), "output after the rotation")
        assert spec.log_path.read_text().lstrip("\0") == "after\n"  # appended at the new end (no hole kept by the child)
    finally:
        sup.stop()


def test_sigterm_stops_every_child_and_run_returns(tmp_path: Path, lines: list[str]) -> None:
    specs = [sh_spec(tmp_path, "app", "sleep 60 & wait"), sh_spec(tmp_path, "cometbft", "sleep 60 & wait", after=("app",))]
    status = tmp_path / "status.json"
    sup = make(specs, lines, status_path=status, poll=0.02)
    deadline = time.monotonic() + WAIT

    def signal_when_up() -> None:
        while time.monotonic() < deadline and not all(c.state == "up" for c in sup.children.values()):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=signal_when_up)
    thread.start()
    try:
        sup.run(until=lambda: time.monotonic() > deadline)
    finally:
        thread.join()
        sup.stop()
    assert sup._stop_requested  # it was the signal, not the deadline
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back
    pids = [int(spec.pid_path.read_text()) for spec in specs if spec.pid_path.exists()]
    assert pids == []  # terminate removes pid files
    assert [line.split()[:2] for line in lines[-2:]] == [["cometbft", "stopped"], ["app", "stopped"]]  # last started, first stopped
    data = json.loads(status.read_text())
    assert [(c["name"], c["state"], c["up"]) for c in data["children"]] == [("app", "stopped", False), ("cometbft", "stopped", False)]
    assert data["supervisor_pid"] == os.getpid()


def test_a_status_file_that_cannot_be_written_does_not_end_supervision(tmp_path: Path, lines: list[str]) -> None:
    """A full disk (any OSError on the status write) is reported once; children still start, and stop() stops them all."""
    status = tmp_path / "status.json"
    status.with_suffix(".tmp").mkdir()  # writing the status file's temp name fails, as on ENOSPC
    specs = [sh_spec(tmp_path, name, "sleep 30") for name in ("a", "b")]
    sup = make(specs, lines, status_path=status)
    sup.step()
    sup.step()
    children = [sup.children[name].child for name in ("a", "b")]
    assert all(child is not None and child.is_running() for child in children)
    assert sum("cannot write" in line for line in lines) == 1, lines
    sup.stop()
    assert not any(child.is_running() for child in children)
    assert not status.exists()
