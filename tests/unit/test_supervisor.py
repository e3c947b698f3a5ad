"""abci_app.supervisor with real short-lived children (sh, sleep): pid and log files, readiness, termination."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from abci_app import supervisor

SH = shutil.which("sh") or "/bin/sh"
WAIT = 10.0  # seconds we allow a child to start or go; never reached when all is well


def spawn_sh(tmp_path: Path, script: str, name: str = "child") -> supervisor.Child:
    """`sh -c script` as a supervised child; the tmp dir in its argv is its marker (so the script must not exec)."""
    return supervisor.spawn(name, [SH, "-c", script, str(tmp_path)], None, tmp_path / f"{name}.log", tmp_path / f"{name}.pid",
                            marker=str(tmp_path), cwd=tmp_path)


def test_spawn_writes_pid_and_log_and_terminate_stops_it(tmp_path: Path) -> None:
    child = spawn_sh(tmp_path, "echo $((6 * 7)); sleep 60 & wait")  # its output, 42, is not in the header line
    try:
        child.wait_ready(lambda: child.log_path.read_text().endswith("42\n"), WAIT)
        assert child.is_running()
        assert int(child.pid_path.read_text()) == child.pid
        log = child.log_path.read_text()
        assert log.startswith("\n=== ") and f"starting: {SH} -c " in log  # a header line, then the child's output
        attached = supervisor.Child("child", child.log_path, child.pid_path, str(tmp_path))
        assert attached.pid == child.pid  # another process finds it by its pid file
        attached.terminate(timeout=WAIT)
        assert not attached.is_running() and not child.is_running()
        assert not child.pid_path.exists()
        assert child.returncode == -signal.SIGTERM
    finally:
        child.terminate(timeout=WAIT)


def test_a_child_that_dies_is_not_running(tmp_path: Path) -> None:
    child = spawn_sh(tmp_path, "echo boom; exit 3")
    assert child.wait_gone(WAIT)
    assert not child.is_running() and child.pid is None
    assert child.returncode == 3
    with pytest.raises(supervisor.ChildExited, match="child exited with code 3 at start") as exc:
        child.wait_ready(lambda: False, WAIT)
    assert exc.value.child is child and exc.value.returncode == 3
    assert "    boom" in str(exc.value)  # the log tail is in the message


def test_a_child_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    child = spawn_sh(tmp_path, "sleep 60 & wait")
    try:
        with pytest.raises(supervisor.ChildNotReady, match="child did not come up within 0s"):
            child.wait_ready(lambda: False, 0.2)
        assert child.is_running()  # the caller decides whether to stop it
    finally:
        child.terminate(timeout=WAIT)


def test_wait_all_ready_reports_the_child_that_died(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alive = spawn_sh(tmp_path / "a", "sleep 60 & wait", name="alive")
    dead = spawn_sh(tmp_path / "b", "exit 1", name="dead")
    try:
        with pytest.raises(supervisor.ChildExited) as exc:
            supervisor.wait_all_ready([(alive, lambda: False), (dead, lambda: False)], WAIT)
        assert exc.value.child is dead
    finally:
        alive.terminate(timeout=WAIT)


def test_terminate_kills_the_process_group_and_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    # sh ignores SIGTERM (so does the sleep it forks): only the SIGKILL after the timeout stops them
    child = spawn_sh(tmp_path, "trap '' TERM; sleep 60 & echo $! > grandchild; wait")
    grandchild_file = tmp_path / "grandchild"
    try:
        child.wait_ready(lambda: grandchild_file.exists() and grandchild_file.read_text().strip() != "", WAIT)
        grandchild = int(grandchild_file.read_text())
        assert supervisor.proc_argv(grandchild) is not None
        child.terminate(timeout=0.5)
        assert not child.is_running()
        assert child.returncode == -signal.SIGKILL
        assert supervisor.Child("g", tmp_path / "g.log", grandchild_file, "60").wait_gone(WAIT)  # the forked sleep went too
    finally:
        child.terminate(timeout=WAIT)


def test_a_reused_pid_of_another_program_is_not_ours(tmp_path: Path) -> None:
    pid_path = tmp_path / "app.pid"
    pid_path.write_text(f"{os.getpid()}\n")  # alive, but this pytest process does not carry the marker
    child = supervisor.Child("app", tmp_path / "app.log", pid_path, str(tmp_path / "home"))
    assert child.pid is None and not child.is_running()
    child.terminate()  # nothing to signal: only the stale pid file goes
    assert not pid_path.exists()
    with pytest.raises(ProcessLookupError):
        child.send_signal(signal.SIGTERM)


def test_marker_must_be_in_argv(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in argv"):
        supervisor.spawn("x", [SH, "-c", "true"], None, tmp_path / "x.log", tmp_path / "x.pid", marker="/elsewhere")
    assert not (tmp_path / "x.pid").exists()


def test_port_listening_reads_listeners_only() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert not supervisor.port_listening(port)  # bound, not listening
        server.listen()
        assert supervisor.port_listening(port)


def test_log_tail_says_when_there_is_no_log(tmp_path: Path) -> None:
    assert supervisor.log_tail(tmp_path / "none.log") == f"    (no log at {tmp_path / 'none.log'})"
    (tmp_path / "empty.log").write_text("")
    assert supervisor.log_tail(tmp_path / "empty.log") == "    (log is empty)"
    (tmp_path / "x.log").write_text("".join(f"line {i}\n" for i in range(20)))
    assert supervisor.log_tail(tmp_path / "x.log", lines=2, indent="") == "line 18\nline 19"
