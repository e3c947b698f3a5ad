"""What each explorer page shows, as plain JSON-able dicts: the HTML pages render them, /api/... serves them.

Everything is read through the project's one chain client (abci_app.client.ChainClient
over abci_app.rpc.RpcClient) and decoded by the same helpers the CLI uses
(`gradchain query tx`, `query training round`, `model lineage`, ...), so a
page and its CLI command cannot disagree. A view raises ChainError, RpcError or
CliError with one line when the node cannot answer; the server turns that into
a banner. Views never write.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import OrderedDict
from datetime import datetime

from abci_app import crypto
from abci_app.cli import training as training_cli
from abci_app.cli.common import CliError
from abci_app.cli.gov import decoded as decoded_proposal
from abci_app.cli.model import lineage
from abci_app.cli.query import decoded_tx, events_document, tx_document
from abci_app.cli.staking import consensus_address
from abci_app.client import ChainClient, ChainError
from abci_app import paging
from abci_app.models import ModelError, dataset_entry, version_entry
from abci_app.modules.training import MAX_STEPS
from abci_app.rpc import RpcError

PAGE_BLOCKS = 20  # blocks per page of /blocks, and the recent blocks home averages over
RECENT_ROUNDS = 20  # rounds listed on /rounds, and the window of the validators' verification record
RECENT_TXS = 10  # txs per account page
RECENT_SLASHES = 10
MAX_UPTIME_WINDOW = 100  # heights of signatures read for uptime; the chain's downtime_window when smaller
DECIDED = {"accepted": "accept", "not_merged": "no_gain", "rejected": "fraud"}  # a decided status -> the verdict that agrees with it
VIEW_ERRORS = (ChainError, RpcError, CliError, ModelError)
# what a node's answer of the wrong shape raises in a view: the node is at fault, so the page shows the node banner
MALFORMED_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, crypto.AddressError)
MAX_NODE_ANSWER_BYTES = 8 * 1024 * 1024  # no honest answer the explorer asks for comes near this
NODE_DEADLINE_S = 15.0  # a whole answer, however slowly it trickles in
STATUS_TTL_S = 1.0  # visitors within this share one /status (the height that keys every other cache)
MAX_CACHED_PAGES = 256  # computed pages kept for the current height


class BadRequest(Exception):
    """An argument in the URL that names nothing (not an address, not a hash, a height past the tip)."""


def parse_time(text: str) -> datetime | None:
    """CometBFT's RFC 3339 time with nanoseconds (Python parses at most microseconds)."""
    if not text:
        return None
    head, _, rest = text.partition(".")
    fraction = rest.rstrip("Z")[:6] if rest else ""
    try:
        return datetime.fromisoformat(f"{head}{'.' + fraction.ljust(6, '0') if fraction else ''}+00:00".replace("Z", ""))
    except ValueError:
        return None


def tx_hash(raw: bytes) -> str:
    """CometBFT's name for a tx: sha256 of its bytes, upper-case hex."""
    return hashlib.sha256(raw).hexdigest().upper()


