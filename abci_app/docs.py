"""The parts of the docs that the code declares, generated from it so they cannot drift.

docs/modules.md's module reference (storage keys, params, messages, events,
errors, queries, hooks of each module) and docs/protocol.md's result-code
table are written between `<!-- generated: NAME -->` and
`<!-- end generated: NAME -->` markers. Edit the code (a docstring, a field
comment), then run `python -m abci_app.docs`; `--check` only reports stale
docs (tests/unit/test_module_contract.py runs it).
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from types import ModuleType

from abci_app import runtime
from abci_app.context import EventType, ModuleError

DOCS = Path(__file__).resolve().parents[1] / "docs"
MODULES_DOC = DOCS / "modules.md"
PROTOCOL_DOC = DOCS / "protocol.md"

_STORAGE_NAME = re.compile(r"^(?:[A-Z0-9_]+_)?(?:KEY|PREFIX)$")


def sections() -> list[tuple[str, ModuleType]]:
    """(name, module) of everything with a contract: the runtime first, then the modules in MODULES order."""
    return [("runtime", runtime), *runtime.MODULES.items()]


# --- reading the code -------------------------------------------------------------


def _text(doc: str | None) -> str:
    """A docstring's first paragraph on one line, safe inside a Markdown table cell."""
    first = inspect.cleandoc(doc or "").split("\n\n")[0]
    return " ".join(first.split()).replace("|", "\\|")


def _declared_in(module: ModuleType, base: type) -> list[type]:
    """Subclasses of `base` defined in `module`, in the order the file declares them."""
    return [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, base) and v.__module__ == module.__name__]


def events(module: ModuleType) -> list[type[EventType]]:
    return [cls for cls in _declared_in(module, EventType) if cls is not EventType]


def errors(module: ModuleType) -> list[type[ModuleError]]:
    """Concrete errors (with a code of their own), not codespace base classes."""
    return [cls for cls in _declared_in(module, ModuleError) if "code" in cls.__dict__]


def all_errors() -> list[type[ModuleError]]:
    """Every concrete ModuleError subclass in the program, wherever it is declared."""
    found, todo = [], [ModuleError]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if "code" in sub.__dict__:
                found.append(sub)
    return found


def retired_codes() -> dict[tuple[str, int], str]:
    """(codespace, code) -> what it was, from each module's RETIRED_CODES (its own codespace)."""
    return {(name, code): note for name, module in sections() for code, note in getattr(module, "RETIRED_CODES", {}).items()}


def codespaces() -> list[str]:
    """Codespaces in table order: the runtime's first, then the modules' in MODULES order."""
    used = {cls.codespace for cls in all_errors()}
    return [name for name, _ in sections() if name in used]


def _comments(source_lines: list[str], node: ast.stmt) -> str:
    """The comment that documents a statement: trailing on its last line, else the comment lines just above it."""
    tail = source_lines[node.end_lineno - 1][node.end_col_offset :].strip()
    if tail.startswith("#"):
        return tail[1:].strip()
    above = []
    for line in reversed(source_lines[: node.lineno - 1]):
        stripped = line.strip()
        if not stripped.startswith("#") or stripped.startswith("# ---"):
            break
        above.insert(0, stripped[1:].strip())
    return " ".join(above)


def storage(module: ModuleType) -> list[tuple[str, str]]:
    """(key layout, what it holds) for each storage constant (NAME_KEY, NAME_PREFIX) and documented key builder."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    rows = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            value = getattr(module, name, None)
            if name == "PREFIX" or not _STORAGE_NAME.match(name) or not isinstance(value, bytes):
                continue
            comment = _comments(lines, node)
            # "<id 8 BE> -> Dataset JSON": the rest of the key, then what it holds
            layout, _, holds = comment.partition(" -> ") if comment.startswith("<") else ("", "", comment)
            rows.append((value.decode() + layout, holds))
        elif isinstance(node, ast.FunctionDef) and node.name.endswith("_key"):
            doc = _text(ast.get_docstring(node))
            prefix = getattr(module, "PREFIX", b"").decode()
            if prefix and doc.startswith(prefix) and " -> " in doc:
                key, _, holds = doc.partition(" -> ")
                rows.append((key, holds.rstrip(".")))
    return rows


def params(module: ModuleType) -> list[tuple[str, str, str]]:
    """(name, default as JSON, comment) of each field of the module's Params."""
    cls = getattr(module, "Params", None)
    if cls is None:
        return []
    source = inspect.getsource(cls)
    lines = source.splitlines()
    comments = {
        node.target.id: _comments(lines, node)
        for node in ast.parse(source).body[0].body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    return [(f.name, json.dumps(f.default), comments.get(f.name, "")) for f in fields(cls) if f.default is not MISSING]


# --- writing Markdown -------------------------------------------------------------


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows)]


