"""Background processes that outlive the Python process that started them.

One `Child` per process: it runs in its own session (so its own process group:
it survives the command that started it, and a signal to the group reaches
anything it forked), with stdout and stderr appended to `log_path` and its pid
in `pid_path`. A later process finds it again from the pid file:

    child = spawn("node0 app", argv, env, log_path, pid_path, marker=home)
    child.wait_ready(lambda: port_listening(26658), timeout=30)
    ...
    Child("node0 app", log_path, pid_path, marker=home).terminate()   # from any process

A pid from the file counts only if that process is alive and carries `marker`
in its argv (default: the program, argv[0]), so a pid the kernel reused for
another program is not mistaken for ours. Used by the localnet (CometBFT, app,
Kubo, worker per node) and by the Kubo node manager (abci_app.ipfs.node).
Linux only: liveness and argv are read from /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
POLL_SECONDS = 0.1  # between readiness checks
GONE_POLL_SECONDS = 0.05  # between checks that a terminated child is gone


class SupervisorError(Exception):
    """A child did not come up; `child` says which one."""

    def __init__(self, child: Child, message: str) -> None:
        super().__init__(message)
        self.child = child


class ChildExited(SupervisorError):
    """The child exited while we waited for it to become ready."""

    def __init__(self, child: Child) -> None:
        self.returncode = child.returncode
        super().__init__(child, f"{child.name} exited with code {self.returncode} at start; last lines of {child.log_path}:\n{child.log_tail()}")


class ChildNotReady(SupervisorError):
    """The child still runs but was not ready within the timeout."""

    def __init__(self, child: Child, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(child, f"{child.name} did not come up within {timeout:.0f}s; last lines of {child.log_path}:\n{child.log_tail()}")


def log_tail(path: Path, lines: int = 15, indent: str = "    ") -> str:
    """The last `lines` lines of a log, each indented, for an error message; says so if there is no log."""
    try:
        tail = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"{indent}(no log at {path})"
    return "\n".join(indent + line for line in tail) or f"{indent}(log is empty)"


def process_exists(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def proc_argv(pid: int) -> list[str] | None:
    """argv of a live (non-zombie) process, or None."""
    if not process_exists(pid):
        return None
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None


def port_listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, read from /proc so the child never sees a probe connection."""
    target = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(f[1].endswith(target) and f[3] == "0A" for f in (line.split() for line in lines)):
            return True
    return False


class Child:
    """One supervised process, found by its pid file; `spawn` starts one, the constructor only attaches."""

    def __init__(self, name: str, log_path: Path, pid_path: Path, marker: str, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.name = name  # for messages: "node0 app", "ipfs daemon for /repo"
        self.log_path = Path(log_path)
        self.pid_path = Path(pid_path)
        self.marker = marker  # an argv element that tells this child apart from a process that reused its pid
        self._proc = proc  # set when this Python process started it: exact exit status, and reaping

    def __repr__(self) -> str:
        return f"Child({self.name!r}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        """Its pid if it runs, else None."""
        if self._proc is not None:  # our own child: its exit status is the truth (and poll() reaps it)
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int(self.pid_path.read_text())
        except (OSError, ValueError):
            return None
        argv = proc_argv(pid)
        return pid if argv is not None and self.marker in argv else None

    def is_running(self) -> bool:
        return self.pid is not None

    @property
    def returncode(self) -> int | None:
        """Its exit status once it exited, if this process started it; else None."""
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_path, lines)

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        """Poll `ready()` until it holds; ChildExited if the child dies first, ChildNotReady after `timeout` seconds."""
        wait_all_ready([(self, ready)], timeout)

    def send_signal(self, sig: int) -> None:
        """Send `sig` to its process group; ProcessLookupError if it is gone."""
        pid = self.pid
        if pid is None:
            raise ProcessLookupError(f"{self.name} is not running")
        os.killpg(pid, sig)

    def wait_gone(self, timeout: float) -> bool:
        """Wait until it no longer runs; False if it still does after `timeout` seconds."""
        pid = self.pid
        return pid is None or self._wait_gone(pid, timeout)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        # `pid` was identified as this child already: a dying process loses its argv before it exits
        deadline = time.monotonic() + timeout
        while (self._proc.poll() is None) if self._proc is not None else process_exists(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(GONE_POLL_SECONDS)
        return True

    def terminate(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM its process group, SIGKILL after `timeout` seconds; then remove the pid file. Idempotent."""
        pid = self.pid
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGTERM)
                if not self._wait_gone(pid, timeout):
                    os.killpg(pid, signal.SIGKILL)
                    self._wait_gone(pid, timeout)
            except ProcessLookupError:
                pass
        self.pid_path.unlink(missing_ok=True)


def spawn(name: str, argv: list[str], env: Mapping[str, str] | None, log_path: Path, pid_path: Path, *,
          marker: str | None = None, cwd: Path | None = None) -> Child:
    """Start `argv` in its own session, output appended to `log_path` after a header line, pid written to `pid_path`.

    `marker` (default argv[0]) must be one of argv's elements: it identifies the child later.
    stdin is closed, so a child that would prompt fails instead of hanging.
    """
    marker = argv[0] if marker is None else marker
    if marker not in argv:
        raise ValueError(f"marker {marker!r} is not in argv {argv!r}")
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env=None if env is None else dict(env), start_new_session=True)
    Path(pid_path).write_text(f"{proc.pid}\n")
    return Child(name, log_path, pid_path, marker, proc)


def wait_all_ready(waits: Iterable[tuple[Child, Callable[[], bool]]], timeout: float) -> None:
    """Wait until every child's `ready()` holds, polling them in turn, so children started together come up together.

    Raises ChildExited for the first child found dead, ChildNotReady for the first still
    unready one once `timeout` seconds passed.
    """
    deadline = time.monotonic() + timeout
    pending = list(waits)
    while pending:
        for wait in list(pending):
            child, ready = wait
            if ready():
                pending.remove(wait)
                continue
            if not child.is_running():
                raise ChildExited(child)
            if time.monotonic() > deadline:
                raise ChildNotReady(child, timeout)
        if pending:
            time.sleep(POLL_SECONDS)
