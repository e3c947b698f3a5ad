"""The module contract in code: declared events are all a module can emit, params load one way, modules keep to
their own keys, and docs/modules.md is what the code declares."""

from __future__ import annotations

import ast
import inspect
import json
import re
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import pytest

from abci_app import docs, runtime
from abci_app.context import Context, Event, EventType, load_params, store_params
from abci_app.modules import bank, training
from abci_app.state import Store

from tests.unit.conftest import CHAIN_ID

SECTIONS = docs.sections()
MODULE_FILES = {name: Path(inspect.getfile(module)) for name, module in SECTIONS}
CONTRACT_ORDER = ["Params", "Storage", "Events", "Errors", "Calls", "Genesis", "Hooks", "Queries"]


@pytest.fixture
def empty_state(tmp_path):
    store = Store(tmp_path / "state.sqlite")
    yield store.begin_block()
    store.close()


def _all_event_classes() -> list[type[EventType]]:
    found, todo = [], [EventType]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            found.append(sub)
    return found


# --- Events -------------------------------------------------------------------------


def test_every_emit_in_consensus_code_passes_a_declared_event():
    """Statically, so no path (tested or not) can emit a bare type name."""
    bad = []
    for name, module in SECTIONS:
        tree = ast.parse(MODULE_FILES[name].read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "emit"):
                continue
            arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
            cls = None
            if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name):
                cls = getattr(module, arg.func.id, None)
            elif isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and isinstance(arg.func.value, ast.Name):
                cls = getattr(getattr(module, arg.func.value.id, None), arg.func.attr, None)
            if not (isinstance(cls, type) and issubclass(cls, EventType) and cls in docs.events(inspect.getmodule(cls))):
                bad.append(f"{MODULE_FILES[name].name}:{node.lineno}")
    assert bad == []


def test_events_are_frozen_dataclasses_with_one_type_each():
    declared = [cls for _, module in SECTIONS for cls in docs.events(module)]
    types = [cls.type for cls in declared]
    assert len(types) == len(set(types)), "two event classes share an ABCI type"
    for cls in declared:
        assert is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
        assert cls.__match_args__ == tuple(f.name for f in fields(cls)), f"{cls.__name__}: every field is an attribute, in order"
        assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.type) and cls.__doc__ and cls.__doc__.strip(), cls
    app_events = {cls for cls in _all_event_classes() if cls.__module__.startswith("abci_app.")}
    assert app_events == set(declared), "events are declared in a module's (or the runtime's) Events section"


def test_emit_sends_each_field_in_order_as_text(empty_state):
    ctx = Context(empty_state, CHAIN_ID, 1, 0)
    ctx.emit(bank.Transfer(sender="gc1a", recipient="gc1b", amount=5))
    ctx.emit(training.VerdictRevealed(round=2, submission=0, validator="gc1v", verdict="accept", steps="3,1", proven=True, proof_ok=False))
    ctx.emit(training.RoundClosed(round=2, version=""))
    assert ctx.events == [
        Event("transfer", {"sender": "gc1a", "recipient": "gc1b", "amount": "5"}),
        Event("verdict_revealed", {"round": "2", "submission": "0", "validator": "gc1v", "verdict": "accept", "steps": "3,1",
                                   "proven": "True", "proof_ok": "False"}),
        Event("round_closed", {"round": "2", "version": ""}),
    ]
    assert list(ctx.events[1].attributes) == ["round", "submission", "validator", "verdict", "steps", "proven", "proof_ok"]


def test_emit_of_every_declared_event_is_its_fields_as_text(empty_state):
    """emit reads fields through a getter made once per class (one field, or several): the same as reflection."""
    ctx = Context(empty_state, CHAIN_ID, 1, 0)
    declared = [cls for _, module in SECTIONS for cls in docs.events(module)]
    assert {len(fields(cls)) for cls in declared} >= {1, 2}, "the one-field getter is exercised"
    for cls in declared:
        event = cls(**{f.name: f"{f.name}-{i}" if i % 2 else i for i, f in enumerate(fields(cls))})
        ctx.emit(event)
        ctx.emit(event)  # the second emit of a class takes the cached getter
        expected = Event(cls.type, {f.name: str(getattr(event, f.name)) for f in fields(cls)})
        assert ctx.events[-2:] == [expected, expected], cls.__name__