def _error_row(cls: type[ModuleError]) -> tuple[str, ...]:
    return (cls.codespace, str(cls.code), f"`{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}`", _text(cls.__doc__))


def error_table() -> list[str]:
    """Every result code, by codespace then code; retired codes stay listed so nobody reuses them."""
    order = {name: i for i, name in enumerate(codespaces())}
    rows = [(_error_row(cls), (cls.codespace, cls.code)) for cls in all_errors()]
    rows += [((space, str(code), "", f"retired (was: {note})"), (space, code)) for (space, code), note in retired_codes().items()]
    return _table(("codespace", "code", "error", "meaning"), [row for row, (space, code) in sorted(rows, key=lambda r: (order[r[1][0]], r[1][1]))])


def module_section(name: str, module: ModuleType) -> list[str]:
    out = [f"### {name}", "", _text(module.__doc__), ""]
    rows = storage(module)
    if rows:
        prefix = getattr(module, "PREFIX", None)
        out += ["**Storage**" + (f" (every key under `{prefix.decode()}`)" if prefix else ""), ""]
        out += _table(("key", "holds"), [(f"`{key}`", holds.replace("|", "\\|")) for key, holds in rows]) + [""]
    rows = params(module)
    if rows:
        out += [f"**Params** (`Params`; genesis `{name}.params`, query `/{name}/params`)", ""]
        out += _table(("param", "default", "meaning"), [(f"`{p}`", f"`{d}`", c.replace("|", "\\|")) for p, d, c in rows]) + [""]
    calls = {} if module is runtime else getattr(module, "CALLS", {})  # runtime.CALLS is every module's, composed
    if calls:
        out += ["**Messages** (`CALLS`: TxBody field -> call)", ""]
        out += _table(("message", "call", "does"), [(f"`{msg}`", f"`{name}.{call.__name__}`", _text(call.__doc__)) for msg, call in calls.items()]) + [""]
    declared = events(module)
    if declared:
        out += ["**Events**", ""]
        out += _table(("event", "class", "attributes", "meaning"), [
            (f"`{cls.type}`", f"`{cls.__name__}`", ", ".join(cls.__match_args__), _text(cls.__doc__)) for cls in declared
        ]) + [""]
    codes = errors(module)
    retired = {code: note for (space, code), note in retired_codes().items() if space == name}
    if codes or retired:
        out += ["**Errors**", ""]
        rows = [_error_row(cls) for cls in codes] + [(name, str(code), "", f"retired (was: {note})") for code, note in retired.items()]
        out += _table(("codespace", "code", "error", "meaning"), sorted(rows, key=lambda r: (r[0] != name, r[0], int(r[1])))) + [""]
    queries = [(q, "provable", fn) for q, fn in getattr(module, "QUERIES", {}).items()]
    queries += [(q, "view", fn) for q, fn in getattr(module, "VIEWS", {}).items()]
    if queries:
        out += ["**Queries**", ""]
        out += _table(("query", "kind", "answers"), [
            (f"`{_text(fn.__doc__).partition(' -> ')[0]}`", kind, _text(fn.__doc__).partition(" -> ")[2]) for _, kind, fn in queries
        ]) + [""]
    hooks = [(hook, getattr(module, hook)) for hook in ("genesis", "begin_block", "end_block") if hasattr(module, hook)]
    if hooks and module is not runtime:
        out += ["**Genesis and hooks**", ""]
        out += [f"- `{hook}`: {_text(fn.__doc__) or '(undocumented)'}" for hook, fn in hooks] + [""]
    return out


def module_reference() -> list[str]:
    out = []
    for name, module in sections():
        out += module_section(name, module)
    return out[:-1]


# --- the generated regions ----------------------------------------------------------

REGIONS = {PROTOCOL_DOC: {"errors": error_table}, MODULES_DOC: {"modules": module_reference}}


def render(text: str, regions: dict) -> str:
    """`text` with each region's lines replaced by what the code says now."""
    for name, build in regions.items():
        start, end = f"<!-- generated: {name} -->", f"<!-- end generated: {name} -->"
        head, found, rest = text.partition(start + "\n")
        body, found_end, tail = rest.partition(end)
        if not found or not found_end:
            raise ValueError(f"missing the markers {start} ... {end}")
        text = head + start + "\n" + "\n".join(build()) + "\n" + end + tail
    return text


def stale() -> list[Path]:
    """The docs whose generated regions differ from the code."""
    return [path for path, regions in REGIONS.items() if render(path.read_text(), regions) != path.read_text()]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        for path in stale():
            print(f"{path} is stale: run `python -m abci_app.docs`", file=sys.stderr)
        return 1 if stale() else 0
    for path, regions in REGIONS.items():
        path.write_text(render(path.read_text(), regions))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
