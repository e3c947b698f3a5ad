"""Every error a tx or query can return has one (codespace, code), and docs/protocol.md's table is generated from the classes."""

from __future__ import annotations

import re

from abci_app import docs


def test_codes_are_unique_per_codespace():
    owners: dict[tuple[str, int], list[str]] = {}
    for cls in docs.all_errors():
        owners.setdefault((cls.codespace, cls.code), []).append(f"{cls.__module__}.{cls.__name__}")
    assert {k: v for k, v in owners.items() if len(v) > 1} == {}


def test_retired_codes_are_never_reused():
    in_use = {(cls.codespace, cls.code): cls.__name__ for cls in docs.all_errors()}
    assert {key: in_use[key] for key in docs.retired_codes() if key in in_use} == {}


def test_errors_live_in_a_module_or_the_runtime_under_its_codespace_or_the_runtimes():
    homes = {module.__name__: name for name, module in docs.sections()}
    misplaced = [
        f"{cls.__module__}.{cls.__name__} ({cls.codespace} {cls.code})"
        for cls in docs.all_errors()
        if cls.__module__ not in homes or cls.codespace not in (homes[cls.__module__], "runtime")
        or not isinstance(cls.code, int) or cls.code <= 0 or not (cls.__doc__ or "").strip()
    ]
    assert misplaced == [], "an error needs a positive code, a docstring, and its module's codespace (or the runtime's)"


def test_protocol_doc_lists_every_code_once_and_no_other():
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (.*?) \| (.+?) \|$", docs.PROTOCOL_DOC.read_text(), flags=re.M)
    documented = [(space, int(code)) for space, code, _, meaning in rows if not meaning.startswith("retired")]
    in_code = {(cls.codespace, cls.code) for cls in docs.all_errors()}
    assert sorted(documented) == sorted(in_code), "run `python -m abci_app.docs` to regenerate docs/protocol.md's result codes"
    retired = {(space, int(code)) for space, code, _, meaning in rows if meaning.startswith("retired")}
    assert retired == set(docs.retired_codes())


def test_protocol_doc_table_is_generated_from_the_classes():
    text = docs.PROTOCOL_DOC.read_text()
    assert docs.render(text, {"errors": docs.error_table}) == text, "run `python -m abci_app.docs`: the error classes changed"