def test_emit_refuses_anything_but_a_declared_event(empty_state):
    ctx = Context(empty_state, CHAIN_ID, 1, 0)
    with pytest.raises(TypeError):
        ctx.emit("transfer", sender="gc1a", recipient="gc1b", amount=5)
    with pytest.raises(TypeError):
        ctx.emit(Event("transfer", {"sender": "gc1a"}))
    assert ctx.events == []


def test_an_event_class_must_name_its_abci_type():
    with pytest.raises(TypeError, match="ABCI event type"):
        class Nameless(EventType):
            amount: int


def test_a_transfer_tx_emits_what_it_always_did(chain, keys):
    """The events a client sees (tx_search, the CLI, the workers), pinned byte for byte."""
    sender, recipient = keys[0].address, keys[1].address
    result = chain.block([chain.send_tx(keys[0], recipient, 7, fee=2)]).tx_results[0]
    assert result.code == 0
    assert [(e.type, [(a.key, a.value, a.index) for a in e.attributes]) for e in result.events] == [
        ("fee_paid", [("payer", sender, True), ("amount", "2", True)]),
        ("message", [("action", "send", True), ("module", "bank", True), ("sender", sender, True), ("nonce", "0", True)]),
        ("transfer", [("sender", sender, True), ("recipient", recipient, True), ("amount", "7", True)]),
    ]


# --- Params ---------------------------------------------------------------------------


def _changed(params):
    """The same params with every field moved off its default (not necessarily valid: loading does not validate)."""
    return replace(params, **{
        f.name: (not value) if isinstance(value, bool) else value + 1 if isinstance(value, int) else value + "x"
        for f in fields(params) for value in [getattr(params, f.name)]
    })


@pytest.mark.parametrize("name", [name for name, module in SECTIONS if hasattr(module, "PARAMS_KEY")])
def test_params_load_one_way_with_defaults_before_genesis(name, empty_state):
    module = dict(SECTIONS)[name]
    assert is_dataclass(module.Params) and module.Params.__dataclass_params__.frozen
    defaults = module.Params()  # every field has a default
    defaults.validate()
    assert load_params(empty_state, module.PARAMS_KEY, module.Params) == defaults
    changed = _changed(defaults)
    store_params(empty_state, module.PARAMS_KEY, changed)
    assert json.loads(empty_state.get(module.PARAMS_KEY)) == {f.name: getattr(changed, f.name) for f in fields(changed)}
    assert load_params(empty_state, module.PARAMS_KEY, module.Params) == changed
    if hasattr(module, "get_params"):
        assert module.get_params(empty_state) == changed


# --- Storage ------------------------------------------------------------------------------