class Reader:
    """One node seen through ChainClient, with caches so that visitors cost the node a bounded amount of work:
    what cannot change (commits of past heights, closed rounds, registry versions: the history only grows, so
    only the versions after the last one known are fetched) and each page computed once per height."""

    def __init__(self, node: str, ipfs: str, timeout: float = 5.0):
        self.node, self.ipfs = node, ipfs
        self.public_node: str | None = node  # what pages may show (server.create_app narrows it)
        self.public_ipfs: str | None = ipfs
        self.chain = ChainClient(node, timeout=timeout)
        self.rpc = self.chain.rpc
        self.rpc.max_bytes, self.rpc.deadline = MAX_NODE_ANSWER_BYTES, NODE_DEADLINE_S
        self._signers: OrderedDict[int, frozenset[str]] = OrderedDict()  # height -> consensus addresses that signed it
        self._closed_rounds: OrderedDict[int, dict] = OrderedDict()  # a closed round never changes again
        self._history: list[dict] = []  # registry versions 0..n-1, in id order (a version never changes)
        self._history_height = -1
        self._status: tuple[float, dict] | None = None
        self.status_ttl = STATUS_TTL_S
        self._pages: OrderedDict[tuple, tuple[int, dict]] = OrderedDict()  # (view, args) -> (height, its dict)
        self._datasets: tuple[int, dict[int, dict]] = (-1, {})  # a dataset's record can change (availability): per height
        self._lock = threading.Lock()
        self._history_lock = threading.Lock()

    def close(self) -> None:
        self.chain.close()

    # --- shared reads ------------------------------------------------------------

    def status(self) -> dict:
        with self._lock:
            if self._status is not None and time.monotonic() - self._status[0] < self.status_ttl:
                return self._status[1]
        st = self.rpc.status()
        sync = st["sync_info"]
        height = int(sync["latest_block_height"])
        if height < 0:
            raise ValueError(f"negative height {height}")
        found = {"chain_id": str(st["node_info"]["network"]), "moniker": str(st["node_info"].get("moniker", "")),
                 "height": height, "time": str(sync.get("latest_block_time", "")),
                 "app_hash": str(sync.get("latest_app_hash", "")), "catching_up": bool(sync.get("catching_up", False))}
        with self._lock:
            self._status = (time.monotonic(), found)
        return found

    def page(self, key: tuple, compute) -> dict:
        """`compute()` once per (key, node height): N visitors of a page cost the node one computation a block."""
        height = self.status()["height"]
        with self._lock:
            held = self._pages.get(key)
            if held is not None and held[0] == height:
                self._pages.move_to_end(key)
                return held[1]
        data = compute()
        with self._lock:
            self._pages[key] = (height, data)
            while len(self._pages) > MAX_CACHED_PAGES:
                self._pages.popitem(last=False)
        return data

    def history(self) -> list[dict]:
        """Every registered version, oldest first; per new height only the pages after the last known id are read."""
        height = self.status()["height"]
        with self._history_lock:
            if height != self._history_height:
                after = str(self._history[-1]["id"]) if self._history else ""
                try:
                    fresh = paging.walk(lambda data: self.chain.query("/registry/history", data), "", after)
                except ValueError as exc:
                    raise ChainError(f"query /registry/history: {exc}") from None
                for entry in fresh:
                    if not isinstance(entry, dict) or entry.get("id") != len(self._history):
                        raise ValueError(f"registry history entry {len(self._history)} came with id {str(entry.get('id') if isinstance(entry, dict) else entry)[:40]}")
                    self._history.append(entry)
                self._history_height = height
            return list(self._history)

    def version_entry(self, version_id: int | None) -> dict:
        """A registered version from the history cache (the node's answer for an id past it)."""
        history = self.history()
        if version_id is None:
            if not history:
                raise ModelError("no version is registered yet")
            return history[-1]
        if 0 <= version_id < len(history):
            return history[version_id]
        return version_entry(self.chain, version_id)

    def dataset_entry(self, dataset_id: int) -> dict:
        height = self.status()["height"]
        with self._lock:
            if self._datasets[0] != height:
                self._datasets = (height, {})
            held = self._datasets[1].get(dataset_id)
        if held is None:
            held = dataset_entry(self.chain, dataset_id)
            with self._lock:
                self._datasets[1][dataset_id] = held
        return held

    def block_metas(self, top: int, count: int = PAGE_BLOCKS) -> list[dict]:
        """Headers of blocks top-count+1..top, newest first."""
        if top < 1:
            return []
        found = self.rpc.call("blockchain", minHeight=max(1, top - count + 1), maxHeight=top)
        return [{"height": int(m["header"]["height"]), "time": m["header"]["time"], "hash": m["block_id"]["hash"],
                 "proposer": m["header"]["proposer_address"], "txs": int(m.get("num_txs", 0))} for m in found.get("block_metas") or []]

    def signers(self, height: int) -> frozenset[str]:
        """Consensus addresses whose precommit for `height` is in its commit (block_id_flag 2: voted for the block)."""
        with self._lock:
            if height in self._signers:
                return self._signers[height]
        commit = self.rpc.commit(height)["signed_header"]["commit"]
        signed = frozenset(s["validator_address"] for s in commit.get("signatures") or [] if int(s.get("block_id_flag", 0)) == 2)
        with self._lock:
            self._signers[height] = signed
            while len(self._signers) > 4 * MAX_UPTIME_WINDOW:
                self._signers.popitem(last=False)
        return signed

    def round(self, round_id: int | None) -> dict | None:
        """Round `round_id` (the current, else the last, when None) as /training/round_detail has it."""
        with self._lock:
            if round_id in self._closed_rounds:
                return self._closed_rounds[round_id]
        found, _ = training_cli.fetch_round(self.rpc, round_id)
        if found is not None and round_id is not None and found["id"] != round_id:
            raise ValueError(f"asked for round {round_id}, the node answered with round {found['id']}")
        if found is not None and found["phase"] == "closed":
            with self._lock:
                self._closed_rounds[found["id"]] = found
                while len(self._closed_rounds) > 2 * RECENT_ROUNDS:
                    self._closed_rounds.popitem(last=False)
        return found


