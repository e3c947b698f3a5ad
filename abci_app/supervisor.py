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

`Supervisor` (at the end) keeps a set of such children running in the
foreground for `gradchain node start`: restarts with back-off, a child's
dependents restarted after it, size-based log rotation, a JSON status file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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


# --- a foreground supervisor: restart with back-off, dependencies, log rotation ---
# `gradchain node start` runs its children under `Supervisor.run()` in the
# foreground (systemd restarts the supervisor itself). The localnet keeps its
# detached children and uses the same `spawn`/`Child` underneath.

LOG_MAX_BYTES = 50 * 1024 * 1024  # a child's log is rotated past this size
LOG_KEEP = 3  # rotated logs kept: NAME.log.1 (newest) .. NAME.log.3


@dataclass(frozen=True)
class Backoff:
    """Seconds before restart number n of a crashing child: initial * 2**n, at most `maximum`;
    a child that stayed up `stable` seconds before it crashed starts again from `initial`."""

    initial: float = 1.0
    maximum: float = 60.0
    stable: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.initial * 2 ** min(failures, 32), self.maximum)


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child under a `Supervisor`."""

    name: str  # short: "app", "cometbft", "ipfs", "worker"
    argv: list[str]
    env: Mapping[str, str] | None
    log_path: Path
    pid_path: Path
    ready: Callable[[], bool]  # serves (port open, RPC answers)
    marker: str | None = None  # default argv[0]; see spawn
    after: tuple[str, ...] = ()  # children it needs: it starts after them and restarts when they do
    cwd: Path | None = None


@dataclass
class ChildState:
    spec: ChildSpec
    child: Child | None = None
    state: str = "down"  # down · starting · up · waiting (back-off or a dependency) · stopped
    restarts: int = 0  # times it was started again after the first start
    failures: int = 0  # crashes in a row: the back-off exponent
    started_at: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None

    def as_dict(self) -> dict:
        pid = self.child.pid if self.child is not None else None
        return {"name": self.spec.name, "pid": pid, "state": self.state, "up": self.state == "up",
                "restarts": self.restarts, "last_exit": self.last_exit, "log": str(self.spec.log_path)}


def rotate_log(path: Path, max_bytes: int = LOG_MAX_BYTES, keep: int = LOG_KEEP) -> bool:
    """Past `max_bytes`, copy the log to PATH.1 (older ones shift up to PATH.keep) and truncate it; True if rotated.

    Copy-then-truncate, as logrotate's copytruncate: the child keeps writing to its
    O_APPEND descriptor, whose next write lands at the new end of the emptied file.
    """
    path = Path(path)
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except OSError:
        return False
    try:
        for n in range(keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{n + 1}"))
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    except OSError:
        # A full disk must not end supervision; truncating still frees the space the log took.
        pass
    with open(path, "r+b") as log:
        log.truncate(0)
    return True


class Supervisor:
    """Keeps a set of children running in the foreground until told to stop.

    Children start in the order given, each once its `after` children are up. A
    child that exits is started again after a back-off; the children that need it
    are stopped and start again once it is up (CometBFT exits when its app dies:
    the app comes back first). `status_path` gets a JSON snapshot after every
    change, for `gradchain node status` in another process.
    """

    def __init__(self, specs: list[ChildSpec], *, status_path: Path | None = None, echo: Callable[[str], None] = print,
                 backoff: Backoff = Backoff(), start_timeout: float = 60.0, log_max_bytes: int = LOG_MAX_BYTES,
                 log_keep: int = LOG_KEEP, poll: float = 0.2) -> None:
        names = [spec.name for spec in specs]
        for spec in specs:
            unknown = [n for n in spec.after if n not in names[: names.index(spec.name)]]
            if unknown:
                raise ValueError(f"{spec.name} needs {unknown}, which are not listed before it")
        self.children = {spec.name: ChildState(spec) for spec in specs}
        self.status_path = status_path
        self.echo = echo
        self.backoff = backoff
        self.start_timeout = start_timeout
        self.log_max_bytes = log_max_bytes
        self.log_keep = log_keep
        self.poll = poll
        self._stop_requested = False
        self._status_failing = False

    # --- control -----------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        """Ask `run` to stop every child and return (the SIGTERM/SIGINT handler)."""
        self._stop_requested = True

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Supervise until SIGTERM/SIGINT (or `until()` holds), then stop every child, last started first."""
        handlers = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self._stop_requested and not (until is not None and until()):
                self.step()
                time.sleep(self.poll)
        finally:
            self.stop()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Terminate every child, last in the list first; idempotent. One child that cannot be
        stopped cleanly does not keep the others running."""
        failed = []
        for state in reversed(list(self.children.values())):
            try:
                if state.child is not None:
                    state.child.terminate()
                    state.last_exit = state.child.returncode
                if state.state != "stopped":
                    self._set(state, "stopped")
            except Exception as exc:  # noqa: BLE001 - reported below, after every child had its turn
                failed.append(f"{state.spec.name}: {exc}")
        if failed:
            self.echo(f"could not stop cleanly: {'; '.join(failed)}")

    # --- one pass of the loop ------------------------------------------------------

    def step(self, now: float | None = None) -> None:
        """Notice exits, start what is due, promote children that became ready, rotate big logs."""
        now = time.monotonic() if now is None else now
        for state in self.children.values():
            if state.state in ("starting", "up") and not state.child.is_running():
                self._crashed(state, now)
        for state in self.children.values():
            if state.state == "starting":
                if state.spec.ready():
                    self._set(state, "up")
                elif now - state.started_at > self.start_timeout:
                    state.child.terminate()
                    self._crashed(state, now, f"not ready within {self.start_timeout:.0f}s")
            elif state.state in ("down", "waiting") and now >= state.next_start and self._needs_met(state):
                self._start(state, now)
        for state in self.children.values():
            rotate_log(state.spec.log_path, self.log_max_bytes, self.log_keep)

    def _needs_met(self, state: ChildState) -> bool:
        return all(self.children[name].state == "up" for name in state.spec.after)

    def _start(self, state: ChildState, now: float) -> None:
        spec = state.spec
        if state.child is not None:
            state.restarts += 1
        state.child = spawn(spec.name, spec.argv, spec.env, spec.log_path, spec.pid_path, marker=spec.marker, cwd=spec.cwd)
        state.started_at = now
        self._set(state, "starting")

    def _crashed(self, state: ChildState, now: float, why: str = "") -> None:
        state.last_exit = state.child.returncode
        if now - state.started_at >= self.backoff.stable:
            state.failures = 0
        state.next_start = now + self.backoff.delay(state.failures)
        state.failures += 1
        reason = why or f"exited with code {state.last_exit}"
        last_line = log_tail(state.spec.log_path, 1, indent="").strip()
        self._set(state, "waiting", f"{reason}; restart in {state.next_start - now:.1f}s; last log line: {last_line[:200]}")
        for other in self.children.values():  # whoever needs it goes down with it and comes back after it
            if state.spec.name in other.spec.after and other.state in ("starting", "up"):
                other.child.terminate()
                other.last_exit = other.child.returncode
                other.next_start = 0.0
                self._set(other, "waiting", f"stopped: {state.spec.name} is down")

    # --- status --------------------------------------------------------------------

    def status(self) -> list[dict]:
        return [state.as_dict() for state in self.children.values()]

    def _set(self, state: ChildState, new: str, note: str = "") -> None:
        state.state = new
        pid = state.child.pid if state.child is not None else None
        self.echo(f"{state.spec.name:<9} {new:<8} pid {pid or '-':<7} restarts {state.restarts}" + (f"  ({note})" if note else ""))
        if self.status_path is not None:
            data = {"supervisor_pid": os.getpid(), "updated": int(time.time()), "children": self.status()}
            tmp = Path(self.status_path).with_suffix(".tmp")
            try:
                tmp.write_text(json.dumps(data, indent=2) + "\n")
                tmp.replace(self.status_path)
            except OSError as exc:
                # The status file is for `node status`; a full disk must not end supervision of the children.
                if not self._status_failing:
                    self.echo(f"cannot write {self.status_path} ({exc}): `node status` shows stale data until it can")
                self._status_failing = True
            else:
                self._status_failing = False
