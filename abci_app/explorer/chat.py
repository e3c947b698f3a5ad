"""The explorer's chat: a registered version, pulled and verified once, answering many browser conversations.

The checkpoint comes through the same verified pull as `gradchain model pull`
(abci_app.models.Cache: CID and sha256 against the registry entry, config
against its config hash) into the explorer's own cache, and is loaded with the
same family loader and Conversation as `gradchain chat`. One model is kept
loaded (the last one asked for); one answer is generated at a time (torch
uses the cores), others wait their turn.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
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

MAX_CONVERSATIONS = 64  # browser sessions remembered; the oldest is forgotten first
MAX_MESSAGE_CHARS = 2_000
MAX_NEW_TOKENS = 120
PULL_TIMEOUT = 120.0  # seconds IPFS may take to find the checkpoint
LOAD_ERRORS = (ModelError, ChainError, IpfsError, VerificationError, OSError, ValueError)


class ChatError(Exception):
    """A chat that cannot go on (no such version, a checkpoint that fails its checks, an empty message); one line."""


@dataclass
class Loaded:
    entry: dict[str, Any]  # the registry entry the verified file matched
    family: Any
    model: Any


class ChatHost:
    def __init__(self, node: str, ipfs: str, home: Path):
        self.node, self.ipfs, self.cache = node, ipfs, Cache(home)
        self._loaded: Loaded | None = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._conversations: OrderedDict[str, tuple[int, Conversation]] = OrderedDict()
        self.state = {"status": "idle", "version": None, "cid": None, "error": None}  # for the chat page's status line

    # --- loading ---------------------------------------------------------------

    def load(self, version: int | None) -> Loaded:
        """The verified, loaded model of `version` (latest when None); pulled and loaded only when it is not the one held."""
        try:
            with ChainClient(self.node) as chain:
                entry = version_entry(chain, version)
        except (ModelError, ChainError) as exc:
            raise ChatError(str(exc)) from None
        with self._load_lock:
            if self._loaded is not None and self._loaded.entry["id"] == entry["id"] and self._loaded.entry["sha256"] == entry["sha256"]:
                return self._loaded
            self.state = {"status": "loading", "version": entry["id"], "cid": entry["cid"], "error": None}
            try:
                loaded = self._pull_and_load(entry)
            except LOAD_ERRORS as exc:
                self.state = {"status": "failed", "version": entry["id"], "cid": entry["cid"], "error": " ".join(str(exc).split())}
                raise ChatError(f"version {entry['id']} could not be loaded: {self.state['error']}") from None
            self._loaded = loaded
            self.state = {"status": "ready", "version": entry["id"], "cid": entry["cid"], "error": None}
            return loaded

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
        self._conversations.pop(session, None)

    def _conversation(self, session: str, loaded: Loaded) -> Conversation:
        from abci_app.ml.generate import SamplingParams

        held = self._conversations.get(session)
        if held is not None and held[0] == loaded.entry["id"]:
            self._conversations.move_to_end(session)
            return held[1]
        conversation = Conversation(loaded.family, loaded.model, SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.8, seed=0))
        self._conversations[session] = (loaded.entry["id"], conversation)
        while len(self._conversations) > MAX_CONVERSATIONS:
            self._conversations.popitem(last=False)
        return conversation

    def reply(self, session: str, message: str, version: int | None) -> Iterator[dict]:
        """One answer as events: {version, cid, family, templated} first, then {text} pieces, then {done};
        {error} instead when it cannot answer. A new version starts a new conversation."""
        text = message.strip()
        if not text:
            yield {"error": "the message is empty"}
            return
        if len(text) > MAX_MESSAGE_CHARS:
            yield {"error": f"the message is {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}"}
            return
        try:
            loaded = self.load(version)
        except ChatError as exc:
            yield {"error": str(exc)}
            return
        entry = loaded.entry
        with self._generate_lock:
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
                    yield {"text": piece}
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # a browser that left mid-answer: the partial answer stays in the history
        yield {"done": True, "turns": conversation.turn}
