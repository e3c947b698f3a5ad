"""The venv runs exactly the consensus dependencies that scripts/consensus.lock pins (issue 11, "pinned consensus").

The supported interpreter range is checked in test_safety_runtime."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[2] / "scripts" / "consensus.lock"


def _pins() -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), flags=re.M))


def test_lock_pins_every_state_dependency_with_hashes():
    pins = _pins()
    for name in ("protobuf", "trie", "rlp", "eth-hash", "pycryptodome", "cryptography", "pynacl"):
        assert name in pins, f"{name} changes state or the app hash and must be locked"
    entries = re.split(r"^(?=[A-Za-z])", LOCK.read_text(), flags=re.M)
    for entry in entries:
        if "==" in entry:
            assert "--hash=sha256:" in entry, f"no hash for {entry.split()[0]}"


def test_installed_versions_equal_the_lock():
    wrong = {name: (pinned, metadata.version(name)) for name, pinned in _pins().items() if metadata.version(name) != pinned}
    assert not wrong, f"installed consensus dependencies differ from scripts/consensus.lock (name: (locked, installed)): {wrong}"