# --- home ------------------------------------------------------------------------


def phase_progress(rnd: dict | None, height: int) -> dict | None:
    """The round's phase and the blocks left in it (at most: a phase ends early once everyone acted)."""
    if rnd is None:
        return None
    phase = rnd["phase"]
    until = rnd["submit_until"] if phase == "submit" else rnd.get(f"{phase}_until") or 0
    left = max(until - 1 - height, 0) if phase != "closed" and until else None
    return {"round": rnd["id"], "phase": phase, "ends_by": until - 1 if until else None, "blocks_left": left,
            "submissions": rnd["submissions"], "base_version": rnd["base_version"]}


def chart_series(history: list[dict]) -> dict:
    """Per version: held-out loss (nats/token) and prompt score (% correct); None where not recorded."""
    losses, scores = [], []
    for v in history:
        m = v.get("metrics") or {}
        losses.append(m["held_out_loss_micro"] / 1e6 if "held_out_loss_micro" in m else None)
        scores.append(round(100 * m["prompts_correct"] / m["prompts_total"], 2) if m.get("prompts_total") else None)
    return {"versions": [v["id"] for v in history], "held_out_loss": losses, "prompt_score": scores}


def home(r: Reader) -> dict:
    st = r.status()
    blocks = r.block_metas(st["height"])
    times = [t for t in (parse_time(b["time"]) for b in blocks) if t is not None]
    span = (times[0] - times[-1]).total_seconds() if len(times) > 1 else 0.0
    block_time = round(span / (len(times) - 1), 3) if span > 0 else None
    tx_rate = round(sum(b["txs"] for b in blocks[:-1]) / span, 3) if span > 0 else None  # the oldest block's txs precede the span
    validators = r.rpc.validators()
    rnd = r.round(None)
    history = r.history()
    return {
        **st, "block_time_s": block_time, "tx_per_s": tx_rate, "blocks_averaged": len(blocks), "recent_blocks": blocks[:8],
        "active_validators": sum(1 for v in validators if int(v["voting_power"]) > 0),
        "round": phase_progress(rnd, st["height"]), "latest_version": history[-1] if history else None,
        "chart": chart_series(history),
    }


def live(r: Reader) -> dict:
    """What the page header polls: height, time and the round's phase."""
    st = r.status()
    return {**st, "round": phase_progress(r.round(None), st["height"])}


# --- blocks and txs --------------------------------------------------------------


def blocks(r: Reader, before: int | None) -> dict:
    height = r.status()["height"]
    top = height if before is None else min(before, height)
    metas = r.block_metas(top)
    return {"height": height, "top": top, "blocks": metas, "older": metas[-1]["height"] - 1 if metas and metas[-1]["height"] > 1 else None}


def block(r: Reader, height: int) -> dict:
    tip = r.status()["height"]
    if not 1 <= height <= tip:
        raise BadRequest(f"block {height} does not exist: the chain is at height {tip}")
    found = r.rpc.call("block", height=height)
    header = found["block"]["header"]
    results = r.rpc.call("block_results", height=height)
    raws = [base64.b64decode(t) for t in found["block"]["data"].get("txs") or []]
    outcomes = results.get("txs_results") or []
    txs = []
    for i, raw in enumerate(raws):
        result = outcomes[i] if i < len(outcomes) else {}
        decoded = decoded_tx(base64.b64encode(raw).decode())
        txs.append({"hash": tx_hash(raw), "code": int(result.get("code") or 0), "log": result.get("log", ""),
                    "signer": decoded.get("signer", ""), "type": (decoded.get("message") or {}).get("type", "")})
    return {"height": height, "hash": found["block_id"]["hash"], "time": header["time"], "proposer": header["proposer_address"],
            "app_hash": header["app_hash"], "last_commit_signers": len(r.signers(height - 1)) if height > 1 else 0,
            "txs": txs, "events": events_document(results.get("finalize_block_events"))}


def tx(r: Reader, hash_text: str) -> dict:
    text = hash_text.strip().removeprefix("0x").removeprefix("0X")
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise BadRequest(f"'{hash_text[:80]}' is not a tx hash (64 hex digits)")
    try:
        return tx_document(r.rpc, text.upper())
    except CliError as exc:  # the node answered: it has no such tx
        raise BadRequest(str(exc)) from None