def test_no_module_names_another_modules_keys():
    """A module reaches another's state only through its public functions: never its key constants or prefix bytes."""
    prefixes = {name: module.PREFIX for name, module in SECTIONS if hasattr(module, "PREFIX")}
    foreign = []
    for name, module in SECTIONS:
        if module is runtime:
            continue  # the runtime composes the modules (e.g. /app/params reads each PARAMS_KEY)
        for node in ast.walk(ast.parse(MODULE_FILES[name].read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in dict(SECTIONS)
                    and node.value.id != name and re.fullmatch(r"(?:[A-Z0-9_]+_)?(?:KEY|PREFIX)", node.attr)):
                foreign.append(f"{name}:{node.lineno} {node.value.id}.{node.attr}")
            if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
                foreign += [f"{name}:{node.lineno} {node.value!r}" for other, prefix in prefixes.items()
                            if other != name and node.value.startswith(prefix)]
    assert foreign == []


@pytest.mark.parametrize("name", [name for name, module in SECTIONS if module is not runtime])
def test_module_sections_follow_the_contract_order(name):
    headers = re.findall(r"^# --- (.+?) -+$", MODULE_FILES[name].read_text(), flags=re.M)
    canonical = [h for h in headers if h in CONTRACT_ORDER]
    assert canonical == sorted(canonical, key=CONTRACT_ORDER.index), headers


# --- Queries ----------------------------------------------------------------------------------


def test_every_query_documents_its_own_path():
    wrong = [f"/{name}/{query}: {fn.__doc__!r}" for name, module in SECTIONS
             for query, fn in {**getattr(module, "QUERIES", {}), **getattr(module, "VIEWS", {})}.items()
             if not re.match(rf"/{name}/{query}( |$)", docs._text(fn.__doc__))]
    assert wrong == []


# --- docs/modules.md ---------------------------------------------------------------------------


def test_modules_doc_lists_every_event_error_and_param():
    text = docs.MODULES_DOC.read_text()
    missing = []
    for name, module in SECTIONS:
        section = text.split(f"\n### {name}\n", 1)[1].split("\n### ", 1)[0] if f"\n### {name}\n" in text else ""
        for cls in docs.events(module):
            if f"| `{cls.type}` | `{cls.__name__}` | {', '.join(cls.__match_args__)} |" not in section:
                missing.append(f"{name} event {cls.type}")
        for cls in docs.errors(module):
            if f"| {cls.codespace} | {cls.code} | `{name}.{cls.__name__}` |" not in section:
                missing.append(f"{name} error {cls.__name__}")
        for f in fields(module.Params) if hasattr(module, "Params") else ():
            if f"| `{f.name}` | `{json.dumps(f.default)}` |" not in section:
                missing.append(f"{name} param {f.name}")
        for message in getattr(module, "CALLS", {}) if module is not runtime else ():
            if f"| `{message}` |" not in section:
                missing.append(f"{name} message {message}")
    assert missing == [], "run `python -m abci_app.docs`"


def test_docs_are_what_the_code_declares():
    assert docs.stale() == [], "run `python -m abci_app.docs`"


@pytest.mark.parametrize("where", ["type", "key", "value", "pair"])
def test_events_encodable_finds_a_lone_surrogate_anywhere(where):
    from abci_app.context import events_encodable

    good = [Event("transfer", {"sender": "gc1a", "amount": "5"}), Event("note", {"text": "ünïcode ✓"})]
    assert events_encodable(good) and events_encodable([])
    bad = {"type": Event("a\ud800", {}), "key": Event("a", {"\udfff": "1"}), "value": Event("a", {"k": "x\ud800"}),
           "pair": Event("a", {"k": "\ud800", "j": "\udc00"})}[where]  # two halves in two strings stay two lone halves
    assert not events_encodable(good + [bad])


@pytest.mark.parametrize("record_events", [True, False])
def test_a_message_batch_checks_its_events_even_where_events_are_not_kept(empty_state, monkeypatch, record_events):
    """gov's dry run of a proposal's messages (execute_as) refuses an event that cannot be encoded, also under
    CheckTx's context that builds no events: the mempool judges a proposal as its block will."""
    from abci_app import tx as txlib

    def bad_send(ctx, signer, msg):
        ctx.emit(bank.Transfer(sender=signer, recipient="\ud800", amount=1))

    monkeypatch.setitem(runtime.CALLS, "send", ("bank", bad_send))
    body = txlib.TxBody(chain_id=CHAIN_ID, send=txlib.MsgSend(recipient="gc1x", amount=1))
    ctx = Context(empty_state, CHAIN_ID, 1, 0, record_events=record_events)
    assert runtime.execute_as(ctx, "gc1gov", [body]) == "an event of the messages is not valid UTF-8"
    assert ctx.events == [] and empty_state.writes() == []
