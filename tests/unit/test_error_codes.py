"""Every error a tx or query can return has one (codespace, code), and docs/protocol.md lists exactly those."""

from __future__ import annotations

import re
from pathlib import Path

from abci_app import runtime  # noqa: F401  (imports every module, so every error class exists)
from abci_app.context import ModuleError

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _error_classes() -> list[type[ModuleError]]:
    found, todo = [], [ModuleError]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if "code" in sub.__dict__:  # a concrete error, not a codespace base class
                found.append(sub)
    return found


def test_codes_are_unique_per_codespace():
    owners: dict[tuple[str, int], list[str]] = {}
    for cls in _error_classes():
        owners.setdefault((cls.codespace, cls.code), []).append(f"{cls.__module__}.{cls.__name__}")
    assert {k: v for k, v in owners.items() if len(v) > 1} == {}


def test_protocol_doc_lists_every_code_and_no_other():
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (.+?) \|$", PROTOCOL.read_text(), flags=re.M)
    documented = {(space, int(code)) for space, code, meaning in rows if not meaning.startswith("retired")}
    in_code = {(cls.codespace, cls.code) for cls in _error_classes()}
    assert sorted(in_code - documented) == [], "error codes missing from docs/protocol.md's table"
    assert sorted(documented - in_code) == [], "docs/protocol.md lists codes no error class has (mark retired codes 'retired')"