def _search_txs(r: Reader, query: str) -> list[dict]:
    found = r.rpc.call("tx_search", query=f'"{query}"', order_by='"desc"', per_page=RECENT_TXS)
    out = []
    for t in found.get("txs") or []:
        decoded = decoded_tx(t.get("tx", ""))
        out.append({"hash": t["hash"], "height": int(t["height"]), "code": int((t.get("tx_result") or {}).get("code") or 0),
                    "type": (decoded.get("message") or {}).get("type", ""), "signer": decoded.get("signer", ""),
                    "message": decoded.get("message") or {}})
    return out


def account(r: Reader, address_text: str) -> dict:
    try:
        address = crypto.parse_address(address_text.strip())
    except crypto.AddressError as exc:
        raise BadRequest(f"invalid address '{address_text[:80]}': {exc}") from None
    bond = r.chain.query_json("/training/trainer_bond", address) or {"bonded": 0, "locked": 0, "unbonding": 0}
    sent = _search_txs(r, f"message.sender='{address}'")
    received = _search_txs(r, f"transfer.recipient='{address}'")
    recent = sorted({t["hash"]: t for t in sent + received}.values(), key=lambda t: -t["height"])[:RECENT_TXS]
    return {"address": address, "balance": r.chain.query_int("/bank/balance", address), "nonce": r.chain.query_int("/auth/nonce", address),
            "delegations": r.chain.query_pages("/staking/delegations", address), "trainer_bond": bond, "recent_txs": recent}


# --- validators ------------------------------------------------------------------


def verification_record(r: Reader, rounds: list[dict]) -> dict[str, dict]:
    """Per operator, over `rounds`: verdicts on decided submissions that agree with the decision, and
    committee seats with no revealed verdict on a decided submission (missed)."""
    record: dict[str, dict] = {}
    for rnd in rounds:
        for sub in rnd["submission_list"]:
            agreeing = DECIDED.get(sub["status"])
            if agreeing is None:
                continue  # pending or expired: nothing to agree with
            revealed = {e["validator"]: e["verdict"] for e in sub["verdicts"]}
            for operator, _power in sub["committee"]:
                entry = record.setdefault(operator, {"verdicts": 0, "agreed": 0, "missed": 0})
                if operator not in revealed:
                    entry["missed"] += 1
                    continue
                entry["verdicts"] += 1
                entry["agreed"] += revealed[operator] == agreeing
    return record


def recent_rounds(r: Reader, count: int = RECENT_ROUNDS) -> list[dict]:
    """The newest `count` rounds, newest first."""
    current = r.round(None)
    if current is None:
        return []
    rounds = [current]
    for round_id in range(current["id"] - 1, max(current["id"] - count, -1), -1):
        found = r.round(round_id)
        if found is not None:
            rounds.append(found)
    return rounds


def recent_slashes(r: Reader) -> list[dict]:
    """The newest `slashed` events the staking module emitted in blocks (downtime, double sign, training penalties)."""
    found = r.rpc.call("block_search", query='"slashed.reason EXISTS"', order_by='"desc"', per_page=RECENT_SLASHES)
    out = []
    for b in found.get("blocks") or []:
        height = int(b["block"]["header"]["height"])
        results = r.rpc.call("block_results", height=height)
        for e in events_document(results.get("finalize_block_events")):
            if e["type"] == "slashed":
                out.append({"height": height, **e["attributes"]})
    return out[:RECENT_SLASHES]


def validators(r: Reader) -> dict:
    height = r.status()["height"]
    staked = r.chain.query_pages("/staking/validators")
    params = r.chain.query_json("/staking/params") or {}
    window = max(1, min(int(params.get("downtime_window", MAX_UPTIME_WINDOW)), MAX_UPTIME_WINDOW, height - 1)) if height > 1 else 0
    heights = list(range(height - window, height))  # the newest commits a node can serve: height's own arrives with height + 1
    signed_by = [r.signers(h) for h in heights if h >= 1]
    record = verification_record(r, recent_rounds(r))
    rows = []
    for v in staked:
        try:
            address = consensus_address(bytes.fromhex(v["pubkey"]))
        except (KeyError, TypeError, ValueError):
            address = ""
        signed = sum(1 for s in signed_by if address in s)
        verified = record.get(v["operator"], {"verdicts": 0, "agreed": 0, "missed": 0})
        rows.append({"operator": v["operator"], "moniker": v.get("moniker", ""), "tokens": int(v["tokens"]), "power": int(v.get("power", 0)),
                     "jailed_until": int(v.get("jailed_until") or 0), "consensus_address": address,
                     "uptime": {"signed": signed, "window": len(signed_by), "percent": round(100 * signed / len(signed_by), 1) if signed_by else None},
                     "verification": {**verified, "agreement_percent": round(100 * verified["agreed"] / verified["verdicts"], 1) if verified["verdicts"] else None}})
    rows.sort(key=lambda v: (-v["power"], v["operator"]))
    return {"height": height, "uptime_window": len(signed_by), "rounds_considered": RECENT_ROUNDS, "validators": rows,
            "recent_slashes": recent_slashes(r)}


