"""The explorer's chat: a registered version, pulled and verified once, answering many browser conversations.

The checkpoint comes through the same verified pull as `gradchain model pull`
(abci_app.models.Cache: CID and sha256 against the registry entry the explorer's
node reports, config against its config hash) into the explorer's own cache,
and is loaded with the same family loader and Conversation as `gradchain chat`.
The explorer trusts its node: a node that lies about the registry can make it
serve another checkpoint under a version's name (never run code: safetensors).

Chat never holds the page threads: each admitted answer runs in its own thread
(at most MAX_ACTIVE at once; the rest are refused at once as busy), one answer
is generated at a time (torch uses the cores) for at most ANSWER_SECONDS, and an
answer whose browser left stops at the next token and frees the model. One
model is kept loaded; a failed load is not retried for LOAD_BACKOFF_S, and a
visitor's choice of version may switch the loaded model at most once per
SWITCH_INTERVAL_S.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abci_app.cli.common import CliError
from abci_app.cli.model import Conversation
from abci_app.client import ChainClient, ChainError
from abci_app.ipfs.client import IpfsClient, IpfsError
from abci_app.ipfs.download import VerificationError
from abci_app.models import Cache, ModelError, version_entry

log = logging.getLogger(__name__)

MAX_CONVERSATIONS = 64  # browser sessions remembered; the least recently used is forgotten first
CONVERSATION_IDLE_S = 3600.0  # a conversation unused this long is forgotten whatever the count
MAX_FAILED_LOADS = 16  # failed versions remembered for the back-off
MAX_MESSAGE_CHARS = 2_000
MAX_NEW_TOKENS = 120
PULL_TIMEOUT = 120.0  # seconds IPFS may take to find the checkpoint
MAX_ACTIVE = 5  # answers generating or waiting their turn; more are refused at once ("busy")
ANSWER_SECONDS = 30.0  # wall clock per answer, on top of MAX_NEW_TOKENS
LOAD_BACKOFF_S = 60.0  # a version that failed to load is not tried again for this long
SWITCH_INTERVAL_S = 30.0  # a visitor's version choice may replace the loaded model at most this often
WAIT_POLL_S = 0.2  # how often a waiting answer looks whether its browser left
LOAD_ERRORS = (ModelError, ChainError, IpfsError, VerificationError, OSError, ValueError)


class ChatError(Exception):
    """A chat that cannot go on (no such version, a checkpoint that fails its checks, an empty message); one line."""


class Busy(ChatError):
    """The chat cannot take this request now (too many waiting, a load in progress or just done); try again."""


class Left(Exception):
    """The browser went away while the answer waited for its turn."""


def _acquire(lock: threading.Lock, cancelled: threading.Event) -> None:
    """Take `lock`, giving up (Left) once `cancelled` is set: a waiter whose browser left never queues on."""
    while not lock.acquire(timeout=WAIT_POLL_S):
        if cancelled.is_set():
            raise Left


@dataclass
class Loaded:
    entry: dict[str, Any]  # the registry entry the verified file matched
    family: Any
    model: Any


class ChatHost:
    def __init__(self, node: str, ipfs: str, home: Path, scrub: Callable[[str], str] = lambda text: text):
        """`scrub` rewrites a line before visitors see it (the server hides internal URLs)."""
        self.node, self.ipfs, self.cache, self.scrub = node, ipfs, Cache(home), scrub
        self._loaded: Loaded | None = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._conversations: OrderedDict[str, tuple[int, Conversation, float]] = OrderedDict()  # session -> (version, it, last used)
        self._failed: dict[tuple[int, str], tuple[float, str]] = {}  # (id, sha256) -> (when, why): not retried for a while
        self._last_load = float("-inf")  # monotonic start of the last load a visitor's version choice caused
        self._admit = threading.Lock()  # guards `active` and the conversations (touched by answer threads and the event loop)
        self.active = 0  # admitted answers not yet finished (ChatHost.admit)
        self.state = {"status": "idle", "version": None, "cid": None, "error": None}  # for the chat page's status line

    def admit(self) -> bool:
        """Take one of MAX_ACTIVE places; False when all are taken (the caller answers busy, holding nothing)."""
        with self._admit:
            if self.active >= MAX_ACTIVE:
                return False
            self.active += 1
            return True

    def release(self) -> None:
        with self._admit:
            self.active -= 1

    # --- loading ---------------------------------------------------------------

    def load(self, version: int | None, cancelled: threading.Event | None = None, chosen: bool = False) -> Loaded:
        """The verified, loaded model of `version` (latest when None); pulled and loaded only when it is not the one held.
        `chosen`: a visitor picked the version, so it may replace the loaded model only once per SWITCH_INTERVAL_S
        (Busy otherwise); a version that failed to load is refused for LOAD_BACKOFF_S. Waiting for another load
        ends (Left) once `cancelled` is set."""
        try:
            with ChainClient(self.node) as chain:
                entry = version_entry(chain, version)
        except (ModelError, ChainError) as exc:
            raise ChatError(self.scrub(str(exc))) from None
        _acquire(self._load_lock, cancelled or threading.Event())
        try:
            held = self._loaded
            if held is not None and held.entry["id"] == entry["id"] and held.entry["sha256"] == entry["sha256"]:
                return held
            key = (entry["id"], entry["sha256"])
            failed = self._failed.get(key)
            now = time.monotonic()
            if failed is not None and now - failed[0] < LOAD_BACKOFF_S:
                raise ChatError(f"version {entry['id']} could not be loaded {now - failed[0]:.0f}s ago ({failed[1]}); "
                                f"the explorer tries again after {LOAD_BACKOFF_S:.0f}s")
            if now - self._last_load < SWITCH_INTERVAL_S:
                if chosen:  # the latest is always loaded (the chain decides how often it changes); a visitor's pick waits
                    loaded_now = f"v{held.entry['id']} is loaded and " if held is not None else ""
                    raise Busy(f"the model is busy: {loaded_now}a model was loaded {now - self._last_load:.0f}s ago; "
                               f"ask for v{entry['id']} again in {SWITCH_INTERVAL_S - (now - self._last_load):.0f}s")
            self._last_load = now
            self.state = {"status": "loading", "version": entry["id"], "cid": entry["cid"], "error": None}
            try:
                loaded = self._pull_and_load(entry)
            except LOAD_ERRORS as exc:
                why = self.scrub(_public(exc))
                self._failed[key] = (time.monotonic(), why)
                while len(self._failed) > MAX_FAILED_LOADS:
                    self._failed.pop(next(iter(self._failed)))
                self.state = {"status": "failed", "version": entry["id"], "cid": entry["cid"], "error": why}
                log.warning("chat: version %s could not be loaded: %s", entry["id"], exc)
                raise ChatError(f"version {entry['id']} could not be loaded: {why}") from None
            self._loaded = loaded
            self.state = {"status": "ready", "version": entry["id"], "cid": entry["cid"], "error": None}
            return loaded
        finally:
            self._load_lock.release()

    def _pull_and_load(self, entry: dict) -> Loaded:
        from abci_app.ml import determinism
        from abci_app.ml.family import load_model

        with IpfsClient(self.ipfs) as ipfs:
            pulled = self.cache.pull_model(entry, ipfs, timeout=PULL_TIMEOUT)
        determinism.pin(1)  # as `gradchain chat`: answers need not match validators' bits, and one thread leaves the node its cores
        family, model = load_model(pulled.path, expect_config_hash=entry["config_hash"])
        log.info("chat: loaded version %s (%s) cid %s from %s", entry["id"], entry["family"], entry["cid"], pulled.path)
        return Loaded(entry, family, model)

    def preload(self) -> threading.Thread:
        """Load the latest version in the background, so the first visitor does not wait for the pull."""

        def run() -> None:
            try:
                self.load(None)
            except ChatError as exc:
                log.warning("chat: %s", exc)

        thread = threading.Thread(target=run, name="chat-preload", daemon=True)
        thread.start()
        return thread

    # --- conversations ----------------------------------------------------------

    def reset(self, session: str) -> None:
        with self._admit:  # the event loop's thread, while an answer's thread may be evicting
            self._conversations.pop(session, None)

    def _conversation(self, session: str, loaded: Loaded) -> Conversation:
        from abci_app.ml.generate import SamplingParams

        now = time.monotonic()
        with self._admit:
            held = self._conversations.get(session)
            if held is not None and held[0] == loaded.entry["id"]:
                self._conversations[session] = (held[0], held[1], now)
                self._conversations.move_to_end(session)
                return held[1]
        conversation = Conversation(loaded.family, loaded.model, SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.8, seed=0))
        with self._admit:
            self._conversations[session] = (loaded.entry["id"], conversation, now)
            self._conversations.move_to_end(session)
            while len(self._conversations) > MAX_CONVERSATIONS or now - next(iter(self._conversations.values()))[2] > CONVERSATION_IDLE_S:
                self._conversations.popitem(last=False)
        return conversation

    def reply(self, session: str, message: str, version: int | None, cancelled: threading.Event | None = None,
              seconds: float = ANSWER_SECONDS) -> Iterator[dict]:
        """One answer as events: {version, cid, family, templated} first, then {text} pieces, then {done};
        {error} instead when it cannot answer ({error, busy: true} when it should be asked again later).
        A new version starts a new conversation. Stops once `cancelled` is set or after `seconds`."""
        cancelled = cancelled or threading.Event()
        text = message.strip()
        if not text:
            yield {"error": "the message is empty"}
            return
        if len(text) > MAX_MESSAGE_CHARS:
            yield {"error": f"the message is {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}"}
            return
        try:
            loaded = self.load(version, cancelled, chosen=version is not None)
        except Busy as exc:
            yield {"error": str(exc), "busy": True}
            return
        except ChatError as exc:
            yield {"error": str(exc)}
            return
        except Left:
            return
        entry = loaded.entry
        try:
            _acquire(self._generate_lock, cancelled)
        except Left:
            return
        try:
            deadline = time.monotonic() + seconds
            conversation = self._conversation(session, loaded)
            yield {"version": entry["id"], "cid": entry["cid"], "sha256": entry["sha256"], "family": entry["family"],
                   "templated": conversation.templated}
            try:
                stream = conversation.reply(text)
            except CliError as exc:
                yield {"error": str(exc)}
                return
            try:
                for piece in stream:
                    if cancelled.is_set():
                        return
                    yield {"text": piece}
                    if time.monotonic() > deadline:
                        yield {"error": f"the answer was cut at the explorer's limit of {seconds:.0f}s", "cut": True}
                        break
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # a browser that left mid-answer: the partial answer stays in the history
        finally:
            self._generate_lock.release()
        yield {"done": True, "turns": conversation.turn}

    def run_answer(self, session: str, message: str, version: int | None, push: Callable[[dict | None], None]) -> threading.Event:
        """Run reply() in its own thread (never a page thread), handing each event to `push` and then None;
        the caller must have been admitted and sets the returned event when its browser leaves."""
        cancelled = threading.Event()

        def run() -> None:
            try:
                for event in self.reply(session, message, version, cancelled):
                    push(event)
            except Exception:  # the thread's last word: the log has the trace, the browser one line
                log.exception("chat: answer failed")
                push({"error": "the chat failed on this message (the explorer's log has the details)"})
            finally:
                self.release()
                push(None)

        threading.Thread(target=run, name="chat-answer", daemon=True).start()
        return cancelled


def _public(exc: BaseException) -> str:
    """A load failure as visitors may read it: the kind and the gist, never a local path (OSError names files)."""
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or 'a file could not be read or written'} (the explorer's log has the path)"
    return " ".join(str(exc).split())[:300]
