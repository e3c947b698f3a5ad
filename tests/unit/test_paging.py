"""Every list view that grows with user actions answers one bounded page (abci_app.paging): walking the pages
lists every entry exactly once, in the view's order, and one page reads a bounded part of state however large
the collection (review 14c F3: each Query runs on the ABCI server's one thread, between blocks)."""

from __future__ import annotations

import hashlib
import json

import pytest

from abci_app import paging, runtime, tx
from abci_app.context import encode_json
from abci_app.modules import gov, training
from abci_app.state import overlay
from tests.unit.conftest import Chain, fixed_key, overlay_levels
from tests.unit.test_gov import GOV_PARAMS, SUBMIT_FEE, body, params_msg
from tests.unit.test_registry import CID_A, CID_B, CONFIG
from tests.unit.test_staking import PARAMS as STAKING_PARAMS, cons_key

N = 30  # entries of each collection: ten pages of PAGE
PAGE = 3
BOND = 1_000


def sha(i: int, kind: str) -> str:
    return hashlib.sha256(f"{kind}{i}".encode()).hexdigest()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """N datasets and N versions (genesis), N validators, one delegator bonded to each and unbonding from each, and
    N proposals: the odd ones voting (every validator voted on proposal 1), the even ones waiting for deposits."""
    vals = [fixed_key(100 + i) for i in range(N)]
    alice, dan = fixed_key(1), fixed_key(2)
    chain = Chain(
        tmp_path_factory.mktemp("paging") / "app", {k.address: 10**9 for k in (*vals, alice, dan)},
        staking={"params": STAKING_PARAMS | {"unbonding_blocks": 50, "max_validators": N},
                 "validators": [{"operator": v.address, "pubkey": cons_key(i + 1).hex(), "moniker": f"v{i}", "self_bond": BOND}
                                for i, v in enumerate(vals)]},
        gov={"params": GOV_PARAMS | {"deposit_blocks": 40, "voting_blocks": 40}},
        datasets={"datasets": [{"name": f"d{i}", "cid": CID_A, "sha256": sha(i, "dataset"), "licence": "CC0", "bytes": 1,
                                "tokens": 1, "tokenizer": "bytes", "weight": 1 if i < 2 else 0} for i in range(N)]},
        registry={"versions": [{"parent": i - 1 if i else None, "cid": CID_B, "sha256": sha(i, "version"), "bytes": 1,
                                "family": "tiny-gpt", "config": CONFIG, "dataset_ids": [0], "licence": "MIT"} for i in range(N)]},
    )
    nonce = chain.nonce(dan.address)
    ok(chain, [chain.tx(dan, tx.MsgDelegate(validator=v.address, amount=10), nonce=nonce + i) for i, v in enumerate(vals)])
    nonce = chain.nonce(dan.address)
    ok(chain, [chain.tx(dan, tx.MsgUndelegate(validator=v.address, amount=5), nonce=nonce + i) for i, v in enumerate(vals)])
    base = training.get_params(chain.app.store.begin_block())
    nonce = chain.nonce(alice.address)
    ok(chain, [chain.tx(alice, tx.MsgSubmitProposal(
        messages=[body(params_msg("training", base=base, steps=32, audit_steps=8))], title=f"p{i}", summary="why",
        initial_deposit=GOV_PARAMS["min_deposit"] if i % 2 else GOV_PARAMS["min_deposit"] // 4), fee=SUBMIT_FEE, nonce=nonce + i - 1)
        for i in range(1, N + 1)])
    ok(chain, [chain.tx(v, tx.MsgVote(proposal=1, option=gov.YES)) for v in vals])
    chain.vals, chain.dan = vals, dan
    yield chain
    chain.app.close()


def ok(chain, txs):
    response = chain.block(txs)
    assert [r.log for r in response.tx_results if r.code] == []


def by_address(addresses):
    return sorted(addresses, key=tx.crypto.address_raw)


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(paging, "MAX_ENTRIES", PAGE)


@pytest.fixture
def reads(monkeypatch):
    """Counts every state read: a get, and each entry a prefix iteration yields."""
    counter = {"reads": 0}
    get, iter_prefix = overlay.Overlay.get, overlay.Overlay.iter_prefix

    def counted_get(self, key):
        counter["reads"] += overlay_levels(self, key)
        return get(self, key)

    def counted_iter(self, prefix, after=b""):
        for item in iter_prefix(self, prefix, after):
            counter["reads"] += 1
            yield item

    monkeypatch.setattr(overlay.Overlay, "get", counted_get)
    monkeypatch.setattr(overlay.Overlay, "iter_prefix", counted_iter)
    return counter


def page(net, path, data=""):
    result = net.query(path, data)
    assert result.code == 0, result.log
    return json.loads(result.value)


# What each view lists, in its order: (path, argument, key of an entry, the keys expected, state reads per record)
def cases(net):
    vals = by_address(v.address for v in net.vals)
    return {
        "datasets": ("/datasets/list", "", "id", list(range(N)), 3),  # record, weight, earnings
        "history": ("/registry/history", "", "id", list(range(N)), 1),
        "proposals": ("/gov/proposals", "", "id", list(range(N, 0, -1)), 1),
        "voting": ("/gov/proposals", gov.VOTING_PERIOD, "id", list(range(N - 1, 0, -2)), 1),
        "votes": ("/gov/votes", "1", "voter", vals, 1),
        "validators": ("/staking/validators", "", "operator", vals, 1),
        "delegations": ("/staking/delegations", net.dan.address, "validator", vals, 3),  # index key, validator, delegation
        "unbondings": ("/staking/unbondings", net.dan.address, "validator", [v.address for v in net.vals], 2),  # record, pool
    }


VIEWS = ["datasets", "history", "proposals", "voting", "votes", "validators", "delegations", "unbondings"]


@pytest.mark.parametrize("view", VIEWS)
def test_walking_the_pages_lists_every_entry_once_in_order(net, small_pages, view):
    path, arg, key, expected, _ = cases(net)[view]
    first = page(net, path, arg)
    assert len(first["entries"]) == PAGE and first["next"] is not None  # more than one page
    assert [e[key] for e in net.pages(path, arg)] == expected


@pytest.mark.parametrize("view", VIEWS)
def test_one_page_reads_a_bounded_part_of_state(net, reads, small_pages, view):
    """A page in the middle reads a few records per entry it lists (the one past the page included), never the
    N records of the collection: the views start reading at their cursor."""
    path, arg, _, _, per_record = cases(net)[view]
    cursor = page(net, path, arg)["next"]
    cursor = page(net, path, f"{arg}/{cursor}")["next"]
    reads["reads"] = 0
    listed = page(net, path, f"{arg}/{cursor}")
    assert len(listed["entries"]) == PAGE
    scanned = 2 * (PAGE + 1) if view == "voting" else PAGE + 1  # the one past the page; the filter skips every other
    assert reads["reads"] <= per_record * scanned + 3, reads  # + params, a count, a proposal's own record


def test_a_filtered_page_stops_at_its_scan_budget_and_the_walk_goes_on(net, monkeypatch):
    """A status that matches nothing in a page's scan answers an empty page that still names the next one."""
    monkeypatch.setattr(paging, "MAX_SCANNED", 4)
    monkeypatch.setattr(paging, "MAX_ENTRIES", 1)
    first = page(net, "/gov/proposals", gov.DEPOSIT_PERIOD)
    assert [p["id"] for p in first["entries"]] == [N] and first["next"] == str(N)
    assert page(net, "/gov/proposals", f"{gov.REJECTED}/{N}") == {"entries": [], "next": str(N - 4)}
    assert [p["id"] for p in net.pages("/gov/proposals", gov.DEPOSIT_PERIOD)] == list(range(N, 0, -2))
    assert net.pages("/gov/proposals", gov.REJECTED) == []


def test_a_page_is_bounded_in_bytes(net, monkeypatch):
    """Versions are large (up to 256 contributions each): a page ends once its answer passes MAX_ANSWER_BYTES."""
    one = len(encode_json(page(net, "/registry/history")["entries"][0]))
    monkeypatch.setattr(paging, "MAX_ANSWER_BYTES", one + 1)  # passed by the second entry
    assert len(page(net, "/registry/history")["entries"]) == 2
    assert [v["id"] for v in net.pages("/registry/history")] == list(range(N))


def test_proposals_are_listed_without_summary_and_messages(net):
    (listed,) = page(net, "/gov/proposals", f"/{2}")["entries"]
    assert listed["id"] == 1 and listed["messages"] == 1 and "summary" not in listed


@pytest.mark.parametrize("path, data", [
    ("/datasets/list", "x"), ("/datasets/list", "/x"), ("/registry/history", "/-1"), ("/gov/proposals", "nonsense/"),
    ("/gov/proposals", "/x"), ("/staking/validators", "/gc1nonsense"), ("/staking/delegations", "gc1x/"),
    ("/staking/delegations", f"{fixed_key(2).address}/gc1x"), ("/staking/unbondings", "/zz"), ("/gov/votes", "1/x"),
    ("/datasets/list", "/\u00e9"),
])
def test_a_bad_cursor_is_a_bad_query(net, path, data):
    assert net.query(path, data).code == runtime.BadQuery.code


def test_walk_refuses_an_answer_that_is_not_a_page_or_does_not_move_on():
    with pytest.raises(ValueError, match="expected a page"):
        paging.walk(lambda data: b"[1, 2]")
    with pytest.raises(ValueError, match="does not page on"):
        paging.walk(lambda data: b'{"entries": [1], "next": "7"}')
    answers = {"x": b'{"entries":[1],"next":"a"}', "x/a": b'{"entries":[2,3],"next":null}'}
    assert paging.walk(answers.__getitem__, "x") == [1, 2, 3]


def test_walk_refuses_a_node_whose_cursors_cycle():
    """Review 14d F4: a node answering `next` a, b, a, ... would make every CLI list command loop for ever, its list
    growing; the walk stops at the first cursor it has already fetched, after one pass over the cycle."""
    calls = []

    def fetch(data):
        calls.append(data)
        assert len(calls) <= 3, "still walking"
        return json.dumps({"entries": [len(calls)], "next": "b" if data in ("", "/a") else "a"}).encode()
    with pytest.raises(ValueError, match="after 'a' names 'b' as the next, a page already walked"):
        paging.walk(fetch)
    assert calls == ["", "/b", "/a"]
    with pytest.raises(ValueError, match="already walked"):  # back to where the walk started from
        paging.walk(lambda data: b'{"entries": [], "next": "s"}' if data == "/t" else b'{"entries": [], "next": "t"}', after="s")