# --- training rounds -------------------------------------------------------------


def rounds(r: Reader) -> dict:
    listed = recent_rounds(r)
    return {"height": r.status()["height"], "rounds": [
        {"id": x["id"], "phase": x["phase"], "open_height": x["open_height"], "base_version": x["base_version"], "submissions": x["submissions"],
         "accepted": x["accepted"], "version": x["version"]} for x in listed]}


def _outcome(sub: dict, params: dict) -> dict:
    """What a submission's decision paid or took: the reward minted (before royalties), or the bond slashed."""
    if sub["status"] == "accepted":
        return {"kind": "reward", "amount": int(params.get("reward", 0))}
    if sub["status"] == "rejected":
        return {"kind": "slash", "amount": sub["bond"] * int(params.get("slash_bps", 0)) // 10_000}
    return {"kind": "none", "amount": 0}


def training_round(r: Reader, round_id: int) -> dict:
    rnd = r.round(round_id)
    if rnd is None:
        latest = r.round(None)
        raise BadRequest(f"round {round_id} does not exist ({'the latest is round ' + str(latest['id']) if latest else 'no round has opened yet'})")
    for s in rnd["submission_list"]:  # the mix below draws each submission's steps: a lying node's 10**9 would take hours
        if not isinstance(s["steps"], int) or not 0 <= s["steps"] <= MAX_STEPS:
            raise ValueError(f"submission {s.get('id')} claims {str(s['steps'])[:20]} steps; the chain allows at most {MAX_STEPS}")
    height = r.status()["height"]
    params = training_cli.round_params(r.rpc, r.node, rnd)
    subs = []
    for s in rnd["submission_list"]:
        verdicts = [{**e, "measured_error": e["measured_error_ppm"] / 1e6} for e in s["verdicts"]]
        subs.append({k: v for k, v in s.items() if k != "verdicts"} | {"verdicts": verdicts, "outcome": _outcome(s, params)})
    return {"height": height, "round": {k: v for k, v in rnd.items() if k != "submission_list"}, "submissions": subs,
            "phases": training_cli.phase_lines(rnd, params, height), "progress": phase_progress(rnd, height),
            "merge_votes": rnd["merge_votes"], "datasets": training_cli.mix_rows(r.rpc, rnd)}


# --- model versions, datasets ----------------------------------------------------


def pull_command(entry: dict, node: str | None, ipfs: str | None) -> str:
    """The CLI line that pulls `entry`; the URLs only where the explorer may show them (server.public_url)."""
    return f"gradchain model pull --version {entry['id']}" + (f" --node {node}" if node else "") + (f" --ipfs {ipfs}" if ipfs else "")


def versions(r: Reader) -> dict:
    history = r.history()
    return {"versions": [v | {"pull_command": pull_command(v, r.public_node, r.public_ipfs)} for v in history], "chart": chart_series(history)}


def version(r: Reader, version_id: int) -> dict:
    try:
        entry = r.version_entry(version_id)
    except ModelError as exc:
        raise BadRequest(str(exc)) from None
    # versions never change: the ancestors come from the history cache, not one node query each
    doc = lineage(r.chain, version_id, entry_of=r.version_entry, dataset_of=r.dataset_entry)
    return {"version": entry, "pull_command": pull_command(entry, r.public_node, r.public_ipfs), "lineage": doc}


def datasets(r: Reader) -> dict:
    return {"datasets": r.chain.query_pages("/datasets/list")}


# --- governance ------------------------------------------------------------------


def proposals(r: Reader) -> dict:
    return {"proposals": r.chain.query_pages("/gov/proposals")}


def proposal(r: Reader, proposal_id: int) -> dict:
    found = r.chain.query_json("/gov/proposal", str(proposal_id))
    if not isinstance(found, dict):
        raise BadRequest(f"no proposal {proposal_id}")
    return {"proposal": decoded_proposal(found), "tally": r.chain.query_json("/gov/tally", str(proposal_id))}


def params(r: Reader) -> dict:
    return {"params": r.chain.query_json("/app/params") or {}}
